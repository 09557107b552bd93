"""The probe that vlcalc runs on each node, as source to send, and a way to run it here.

``probe.py`` beside this file is self-contained (standard library, Python 3.6 syntax): vlcalc
sends :func:`probe_source` as stdin to ``python3 - [--try SPEC]...`` on a node and reads back one
JSON line, a ``vlcalc.probe/1`` document.  Nothing here imports ``probe.py``: it is data to vlcalc.

Example::

    text = run_local(["128,256"])   # on this machine, as vlcalc does on a node
    json.loads(text)["schema"]      # -> "vlcalc.probe/1"
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

from vlcalc.errors import NodeError
from vlcalc.model import PROBE_SCHEMA

PROBE_PATH = Path(__file__).with_name("probe.py")
SCHEMA_TAG = PROBE_SCHEMA
LOCAL_NODE = "localhost"


@functools.cache
def probe_source() -> bytes:
    """The probe's source, read once: what vlcalc writes to ``python3 -`` on a node."""
    return PROBE_PATH.read_bytes()


def probe_args(tries: list[str]) -> list[str]:
    """The probe's arguments for acceptance trials: ``["128", ""]`` ->
    ``["--try", "128", "--try", ""]`` (``""`` is the empty set)."""
    args: list[str] = []
    for spec in tries:
        args += ["--try", spec]
    return args


def run_local(tries: list[str], *, timeout_s: float = 60.0) -> str:
    """Run the probe on this machine, as on a node (source on stdin to ``python3 -``), and return
    the document text (one JSON line ending in a newline).

    It needs read-write access to ``/dev/kvm`` for an answer, nothing more; without it the document
    carries the error (``no-kvm``, ``permission-denied``, ``not-arm64``).  Raises
    :class:`NodeError` (``timeout`` or ``probe-failed``) only when no document came back.
    Example: ``run_local([])`` on x86 -> ``'{"schema":"vlcalc.probe/1",...,"error":{"kind":
    "not-arm64",...}}\\n'``.
    """
    command = [sys.executable, "-", *probe_args(tries)]
    try:
        done = subprocess.run(
            command, input=probe_source(), capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise NodeError(
            "timeout",
            f"the probe did not finish within {timeout_s:g} s; check /dev/kvm on this machine",
            node=LOCAL_NODE,
        ) from exc
    except OSError as exc:
        raise NodeError(
            "probe-failed", f"cannot run {sys.executable}: {exc}", node=LOCAL_NODE
        ) from exc
    text = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0 or not text.strip():
        tail = done.stderr.decode("utf-8", "replace").strip()[-500:]
        raise NodeError(
            "probe-failed",
            f"the probe exited with status {done.returncode} without a document: {tail}; "
            "this is a bug in the vlcalc probe, report it",
            node=LOCAL_NODE,
        )
    return text
