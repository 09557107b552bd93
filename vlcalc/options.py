"""Checks of the scan options that typer cannot express, made before any node is contacted.

A bad option is the user's input error (exit 2, one line), not an ``internal`` failure repeated on
every node: ``--timeout nan`` passes typer's ``min=1.0`` (every comparison with NaN is false),
``--timeout 1e300`` overflows the socket timeout, ``--known-hosts DIR`` fails on each node, and
``--ssh-config /nonexistent`` was silently ignored.  The only I/O is ``os.stat``.
"""

from __future__ import annotations

import math
import os
import stat

from vlcalc.errors import InputError

__all__ = ["MAX_TIMEOUT_S", "check_scan_options", "check_seconds"]

MAX_TIMEOUT_S = 86_400.0
"""The longest ``--timeout``/``--connect-timeout``: one day is generous for one node, and far
below what ``socket.settimeout`` and ``threading`` accept."""


def check_seconds(value: float, option: str) -> float:
    """``value`` if it is a finite number of seconds up to :data:`MAX_TIMEOUT_S`.

    Example: ``check_seconds(60.0, "--timeout")`` is ``60.0``; ``check_seconds(math.inf,
    "--timeout")`` raises ``InputError("--timeout: inf is not a number of seconds ...")``.
    """
    if not math.isfinite(value) or value <= 0:
        raise InputError(
            f"{value!r} is not a number of seconds; give a positive finite number such as 60",
            source=option,
        )
    if value > MAX_TIMEOUT_S:
        raise InputError(
            f"{value:g} seconds is more than the {MAX_TIMEOUT_S:,.0f} (one day) vlcalc accepts",
            source=option,
        )
    return value


def check_scan_options(
    *,
    timeout: float,
    connect_timeout: float,
    ssh_config: str | None,
    known_hosts: str | None,
) -> None:
    """Raise :class:`InputError` for the first scan option that cannot work; return if all can.

    ``ssh_config`` must be a readable regular file (or ``/dev/null``, OpenSSH's ``ssh -F
    /dev/null`` idiom for "no configuration").  ``known_hosts`` may be missing (``--accept-new``
    creates it) but then its directory must exist; if it exists it must be a regular file (or
    ``/dev/null``).  Example: ``check_scan_options(timeout=60, connect_timeout=10,
    ssh_config="/nonexistent", known_hosts=None)`` raises ``InputError("--ssh-config:
    /nonexistent: no such file")``.
    """
    check_seconds(timeout, "--timeout")
    check_seconds(connect_timeout, "--connect-timeout")
    if ssh_config is not None:
        _check_file(ssh_config, "--ssh-config", may_be_missing=False)
    if known_hosts is not None:
        _check_file(known_hosts, "--known-hosts", may_be_missing=True)


def _check_file(path: str, option: str, *, may_be_missing: bool) -> None:
    def refuse(problem: str) -> InputError:
        return InputError(f"{path}: {problem}", source=option)

    if not path:
        raise InputError("an empty path", source=option)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not may_be_missing:
            raise refuse("no such file") from None
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            raise refuse(f"no such file, and no directory {parent!r} to create it in") from None
        return
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        raise refuse("is a directory, not a file")
    if not stat.S_ISREG(mode) and os.path.realpath(path) != os.devnull:
        # A FIFO or a device would block or never end when read.
        raise refuse("not a regular file")
    if not os.access(path, os.R_OK):
        raise refuse("permission denied")
