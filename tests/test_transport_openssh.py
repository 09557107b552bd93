"""``--transport openssh``: the system ssh client against real OpenSSH sshd nodes on 127.0.0.1.

End to end, every failure kind the paramiko transport is tested for in ``test_scan_ssh.py`` is
checked for both transports (parametrized) and the documents must agree; in-process, the
OpenSSH transport's errors must carry the same data fields as the paramiko transport's."""

from __future__ import annotations

import doctest
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import vlcalc.transport.openssh as openssh_module
from vlcalc.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    ConnectionClosedError,
    ConnectTimeoutError,
    HostKeyChangedError,
    HostKeyRevokedError,
    HostKeyUnknownError,
    JumpLoopError,
    NodeError,
    NodeTimeoutError,
    OutputTooLargeError,
)
from vlcalc.model import ErrorKind
from vlcalc.probe import probe_source
from vlcalc.transport.base import Target, Timeouts
from vlcalc.transport.openssh import OpenSSHTransport, check_target, classify, parse_jump

from fleet_fixtures import hardware_doc, probe_doc
from sshfleet import NodeSpec, SSHFleet

pytestmark = pytest.mark.ssh

TRANSPORTS = ["paramiko", "openssh"]
PROBE = probe_source()


def doc_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHFleet]:
    specs = [
        NodeSpec("a64fx-01", doc_bytes(hardware_doc("a64fx-01", "a64fx"))),
        NodeSpec("graviton3-01", doc_bytes(hardware_doc("graviton3-01", "graviton3"))),
        NodeSpec("sve384-01", doc_bytes(hardware_doc("sve384-01", "vl384"))),
        NodeSpec(
            "nokvm-01",
            doc_bytes(probe_doc("nokvm-01", None, error=("permission-denied", "/dev/kvm: denied"))),
        ),
        NodeSpec("unknown-key", doc_bytes(hardware_doc("u", "a64fx")), host_key="unknown"),
        NodeSpec("changed-key", doc_bytes(hardware_doc("c", "a64fx")), host_key="changed"),
        NodeSpec("wrong-user-key", doc_bytes(hardware_doc("w", "a64fx")), authorized=False),
        NodeSpec("closed", kind="closed"),
        NodeSpec("silent", kind="silent"),
        NodeSpec("drop", kind="drop"),
        NodeSpec("blackhole", kind="blackhole"),
        NodeSpec("hangs", doc_bytes(hardware_doc("h", "a64fx")), behaviour="hang"),
        NodeSpec("exits-3", behaviour="fail", exit_status=3, stderr=b"probe: boom\n"),
        NodeSpec("exits-255", behaviour="fail", exit_status=255, stderr=b"probe: 255\n"),
        NodeSpec("garbage", behaviour="garbage"),
        NodeSpec("oversized", behaviour="oversized"),
        NodeSpec("needs-password", behaviour="sudo-fail"),
        NodeSpec("no-python", behaviour="no-python"),
        NodeSpec("echo", behaviour="echo-stdin"),
        NodeSpec("killed", behaviour="killed"),
    ]
    with SSHFleet(
        tmp_path_factory.mktemp("fleet"), specs, expected_stdin=PROBE, bastion=True
    ) as running:
        yield running


