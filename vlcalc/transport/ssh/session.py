"""Running the command on an authenticated connection: open a session, write stdin, drain
stdout and stderr together, take the exit status -- all before the exec deadline.

Example: ``execute(transport, "python3 -", probe, attempt, max_stdout=1 << 20, endpoint=ep)``
-> ``RunResult(exit_status=0, stdout=b'{...}', stderr_tail=b'')``.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable

from vlcalc.errors import ConnectionLostError, NodeError, NodeTimeoutError, OutputTooLargeError
from vlcalc.transport.base import RunResult
from vlcalc.transport.ssh._paramiko import paramiko, wait_exit_status
from vlcalc.transport.ssh.config import Endpoint
from vlcalc.transport.ssh.deadlines import REAPER, Alarm, Attempt

STDERR_TAIL_BYTES = 4096
_READ_CHUNK = 65536
_PHASE = "running the command"


def execute(
    transport: paramiko.Transport,
    command: str,
    stdin: bytes,
    attempt: Attempt,
    *,
    max_stdout: int,
    endpoint: Endpoint,
) -> RunResult:
    """Run ``command`` with ``stdin``; the transport is closed at the exec deadline (the reaper),
    which unblocks any paramiko call still waiting."""
    phase_s = attempt.timeouts.exec_s
    deadline = attempt.phase_deadline(phase_s)
    alarm = REAPER.arm(deadline, transport.close)

    def timeout(what: str) -> NodeTimeoutError:
        return attempt.timeout(
            _PHASE, phase_s, deadline, what, host=endpoint.hostname, port=endpoint.port
        )

    try:
        channel = transport.open_session(timeout=max(0.001, deadline - time.monotonic()))
        try:
            channel.exec_command(command)
            return _drain(channel, stdin, deadline, max_stdout, endpoint, transport, alarm, timeout)
        finally:
            channel.close()
    except NodeError:
        raise
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if alarm.fired or time.monotonic() >= deadline:
            raise timeout("") from exc
        raise ConnectionLostError(
            f"{endpoint.label}: the connection dropped while the command ran: {exc}",
            host=endpoint.hostname,
            port=endpoint.port,
            phase=_PHASE,
        ) from exc
    finally:
        REAPER.cancel(alarm)


def _drain(
    channel: paramiko.Channel,
    stdin: bytes,
    deadline: float,
    max_stdout: int,
    endpoint: Endpoint,
    transport: paramiko.Transport,
    alarm: Alarm,
    timeout: Callable[[str], NodeTimeoutError],
) -> RunResult:
    """Write stdin and read stdout and stderr together until both end, then take the exit
    status -- reading before ``recv_exit_status`` so a command that prints more than the channel
    window never deadlocks."""
    stdout = bytearray()
    stderr = bytearray()
    view = memoryview(stdin)
    sent = 0
    writing = True
    if not stdin:
        channel.shutdown_write()
        writing = False
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLIN)
    channel.settimeout(0.0)
    while True:
        if writing:
            try:
                while sent < len(view) and channel.send_ready():
                    sent += channel.send(bytes(view[sent : sent + 32768]))
            except (OSError, paramiko.SSHException):
                sent = len(view)  # the command exited without reading all of stdin
            if sent >= len(view):
                writing = False
                with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                    channel.shutdown_write()
        ended = channel.eof_received or channel.closed
        while channel.recv_ready():
            chunk = channel.recv(_READ_CHUNK)
            if not chunk:
                break
            stdout += chunk
            if len(stdout) > max_stdout:
                channel.close()
                raise OutputTooLargeError(
                    f"the command printed more than {max_stdout} bytes on stdout; stopped"
                    " reading and closed the channel",
                    limit_bytes=max_stdout,
                )
        while channel.recv_stderr_ready():
            chunk = channel.recv_stderr(_READ_CHUNK)
            if not chunk:
                break
            stderr += chunk
            if len(stderr) > 4 * STDERR_TAIL_BYTES:
                del stderr[: len(stderr) - STDERR_TAIL_BYTES]
        if ended:
            break
        left = deadline - time.monotonic()
        if left <= 0 or alarm.fired:
            raise timeout(
                f"{len(stdout)} bytes of stdout so far"
                + ("" if not writing else f", {sent} of {len(view)} stdin bytes written")
            )
        poll_ms = min(left, 0.01 if writing else 1.0) * 1000
        poller.poll(max(1, int(poll_ms)))
    tail = bytes(stderr[-STDERR_TAIL_BYTES:])
    if alarm.fired:  # the reaper closed the connection at the exec deadline
        raise timeout(f"{len(stdout)} bytes of stdout so far")
    left = deadline - time.monotonic()
    if not wait_exit_status(channel, left) and (alarm.fired or transport.is_active()):
        raise timeout("the command closed its output but did not exit")
    if not transport.is_active() and channel.exit_status == -1:
        if alarm.fired:
            raise timeout(f"{len(stdout)} bytes of stdout so far")
        raise ConnectionLostError(
            f"{endpoint.label}: the connection dropped while the command ran"
            f" ({len(stdout)} bytes of stdout received, no exit status)",
            host=endpoint.hostname,
            port=endpoint.port,
            phase=_PHASE,
        )
    # -1: the channel closed without an exit status (e.g. killed by a signal); the caller decides.
    return RunResult(exit_status=channel.recv_exit_status(), stdout=bytes(stdout), stderr_tail=tail)


__all__ = ["STDERR_TAIL_BYTES", "execute"]
