"""The one place that relies on paramiko beyond its public API, each reliance small and pinned
by a test (``tests/test_transport_ssh.py``, "paramiko adapter") that fails loudly when a new
paramiko changes it.

* ``import paramiko`` without ``invoke``: ``paramiko.config`` imports ``invoke`` (when installed)
  at import time only to run ``Match exec`` lines.  That import pulls in asyncio, unittest.mock
  and a vendored YAML: ~55 ms of CPU at every start (measured: ``import paramiko`` 160 -> 105 ms).
  paramiko has no switch for it, so ``invoke`` is hidden while paramiko loads (vlcalc reads
  ssh_config itself, :mod:`.ssh_config`, and never uses ``paramiko.config``).
* :class:`SocketAgent`: ``paramiko.Agent`` only connects to ``$SSH_AUTH_SOCK``; ssh_config's
  ``IdentityAgent`` names another socket, so this agent hands its own connection to the private
  ``AgentSSH._connect`` (and ``_close``).
* :func:`wait_exit_status`: ``Channel.recv_exit_status`` waits forever; its ``status_event``
  (an attribute without a leading underscore, but undocumented) lets the wait end at a deadline.
  Without it, the public ``exit_status_ready`` is polled.

Example: ``SocketAgent("/run/user/1000/agent.sock").get_keys()`` -> the agent's keys.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time

_BLOCK_INVOKE = "invoke" not in sys.modules
if _BLOCK_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
try:
    import paramiko
    import paramiko.agent
    import paramiko.config
finally:
    if _BLOCK_INVOKE:
        del sys.modules["invoke"]

#: paramiko logs every failed handshake at ERROR with a traceback from its own thread; with no
#: handler configured that reaches stderr through logging's last resort.  The failure is reported
#: as a NodeError instead, so paramiko's records go to this logger, silent unless configured.
PARAMIKO_LOGGER = "vlcalc.transport.ssh.paramiko"
logging.getLogger(PARAMIKO_LOGGER).addHandler(logging.NullHandler())


class SocketAgent(paramiko.agent.AgentSSH):
    """An ssh-agent client on the socket at ``path`` (``IdentityAgent``); ``OSError`` when it
    cannot connect, ``paramiko.SSHException`` when the agent answers nonsense."""

    def __init__(self, path: str):
        super().__init__()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            self._connect(sock)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        self._close()  # type: ignore[attr-defined]


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
    "SocketAgent",
    "paramiko",
    "wait_exit_status",
]
