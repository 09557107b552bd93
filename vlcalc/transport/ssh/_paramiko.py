"""The one place that relies on paramiko beyond its public API, each reliance small and pinned
by a test (``tests/test_transport_ssh.py``, "paramiko adapter") that fails loudly when a new
paramiko changes it.

* ``import paramiko`` without ``invoke``: ``paramiko.config`` imports ``invoke`` (when installed)
  at import time only to run ``Match exec`` lines.  That import pulls in asyncio, unittest.mock
  and a vendored YAML: ~55 ms of CPU at every start (measured: ``import paramiko`` 160 -> 105 ms).
  paramiko has no switch for it, so ``invoke`` is hidden while paramiko loads, and handed to
  ``paramiko.config`` (its module globals ``invoke``/``invoke_import_error``) when a config has a
  ``Match exec`` line: :func:`enable_match_exec`.
* :func:`config_entries` / :func:`config_from_entries`: ``SSHConfig`` keeps its parsed blocks in
  ``_config`` (a list of dicts with ``host``/``matches``/``config``) and has no public accessor;
  the host index in ``config.py`` needs them.  When the attribute is missing or shaped
  differently these return ``None`` and the index steps aside (plain, slower lookups).
* :func:`wait_exit_status`: ``Channel.recv_exit_status`` waits forever; its ``status_event``
  (an attribute without a leading underscore, but undocumented) lets the wait end at a deadline.
  Without it, the public ``exit_status_ready`` is polled.

Example: ``config_entries(paramiko.SSHConfig.from_text("Host a\\n  Port 2\\n"))`` ->
``[{"host": ["*"], "config": {}}, {"host": ["a"], "config": {"port": "2"}}]`` (paramiko 3-5).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

_BLOCK_INVOKE = "invoke" not in sys.modules
if _BLOCK_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
try:
    import paramiko
    import paramiko.config
finally:
    if _BLOCK_INVOKE:
        del sys.modules["invoke"]

#: paramiko logs every failed handshake at ERROR with a traceback from its own thread; with no
#: handler configured that reaches stderr through logging's last resort.  The failure is reported
#: as a NodeError instead, so paramiko's records go to this logger, silent unless configured.
PARAMIKO_LOGGER = "vlcalc.transport.ssh.paramiko"
logging.getLogger(PARAMIKO_LOGGER).addHandler(logging.NullHandler())


def enable_match_exec() -> None:
    """Give ``paramiko.config`` the ``invoke`` module that was kept out of its import."""
    if getattr(paramiko.config, "invoke", None) is not None:
        return
    try:
        import invoke
    except ImportError as exc:  # paramiko then raises this when it evaluates ``Match exec``
        paramiko.config.invoke_import_error = exc
    else:
        paramiko.config.invoke = invoke  # type: ignore[attr-defined]


def config_entries(config: paramiko.SSHConfig) -> list[dict[str, Any]] | None:
    """The parsed blocks of ``config`` in file order, or ``None`` if this paramiko keeps them
    some other way."""
    entries = vars(config).get("_config")
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("config"), dict) for entry in entries
    ):
        return None
    return entries


def config_from_entries(entries: list[dict[str, Any]]) -> paramiko.SSHConfig:
    """An ``SSHConfig`` that holds exactly ``entries`` (from :func:`config_entries`)."""
    config = paramiko.SSHConfig()
    vars(config)["_config"] = entries
    return config


def has_match_exec(config: paramiko.SSHConfig) -> bool:
    """Whether a ``Match exec`` line is in ``config`` (``True`` when that cannot be told)."""
    entries = config_entries(config)
    if entries is None:
        return True
    return any(
        isinstance(match, dict) and match.get("type") == "exec"
        for entry in entries
        for match in entry.get("matches", ())
    )


def wait_exit_status(channel: paramiko.Channel, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the channel's exit status; whether it came."""
    event = getattr(channel, "status_event", None)
    if isinstance(event, threading.Event):
        return event.wait(max(0.0, timeout_s))
    deadline = time.monotonic() + timeout_s  # pragma: no cover - an older/newer paramiko
    while not channel.exit_status_ready():  # pragma: no cover
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True  # pragma: no cover


__all__ = [
    "PARAMIKO_LOGGER",
    "config_entries",
    "config_from_entries",
    "enable_match_exec",
    "has_match_exec",
    "paramiko",
    "wait_exit_status",
]
