"""``python -m vlcalc.lab``: see :func:`vlcalc.lab.cli.main`."""

import sys

from vlcalc.lab.cli import main

sys.exit(main(sys.argv[1:]))