def write_inventory(
    fleet: SSHFleet,
    path: Path,
    names: list[str],
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    lines = [
        "all:",
        "  vars:",
        f"    ansible_ssh_private_key_file: {fleet.user_key_path}",
        "    ansible_host: 127.0.0.1",
        f"    ansible_user: {fleet.user}",
        "  hosts:",
    ]
    for name in names:
        lines += [f"    {name}:", f"      ansible_port: {fleet.node(name).port}"]
        for key, value in (extra or {}).get(name, {}).items():
            lines.append(f"      {key}: {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def vlcalc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": "/nonexistent-home"}
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.run(
        [sys.executable, "-m", "vlcalc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def kinds_of(report: dict[str, Any]) -> dict[str, str | None]:
    return {n["name"]: (n["error"] or {}).get("kind") for n in report["nodes"]}


# ---------------------------------------------------------------------- end to end, both


def test_the_documents_are_the_same_with_either_transport(fleet: SSHFleet, tmp_path: Path) -> None:
    inventory = write_inventory(
        fleet, tmp_path / "inv.yaml", ["a64fx-01", "graviton3-01", "sve384-01", "nokvm-01"]
    )
    reports = {}
    for transport in TRANSPORTS:
        result = vlcalc(
            "scan",
            str(inventory),
            "--transport",
            transport,
            "--known-hosts",
            str(fleet.known_hosts_path),
            "-f",
            "json",
        )
        assert result.returncode == 4, result.stderr  # nokvm-01: its probe says why
        reports[transport] = json.loads(result.stdout)
    assert reports["openssh"] == reports["paramiko"]
    assert reports["openssh"]["cluster"]["vls"] == [128, 256]
    assert kinds_of(reports["openssh"])["nokvm-01"] == "permission-denied"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_failures_are_values_with_their_kinds(
    fleet: SSHFleet, tmp_path: Path, transport: str
) -> None:
    broken = [
        "unknown-key",
        "changed-key",
        "wrong-user-key",
        "closed",
        "silent",
        "drop",
        "hangs",
        "exits-3",
        "garbage",
        "oversized",
        "no-python",
    ]
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", ["a64fx-01", *broken])
    started = time.monotonic()
    result = vlcalc(
        "scan",
        str(inventory),
        "--transport",
        transport,
        "--known-hosts",
        str(fleet.known_hosts_path),
        "--timeout",
        "4",
        "--connect-timeout",
        "2",
        "--retries",
        "1",
        "-f",
        "json",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 4, result.stderr
    report = json.loads(result.stdout)
    assert kinds_of(report) == {
        "a64fx-01": None,
        "unknown-key": "host-key-unknown",
        "changed-key": "host-key-changed",
        "wrong-user-key": "auth-failed",
        "closed": "unreachable",
        "silent": "timeout",
        "drop": "unreachable",
        "hangs": "timeout",
        "exits-3": "probe-failed",
        "garbage": "bad-output",
        "oversized": "bad-output",
        "no-python": "no-python",
    }
    messages = {n["name"]: n["error"]["message"] for n in report["nodes"] if n["error"]}
    assert "SHA256:" in messages["unknown-key"] and "SHA256:" in messages["changed-key"]
    assert "probe: boom" in messages["exits-3"]
    assert report["cluster"]["vls"] == [128, 256, 512]
    assert elapsed < 30


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_become_without_passwordless_sudo(fleet: SSHFleet, tmp_path: Path, transport: str) -> None:
    inventory = write_inventory(
        fleet,
        tmp_path / "inv.yaml",
        ["needs-password"],
        {"needs-password": {"ansible_become": True, "ansible_become_user": "kvm ops"}},
    )
    result = vlcalc(
        "scan",
        str(inventory),
        "--transport",
        transport,
        "--known-hosts",
        str(fleet.known_hosts_path),
        "-f",
        "json",
    )
    assert result.returncode == 4
    assert json.loads(result.stdout)["nodes"][0]["error"]["kind"] == "sudo-failed"
    # The command reaches the node exactly as the scan built it (ssh joins nothing of its own).
    assert fleet.node("needs-password").last_command() == "sudo -n -u 'kvm ops' -- python3 -"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_accept_new_records_unknown_keys_but_refuses_changed(
    fleet: SSHFleet, tmp_path: Path, transport: str
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(fleet.known_hosts_path.read_text())
    before = known.read_text().count("\n")
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", ["unknown-key", "changed-key"])
    first = vlcalc(
        "scan",
        str(inventory),
        "--transport",
        transport,
        "--known-hosts",
        str(known),
        "--accept-new",
        "-f",
        "json",
    )
    kinds = [
        n["status"] if not n["error"] else n["error"]["kind"]
        for n in json.loads(first.stdout)["nodes"]
    ]
    assert kinds == ["ok", "host-key-changed"]
    assert known.read_text().count("\n") == before + 1  # the new host's key, and nothing else
    second = vlcalc(
        "scan",
        str(inventory),
        "--transport",
        transport,
        "--known-hosts",
        str(known),
        "-l",
        "unknown-key",
    )
    assert second.returncode == 0, second.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_proxyjump_through_a_bastion(fleet: SSHFleet, tmp_path: Path, transport: str) -> None:
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    a64fx-01-via-bastion:\n    graviton3-01-via-bastion:\n"
        "    unknown-key-via-bastion:\n"
    )
    result = vlcalc(
        "scan",
        str(inventory),
        "--transport",
        transport,
        "--ssh-config",
        str(fleet.ssh_config_path),
        "--known-hosts",
        str(fleet.known_hosts_path),
        "-f",
        "json",
    )
    assert result.returncode == 4, result.stderr
    report = json.loads(result.stdout)
    assert report["cluster"]["vls"] == [128, 256]
    assert kinds_of(report)["unknown-key-via-bastion"] == "host-key-unknown"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_proxyjump_loop_is_a_node_error_not_a_hung_scan(
    fleet: SSHFleet, tmp_path: Path, transport: str
) -> None:
    # Issue 12: "Host *" + "ProxyJump bastion" sends the bastion through itself; the scan hung
    # (paramiko), and OpenSSH itself does not see this loop: it starts `ssh -W .. bastion`
    # children forever.  vlcalc()'s subprocess timeout is the guard: a hang fails the test.
    config = tmp_path / "ssh_config"
    config.write_text(fleet.ssh_config_path.read_text() + "\nHost *\n    ProxyJump bastion\n")
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("all:\n  hosts:\n    a64fx-01:\n    graviton3-01-via-bastion:\n")
    result = vlcalc(
        "scan",
        str(inventory),
        "--transport",
        transport,
        "--ssh-config",
        str(config),
        "--known-hosts",
        str(fleet.known_hosts_path),
        "--timeout",
        "5",
        "-f",
        "json",
        timeout=30,
    )
    assert result.returncode == 4, result.stderr
    errors = [node["error"] for node in json.loads(result.stdout)["nodes"]]
    assert [error["kind"] for error in errors] == ["unreachable", "unreachable"]
    assert all(error["message"].startswith("jumphost loop via bastion") for error in errors)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_check_against_an_inventory(fleet: SSHFleet, tmp_path: Path, transport: str) -> None:
    inventory = write_inventory(
        fleet, tmp_path / "inv.yaml", ["a64fx-01", "graviton3-01", "sve384-01"]
    )
    kh = str(fleet.known_hosts_path)
    common = ("--transport", transport, "--known-hosts", kh)
    assert vlcalc("check", "--vls", "128,256", str(inventory), *common).returncode == 0
    bad = vlcalc("check", "--vls", "128,256,512", str(inventory), *common, "-f", "json")
    assert bad.returncode == 1
    verdicts = {n["name"]: n["verdict"] for n in json.loads(bad.stdout)["nodes"]}
    assert verdicts == {"a64fx-01": "accept", "graviton3-01": "reject", "sve384-01": "reject"}


def test_ctrl_c_reports_what_was_collected_and_leaves_no_ssh_behind(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", ["a64fx-01", "hangs"])
    env = {**os.environ, "HOME": "/nonexistent-home", "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "vlcalc", "scan", str(inventory), "--transport", "openssh"),
            *("--known-hosts", str(fleet.known_hosts_path), "-f", "json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(4)  # a64fx-01 answers within a second or two; "hangs" never does
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 130, err
    kinds = [
        n["status"] if not n["error"] else n["error"]["kind"] for n in json.loads(out)["nodes"]
    ]
    assert kinds == ["ok", "interrupted"]
    # ssh runs in its own session (Ctrl-C does not reach it): close() killed it, and removed
    # the generated config.
    assert not list(tmp_path.glob("vlcalc-openssh-*"))
    left = [line for line in _all_command_lines().splitlines() if str(tmp_path) in line]
    assert left == []


def test_the_option_is_checked(tmp_path: Path) -> None:
    bad = vlcalc("scan", "inv.yaml", "--transport", "telnet")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "--transport" in bad.stderr
    documents = vlcalc("check", "--vls", "128", "x.json", "--transport", "openssh")
    assert documents.returncode == 2
    assert "--transport: this option needs an inventory" in documents.stderr


# ---------------------------------------------------------------------- in process: data


def target(fleet: SSHFleet, name: str, **changes: Any) -> Target:
    fields: dict[str, Any] = {
        "name": name,
        "host": "127.0.0.1",
        "port": fleet.node(name).port,
        "user": fleet.user,
        "key_file": str(fleet.user_key_path),
    }
    fields.update(changes)
    return Target(**fields)


@pytest.fixture
def ssh(fleet: SSHFleet) -> Iterator[OpenSSHTransport]:
    with OpenSSHTransport(
        ssh_config_path=fleet.ssh_config_path,
        known_hosts_path=fleet.known_hosts_path,
        retry_backoff_s=0.05,
    ) as transport:
        yield transport


FAST = Timeouts(connect_s=2, banner_s=2, auth_s=2, exec_s=4, node_s=4, retries=0)


def run(ssh: OpenSSHTransport, node: Target, timeouts: Timeouts = FAST) -> Any:
    return ssh.run(node, "python3 -", PROBE, timeouts=timeouts, max_stdout=1 << 20)


def test_a_run_returns_stdout_status_and_stderr(fleet: SSHFleet, ssh: OpenSSHTransport) -> None:
    ok = run(ssh, target(fleet, "a64fx-01"))
    assert ok.exit_status == 0 and json.loads(ok.stdout)["hostname"] == "a64fx-01"
    assert ok.stderr_tail == b""  # ssh's own chatter goes to its log, not here
    failed = run(ssh, target(fleet, "exits-3"))
    assert (failed.exit_status, failed.stderr_tail) == (3, b"probe: boom\n")
    # 255 is ssh's own failure status too: the log tells a command's 255 from ssh's.
    remote_255 = run(ssh, target(fleet, "exits-255"))
    assert (remote_255.exit_status, remote_255.stderr_tail) == (255, b"probe: 255\n")
    echoed = ssh.run(
        target(fleet, "echo"), "-x --weird", b"\x00\xff" * 1000, timeouts=FAST, max_stdout=4000
    )
    assert echoed.stdout == b"\x00\xff" * 1000
    assert fleet.node("echo").last_command() == "-x --weird"


def test_host_key_errors_carry_their_data(fleet: SSHFleet, ssh: OpenSSHTransport) -> None:
    with pytest.raises(HostKeyUnknownError) as unknown:
        run(ssh, target(fleet, "unknown-key"))
    port = fleet.node("unknown-key").port
    assert unknown.value.kind == ErrorKind.HOST_KEY_UNKNOWN
    assert unknown.value.node == "unknown-key"
    assert unknown.value.key_type == "ssh-ed25519"
    assert unknown.value.offered_fingerprint == fleet.node("unknown-key").host_key_fingerprint
    assert unknown.value.known_hosts_name == f"[127.0.0.1]:{port}"
    assert unknown.value.known_hosts_path == str(fleet.known_hosts_path)
    with pytest.raises(HostKeyChangedError) as changed:
        run(ssh, target(fleet, "changed-key"))
    node = fleet.node("changed-key")
    assert changed.value.kind == ErrorKind.HOST_KEY_CHANGED
    assert changed.value.offered_fingerprint == node.host_key_fingerprint
    assert changed.value.expected_fingerprints
    assert changed.value.expected_fingerprint != node.host_key_fingerprint
    assert "Accepted publickey" not in node.log()  # the host key is checked before login


def test_a_revoked_host_key_is_refused(fleet: SSHFleet, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"@revoked {fleet.known_hosts_line('a64fx-01')}\n")
    with OpenSSHTransport(known_hosts_path=known) as ssh, pytest.raises(HostKeyRevokedError) as bad:
        run(ssh, target(fleet, "a64fx-01"))
    assert bad.value.kind == ErrorKind.HOST_KEY_CHANGED
    assert bad.value.offered_fingerprint == fleet.node("a64fx-01").host_key_fingerprint


def test_auth_failure_names_the_user_and_the_keys_tried(
    fleet: SSHFleet, ssh: OpenSSHTransport
) -> None:
    with pytest.raises(AuthError) as failure:
        run(ssh, target(fleet, "wrong-user-key", key_file=str(fleet.other_key_path)))
    assert failure.value.kind == ErrorKind.AUTH_FAILED
    assert failure.value.user == fleet.user
    assert failure.value.allowed_methods == ("publickey",)
    assert any(str(fleet.other_key_path) in tried for tried in failure.value.tried)


def test_connection_failures_are_retried_then_reported(
    fleet: SSHFleet, ssh: OpenSSHTransport
) -> None:
    retrying = Timeouts(connect_s=2, node_s=10, retries=2)
    with pytest.raises(ConnectError) as refused:
        run(ssh, target(fleet, "closed"), retrying)
    assert refused.value.errno == errno.ECONNREFUSED and refused.value.attempts == 3
    assert refused.value.port == fleet.node("closed").port
    before = fleet.connections("drop")
    with pytest.raises(ConnectionClosedError) as closed:
        run(ssh, target(fleet, "drop"), retrying)
    assert closed.value.kind == ErrorKind.UNREACHABLE and closed.value.attempts == 3
    assert fleet.connections("drop") - before == 3


def test_timeouts_name_their_phase_and_kill_ssh(fleet: SSHFleet, ssh: OpenSSHTransport) -> None:
    with pytest.raises(NodeTimeoutError) as banner:
        run(ssh, target(fleet, "silent"))
    assert banner.value.phase == "waiting for the SSH banner" and not banner.value.node_deadline
    with pytest.raises(ConnectTimeoutError) as connect:
        run(ssh, target(fleet, "blackhole"))
    assert connect.value.phase == "TCP connect" and connect.value.retryable
    started = time.monotonic()
    with pytest.raises(NodeTimeoutError) as hung:
        run(ssh, target(fleet, "hangs"), Timeouts(connect_s=2, exec_s=2, node_s=2))
    assert time.monotonic() - started < 4
    assert hung.value.phase == "running the command" and hung.value.node_deadline
    assert "ssh -F" not in _processes_of(ssh)  # the ssh process group was killed


def test_output_is_capped(fleet: SSHFleet, ssh: OpenSSHTransport) -> None:
    with pytest.raises(OutputTooLargeError) as too_big:
        ssh.run(target(fleet, "oversized"), "python3 -", PROBE, timeouts=FAST, max_stdout=1000)
    assert too_big.value.kind == ErrorKind.BAD_OUTPUT and too_big.value.limit_bytes == 1000


def test_inventory_ssh_options_are_passed_and_weaker_policies_refused(
    fleet: SSHFleet, ssh: OpenSSHTransport
) -> None:
    via = target(fleet, "a64fx-01", ssh_options=(("proxyjump", "bastion"),))
    assert json.loads(run(ssh, via).stdout)["hostname"] == "a64fx-01"
    assert "127.0.0.1" in fleet.node("bastion").log().split("Accepted publickey")[-1]
    for option in [
        ("stricthostkeychecking", "no"),
        ("stricthostkeychecking", "accept-new"),
        ("batchmode", "no"),
        ("requesttty", "force"),
    ]:
        with pytest.raises(ConfigError) as refused:
            run(ssh, target(fleet, "unknown-key", ssh_options=(option,)))
        assert refused.value.kind == ErrorKind.UNREACHABLE and refused.value.node == "unknown-key"
    # The same options, when they are what vlcalc does anyway, are fine.
    strict = (("stricthostkeychecking", "yes"), ("batchmode", "yes"))
    assert run(ssh, target(fleet, "a64fx-01", ssh_options=strict)).exit_status == 0
    with pytest.raises(ConfigError, match="starts with '-'"):
        run(ssh, target(fleet, "a64fx-01", host="-oProxyCommand=touch /tmp/x"))


def test_jump_host_failures_name_the_jump_host(
    fleet: SSHFleet, ssh: OpenSSHTransport, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    known = tmp_path / "known_hosts"  # every node's key but the bastion's
    bastion_line = fleet.known_hosts_line("bastion")
    known.write_text(
        "".join(
            line + "\n"
            for line in fleet.known_hosts_path.read_text().splitlines()
            if line != bastion_line
        )
    )
    config.write_text(fleet.ssh_config_path.read_text())
    strict = OpenSSHTransport(ssh_config_path=config, known_hosts_path=known)
    with strict, pytest.raises(HostKeyUnknownError) as failure:
        run(strict, Target("n", "a64fx-01-via-bastion"))
    assert failure.value.jump_host == "bastion"
    assert failure.value.message.startswith("jump host bastion: ")
    assert failure.value.port == fleet.node("bastion").port
    config.write_text(fleet.ssh_config_path.read_text() + "\nHost *\n    ProxyJump bastion\n")
    looping = OpenSSHTransport(ssh_config_path=config, known_hosts_path=known)
    with looping, pytest.raises(JumpLoopError) as loop:
        run(looping, Target("n", "a64fx-01"))
    assert loop.value.chain == ("bastion", "bastion") and loop.value.node == "n"
    assert loop.value.message.startswith("jumphost loop via bastion")


def test_close_removes_the_generated_config(fleet: SSHFleet) -> None:
    transport = OpenSSHTransport(known_hosts_path=fleet.known_hosts_path)
    assert run(transport, target(fleet, "a64fx-01")).exit_status == 0
    directory = transport._directory
    assert directory is not None
    config = Path(directory, "ssh_config")
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert "StrictHostKeyChecking yes" in config.read_text()
    assert os.listdir(directory) == ["ssh_config"]  # no log left behind by the run
    transport.close()
    assert not Path(directory).exists()


# ---------------------------------------------------------------------- pure parts


def test_the_examples_in_the_module_hold() -> None:
    result = doctest.testmod(openssh_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0


def test_parse_jump_forms() -> None:
    assert parse_jump("ssh://ops@b:2200") == ("ops", "b", 2200)
    assert parse_jump("a@b@c") == ("a@b", "c", None)
    assert parse_jump("[fe80::1]") == (None, "fe80::1", None)


def test_a_remote_255_is_not_read_as_an_ssh_failure() -> None:
    resolved = openssh_module.Resolved("n", "h", 22, "ops", None, None)
    log = 'Authenticated to h ([h]:22) using "publickey".\ndebug1: Exit status 255\n'
    assert classify(255, log, b"", resolved, known_hosts_path=None) is None
    lost = classify(
        255, log.replace("debug1: Exit status 255\n", ""), b"", resolved, known_hosts_path=None
    )
    assert isinstance(lost, NodeError) and lost.kind == ErrorKind.UNREACHABLE
    # Text a node prints cannot pose as ssh: the log is ssh's alone, and stderr is only read
    # when ssh never authenticated (and then only for ProxyJump).
    spoof = b"Host key verification failed.\nroot@h: Permission denied (publickey).\n"
    assert (
        classify(
            0, 'Authenticated to h ([h]:22) using "x".\n', spoof, resolved, known_hosts_path=None
        )
        is None
    )


def test_check_target_allows_what_vlcalc_does_anyway() -> None:
    check_target(
        Target("n", "h", ssh_options=(("stricthostkeychecking", "yes"),)), accept_new=False
    )
    check_target(
        Target("n", "h", ssh_options=(("stricthostkeychecking", "accept-new"),)), accept_new=True
    )
    with pytest.raises(ConfigError, match="--accept-new"):
        check_target(
            Target("n", "h", ssh_options=(("StrictHostKeyChecking", "accept-new"),)),
            accept_new=False,
        )


def _processes_of(ssh: OpenSSHTransport) -> str:
    """Command lines of live processes that use this transport's generated config."""
    return "\n".join(
        line
        for line in _all_command_lines().splitlines()
        if ssh._directory and ssh._directory in line
    )


def _all_command_lines() -> str:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    line = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found.append(line)
    return "\n".join(found)


# ---------------------------------------------------------------------- connection sharing


def test_a_controlmaster_in_the_users_config_is_not_used(fleet: SSHFleet, tmp_path: Path) -> None:
    """With ``ControlMaster auto`` + ``ControlPersist`` in the user's config, the first scan
    would leave a master behind and the second would go through it (no host-key check, and
    ssh logs no "Authenticated to": it was read as unreachable).  Both scans work, and no
    control socket is ever made."""
    sockets = tmp_path / "cm"
    sockets.mkdir()
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host *\n  ControlMaster auto\n  ControlPath {sockets}/%C\n  ControlPersist 30\n"
    )
    config.chmod(0o600)
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", ["a64fx-01"])
    for _ in range(2):
        result = vlcalc(
            "scan", str(inventory), "--transport", "openssh", "--ssh-config", str(config),
            "--known-hosts", str(fleet.known_hosts_path), "-f", "json",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert kinds_of(json.loads(result.stdout)) == {"a64fx-01": None}
    assert list(sockets.iterdir()) == []


def test_ssh_config_dev_null_means_no_configuration(fleet: SSHFleet, tmp_path: Path) -> None:
    """``--ssh-config /dev/null`` (no configuration, as with paramiko): ssh refuses to Include
    a file others may write, so the generated config leaves the Include out."""
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", ["a64fx-01"])
    result = vlcalc(
        "scan", str(inventory), "--transport", "openssh", "--ssh-config", "/dev/null",
        "--known-hosts", str(fleet.known_hosts_path), "-f", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("keyword", "value"), [("controlmaster", "auto"), ("controlpath", "/tmp/cm-%C")]
)
def test_inventory_connection_sharing_is_refused(keyword: str, value: str) -> None:
    with pytest.raises(ConfigError, match="vlcalc does not share connections"):
        check_target(Target("n", "h", ssh_options=((keyword, value),)), accept_new=False)
    check_target(Target("n", "h", ssh_options=(("controlmaster", "no"),)), accept_new=False)


def test_a_paramiko_connection_host_reads_no_ssh_config(fleet: SSHFleet, tmp_path: Path) -> None:
    """Ansible's paramiko plugin never reads ssh_config: a ``User`` there does not apply to
    such a host (it logs in as the local user, here the fleet's), while an ssh-connection host
    takes it (and is refused by the node).  --transport openssh cannot leave the config out:
    the host is refused, not connected differently."""
    config = tmp_path / "ssh_config"
    config.write_text("Host 127.0.0.1\n  User nobody-such\n")
    config.chmod(0o600)
    lines = [
        "all:",
        "  vars:",
        f"    ansible_ssh_private_key_file: {fleet.user_key_path}",
        "    ansible_host: 127.0.0.1",
        f"    ansible_port: {fleet.node('a64fx-01').port}",
        "  hosts:",
        "    via-paramiko:",
        "      ansible_connection: paramiko",
        "    via-ssh:",
    ]
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("\n".join(lines) + "\n")
    common = ["--ssh-config", str(config), "--known-hosts", str(fleet.known_hosts_path)]
    result = vlcalc("scan", str(inventory), *common, "--retries", "0", "-f", "json")
    assert kinds_of(json.loads(result.stdout)) == {"via-paramiko": None, "via-ssh": "auth-failed"}
    refused = vlcalc(
        "scan", str(inventory), *common, "--transport", "openssh", "-l", "via-paramiko", "-f",
        "json",
    )  # fmt: skip
    node = json.loads(refused.stdout)["nodes"][0]
    assert "scan this host without --transport openssh" in node["error"]["message"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_probe_killed_by_a_signal_is_probe_failed(
    fleet: SSHFleet, tmp_path: Path, transport: str
) -> None:
    """sshd sends exit-signal and no exit status: not a lost connection, and not "status -1"."""
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", ["killed"])
    result = vlcalc(
        "scan", str(inventory), "--transport", transport, "--known-hosts",
        str(fleet.known_hosts_path), "--retries", "0", "-f", "json",
    )  # fmt: skip
    error = json.loads(result.stdout)["nodes"][0]["error"]
    assert error["kind"] == "probe-failed", error
    assert error["message"].startswith("the probe ended without an exit status (killed by a signal")
