"""``python -m vlcalc``."""

from vlcalc.cli import main

main()
