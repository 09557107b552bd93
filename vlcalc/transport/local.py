"""The local transport: run the command on this machine with ``/bin/sh -c`` (for inventory hosts
with ``ansible_connection: local``), with the same contract as the SSH transport.

``LocalTransport().run(target, "python3 -", probe_source, timeouts=Timeouts(), max_stdout=1 << 20)``
returns a :class:`RunResult`; it raises :class:`NodeTimeoutError` (kind ``timeout``) when the
command outlives ``min(exec_s, node_s)`` (the command's process group is killed), and
:class:`OutputTooLargeError` (``bad-output``) when stdout exceeds ``max_stdout`` bytes (reading
stops there and the process group is killed).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time

from vlcalc.errors import NodeError, NodeTimeoutError, OutputTooLargeError
from vlcalc.model import ErrorKind
from vlcalc.transport.base import RunResult, Target, Timeouts

STDERR_TAIL_BYTES = 4096
_READ_CHUNK = 65536
_SHELL = "/bin/sh"


class LocalTransport:
    """Run commands locally through ``/bin/sh -c``.  Thread-safe; holds no state."""

    def run(
        self,
        target: Target,
        command: str,
        stdin: bytes,
        *,
        timeouts: Timeouts,
        max_stdout: int,
    ) -> RunResult:
        limit_s = min(timeouts.exec_s, timeouts.node_s)
        deadline = time.monotonic() + limit_s
        try:
            process = subprocess.Popen(
                [_SHELL, "-c", command],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills children too
                close_fds=True,
            )
        except OSError as exc:
            raise NodeError(
                ErrorKind.UNREACHABLE,
                f"cannot start {_SHELL}: {exc.strerror or exc}",
                node=target.name,
            ) from exc
        try:
            stdout, stderr = _communicate(process, stdin, deadline, timeouts, max_stdout)
            left = max(0.0, deadline - time.monotonic())
            try:
                status = process.wait(timeout=left)
            except subprocess.TimeoutExpired:
                raise _timeout(timeouts, "it closed its output but did not exit") from None
            _close_pipes(process)
        except NodeError as failure:
            _kill(process)
            failure.node = target.name
            raise
        except BaseException:
            _kill(process)
            raise
        return RunResult(exit_status=status, stdout=stdout, stderr_tail=stderr[-STDERR_TAIL_BYTES:])

    def close(self) -> None:
        """Nothing is pooled."""


def _timeout(timeouts: Timeouts, what: str) -> NodeTimeoutError:
    limit_s = min(timeouts.exec_s, timeouts.node_s)
    return NodeTimeoutError(
        f"running the command timed out after {limit_s:g} s: {what}",
        phase="running the command",
        limit_s=limit_s,
        node_deadline=timeouts.node_s < timeouts.exec_s,
    )


def _communicate(
    process: subprocess.Popen[bytes],
    stdin: bytes,
    deadline: float,
    timeouts: Timeouts,
    max_stdout: int,
) -> tuple[bytes, bytes]:
    """Write stdin and read stdout and stderr together, like ``Popen.communicate`` but with a
    stdout cap and a bounded stderr tail.  Raises :class:`NodeTimeoutError` at ``deadline`` and
    :class:`OutputTooLargeError` past ``max_stdout``."""
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    stdout = bytearray()
    stderr = bytearray()
    view = memoryview(stdin)
    sent = 0
    with selectors.DefaultSelector() as selector:
        if stdin:
            os.set_blocking(process.stdin.fileno(), False)
            selector.register(process.stdin, selectors.EVENT_WRITE)
        else:
            process.stdin.close()
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)
        while len(selector.get_map()) > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timeout(timeouts, f"{len(stdout)} bytes of stdout so far")
            for key, _ in selector.select(left):
                stream = key.fileobj
                if stream is process.stdin:
                    try:
                        sent += os.write(process.stdin.fileno(), view[sent : sent + _READ_CHUNK])
                    except BrokenPipeError:
                        sent = len(view)  # the command exited without reading all of stdin
                    except BlockingIOError:
                        continue
                    if sent >= len(view):
                        selector.unregister(process.stdin)
                        with contextlib.suppress(BrokenPipeError):
                            process.stdin.close()
                    continue
                assert stream is process.stdout or stream is process.stderr
                chunk = os.read(stream.fileno(), _READ_CHUNK)
                if not chunk:
                    selector.unregister(stream)
                    continue
                if stream is process.stdout:
                    stdout += chunk
                    if len(stdout) > max_stdout:
                        raise OutputTooLargeError(
                            f"the command printed more than {max_stdout} bytes on stdout;"
                            " stopped reading and killed it",
                            limit_bytes=max_stdout,
                        )
                else:
                    stderr += chunk
                    if len(stderr) > 4 * STDERR_TAIL_BYTES:
                        del stderr[: len(stderr) - STDERR_TAIL_BYTES]
    return bytes(stdout), bytes(stderr)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill the command's whole process group and reap it; close our pipe ends."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()
    _close_pipes(process)


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


__all__ = ["LocalTransport"]
