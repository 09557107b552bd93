"""The scan's own logic with an in-process transport: command lines, how a node's answer is
judged, ordering, failures as values, interruption, the scan document.  The same paths run
against real sshd processes in test_scan_ssh.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from vlcalc.answer import interpret
from vlcalc.documents import parse_document
from vlcalc.errors import InputError, NodeError
from vlcalc.inventory import parse_inventory
from vlcalc.probe import probe_source
from vlcalc.scan import ScanOptions, probe_command, save_atomically, scan, scan_json
from vlcalc.transport.base import RunResult, Target, Timeouts

from fleet_fixtures import hardware_doc

INVENTORY = """
all:
  children:
    hpc:
      hosts:
        a64fx-[01:03]:
    newgen:
      hosts:
        sve384-01:
        broken:
        crash:
"""


class ScriptedTransport:
    """Answers per node name; checks that it was sent the real probe."""

    def __init__(self, answers: dict[str, RunResult | NodeError | Exception], delay: float = 0.0):
        self.answers = answers
        self.delay = delay
        self.commands: dict[str, str] = {}
        self.closed = False

    def run(
        self, target: Target, command: str, stdin: bytes, *, timeouts: Timeouts, max_stdout: int
    ) -> RunResult:
        assert stdin == probe_source()
        self.commands[target.name] = command
        time.sleep(self.delay)
        answer = self.answers[target.name]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


def ok(doc: dict[str, object]) -> RunResult:
    return RunResult(0, json.dumps(doc).encode() + b"\n", b"")


def hosts():  # type: ignore[no-untyped-def]
    return list(parse_inventory(INVENTORY, "inv.yaml").hosts.values())


def test_probe_command_quotes_and_becomes() -> None:
    plain = Target("n", "n", python="/opt/py 3/bin/python3")
    assert (
        probe_command(plain, ["128,256", ""]) == "'/opt/py 3/bin/python3' - --try 128,256 --try ''"
    )
    become = Target("n", "n", become=True, become_user="root; rm -rf /")
    assert probe_command(become, []) == "sudo -n -u 'root; rm -rf /' -- python3 -"
    assert probe_command(Target("n", "n", become=True), []) == "sudo -n -- python3 -"


@pytest.mark.parametrize(
    ("result", "become", "kind", "text"),
    [
        (RunResult(1, b"", b"sudo: a password is required\n"), True, "sudo-failed", "NOPASSWD"),
        (RunResult(127, b"", b"sh: 1: python3: not found\n"), False, "no-python", "install"),
        (RunResult(3, b"", b"Traceback ...\x1b[31m\n"), False, "probe-failed", "status 3"),
        (RunResult(0, b"<html>oops</html>", b""), False, "bad-output", "did not answer"),
        (RunResult(0, b"\xff\xfe", b""), False, "bad-output", "did not answer"),
        (RunResult(0, b"[1,2]", b""), False, "bad-output", "not a JSON object"),
        (RunResult(0, b'{"a":1}\n{"b":2}', b""), False, "bad-output", "did not answer"),
    ],
)
def test_interpret_failures(result: RunResult, become: bool, kind: str, text: str) -> None:
    with pytest.raises(NodeError) as caught:
        interpret(Target("n", "n", become=become), result)
    assert caught.value.kind == kind and text in caught.value.message
    assert "\x1b" not in caught.value.message


def test_scan_keeps_order_and_turns_every_failure_into_a_value() -> None:
    answers: dict[str, RunResult | NodeError | Exception] = {
        f"a64fx-0{i}": ok(hardware_doc(f"h{i}", "a64fx")) for i in (1, 2, 3)
    }
    answers["sve384-01"] = ok(hardware_doc("x", "vl384"))
    answers["broken"] = NodeError("unreachable", "connection refused", node="broken")
    answers["crash"] = RuntimeError("bug")
    transport = ScriptedTransport(answers)
    seen: list[str] = []
    result = scan(
        hosts(), transport, ScanOptions(forks=3), on_done=lambda e: seen.append(e.host.name)
    )
    names = [entry.host.name for entry in result.entries]
    assert names == ["a64fx-01", "a64fx-02", "a64fx-03", "sve384-01", "broken", "crash"]
    assert sorted(seen) == sorted(names)
    by_name = {entry.host.name: entry.record for entry in result.entries}
    assert by_name["a64fx-02"].name == "a64fx-02"  # the inventory name, not the hostname
    assert by_name["a64fx-02"].hostname == "h2" and by_name["a64fx-02"].groups == ("hpc",)
    assert (by_name["broken"].status, by_name["broken"].error_kind) == ("error", "unreachable")
    assert by_name["crash"].error_kind == "internal" and "RuntimeError" in str(
        by_name["crash"].error_message
    )
    assert not result.interrupted


def test_invalid_document_from_a_node_is_bad_output() -> None:
    doc = hardware_doc("x", "a64fx")
    doc["sve"] = {"vls": [128, 256], "words": ["0xb"] + ["0x0"] * 7}  # lies about its bitmap
    answers: dict[str, RunResult | NodeError | Exception] = {h.name: ok(doc) for h in hosts()}
    result = scan(hosts(), ScriptedTransport(answers), ScanOptions())
    record = result.entries[0].record
    assert record.error_kind == "bad-output" and "bitmap" in str(record.error_message)
    assert result.entries[0].probe is None


def test_scan_document_round_trips_through_report_reading(tmp_path: Path) -> None:
    answers: dict[str, RunResult | NodeError | Exception] = {
        h.name: ok(hardware_doc(h.name, "a64fx")) for h in hosts()
    }
    answers["broken"] = NodeError("timeout", "no banner within 10 s", node="broken")
    result = scan(
        hosts(), ScriptedTransport(answers), ScanOptions(tries=("128",)), inventory="inv.yaml"
    )
    path = tmp_path / "scan.json"
    save_atomically(str(path), scan_json(result))
    reread = parse_document(json.loads(path.read_text()), source=str(path))
    assert [r.name for r in reread] == [e.record.name for e in result.entries]
    assert [r.status for r in reread] == [e.record.status for e in result.entries]
    assert reread[4].error_kind == "timeout"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_trials_are_passed_to_the_probe() -> None:
    transport = ScriptedTransport({h.name: ok(hardware_doc(h.name, "a64fx")) for h in hosts()})
    scan(hosts()[:1], transport, ScanOptions(tries=("128,256", "")))
    assert transport.commands["a64fx-01"] == "python3 - --try 128,256 --try ''"


def test_stop_event_returns_promptly_with_interrupted_nodes() -> None:
    transport = ScriptedTransport(
        {h.name: ok(hardware_doc(h.name, "a64fx")) for h in hosts()}, delay=5.0
    )
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    result = scan(hosts(), transport, ScanOptions(forks=2), stop=stop)
    assert time.monotonic() - started < 3.0
    assert result.interrupted
    assert {e.record.error_kind for e in result.entries} == {"interrupted"}


def test_save_into_a_missing_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot write"):
        save_atomically(str(tmp_path / "no" / "scan.json"), {"a": 1})


@pytest.mark.parametrize(
    ("become", "status", "stdout", "stderr", "kind", "start"),
    [
        (True, 127, b"", b"sh: 1: sudo: not found", "sudo-failed", "sudo is not installed"),
        (True, 1, b"", b"sudo: python3: command not found", "no-python", "'python3' was not"),
        (False, 0, b"", b"", "bad-output", "the node printed nothing (exit 0)"),
        (False, -1, b"", b"", "probe-failed", "the probe ended without an exit status"),
    ],
)
def test_what_a_node_answered_is_named_right(
    become: bool, status: int, stdout: bytes, stderr: bytes, kind: str, start: str
) -> None:
    from vlcalc.answer import interpret
    from vlcalc.errors import CommandFailedError, NodeError
    from vlcalc.transport.base import RunResult, Target

    with pytest.raises(NodeError) as caught:
        interpret(Target("n1", "n1", become=become), RunResult(status, stdout, stderr))
    assert caught.value.kind.value == kind and caught.value.message.startswith(start)
    if status != 0:  # the data travels with the error, for callers that want more than text
        assert isinstance(caught.value, CommandFailedError)
        exit_status = None if status < 0 else status  # -1: none was reported
        assert (caught.value.exit_status, caught.value.stderr_tail) == (exit_status, stderr)
