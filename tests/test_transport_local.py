"""LocalTransport: ``/bin/sh -c`` with the SSH transport's contract (no sshd needed)."""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest

from vlcalc.errors import NodeError, NodeTimeoutError, OutputTooLargeError
from vlcalc.transport.base import RunResult, Target, Timeouts
from vlcalc.transport.local import LocalTransport

TARGET = Target(name="controller", host="localhost", connection="local")
TIMEOUTS = Timeouts(exec_s=10, node_s=20)


def run(
    command: str, stdin: bytes = b"", *, timeouts: Timeouts = TIMEOUTS, max_stdout: int = 1 << 20
) -> RunResult:
    return LocalTransport().run(TARGET, command, stdin, timeouts=timeouts, max_stdout=max_stdout)


def node_error(command: str, kind: str, **kwargs: object) -> NodeError:
    with pytest.raises(NodeError) as caught:
        run(command, **kwargs)  # type: ignore[arg-type]
    assert caught.value.kind == kind, caught.value.message
    assert caught.value.node == "controller"
    assert str(caught.value) == f"controller: {caught.value.message}"
    return caught.value


def test_stdin_reaches_the_command_and_stdout_comes_back() -> None:
    assert run("cat", b'{"schema": "vlcalc.probe/1"}\n') == RunResult(
        exit_status=0, stdout=b'{"schema": "vlcalc.probe/1"}\n', stderr_tail=b""
    )


def test_python_reads_the_probe_from_stdin() -> None:
    result = run("python3 -", b"import sys; print(sys.version_info[0])\n")
    assert (result.exit_status, result.stdout) == (0, b"3\n")


def test_large_stdin_and_stdout_do_not_deadlock() -> None:
    payload = os.urandom(4 * 1024 * 1024)  # far beyond a pipe buffer, both ways
    result = run("cat", payload, max_stdout=8 * 1024 * 1024)
    assert result.stdout == payload


def test_nonzero_exit_keeps_the_last_4_kib_of_stderr() -> None:
    result = run("head -c 10000 /dev/zero | tr '\\0' x >&2; echo ' the end' >&2; exit 4")
    assert result.exit_status == 4
    assert len(result.stderr_tail) == 4096
    assert result.stderr_tail.endswith(b"x the end\n")


def test_a_command_that_ignores_stdin_is_a_result() -> None:
    result = run("echo 'sudo: a password is required' >&2; exit 1", b"x" * (1 << 20))
    assert result == RunResult(1, b"", b"sudo: a password is required\n")


def test_missing_interpreter_is_exit_127() -> None:
    result = run("no-such-python3 -", b"print(1)\n")
    assert result.exit_status == 127
    assert b"not found" in result.stderr_tail


def test_a_hanging_command_times_out_and_its_children_are_killed(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    timeouts = Timeouts(exec_s=0.5, node_s=20)
    started = time.monotonic()
    error = node_error(f"sleep 30 & echo $! > {marker}; wait", "timeout", timeouts=timeouts)
    assert time.monotonic() - started < 3
    assert isinstance(error, NodeTimeoutError)
    assert (error.phase, error.limit_s, error.node_deadline) == ("running the command", 0.5, False)
    child = int(marker.read_text())
    deadline = time.monotonic() + 2
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the killed child is reaped by init
    assert (
        not Path(f"/proc/{child}/cmdline").exists()
        or not Path(f"/proc/{child}/cmdline").read_bytes()
    )


def test_the_node_deadline_caps_exec() -> None:
    started = time.monotonic()
    error = node_error("sleep 30", "timeout", timeouts=Timeouts(exec_s=30, node_s=0.5))
    assert time.monotonic() - started < 3
    assert isinstance(error, NodeTimeoutError) and error.node_deadline and error.limit_s == 0.5


def test_oversized_stdout_is_bad_output_without_reading_it_all() -> None:
    tracemalloc.start()
    try:
        error = node_error("yes", "bad-output", max_stdout=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, OutputTooLargeError) and error.limit_bytes == 64 * 1024
    assert peak < 4 * 1024 * 1024


def test_garbage_is_returned_for_the_caller_to_judge() -> None:
    assert run("printf 'not json {'").stdout == b"not json {"


def test_runs_concurrently() -> None:
    import concurrent.futures

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: run(f"sleep 0.3; echo {i}"), range(8)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(8)]
    assert time.monotonic() - started < 2.0
