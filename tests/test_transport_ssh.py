"""SSHTransport against real OpenSSH sshd processes on 127.0.0.1 (see tests/sshfleet.py)."""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import paramiko
import pytest

from vlcalc.errors import (
    AuthError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    ConnectTimeoutError,
    HostKeyChangedError,
    HostKeyRevokedError,
    HostKeyUnknownError,
    JumpLoopError,
    NameLookupError,
    NameLookupRetryError,
    NodeError,
    NodeTimeoutError,
    OutputTooLargeError,
    UnsupportedConfigError,
)
from vlcalc.transport.base import RunResult, Target, Timeouts
from vlcalc.transport.ssh import SSHTransport
from vlcalc.transport.ssh._paramiko import wait_exit_status
from vlcalc.transport.ssh.config import (
    MAX_JUMPS,
    Endpoint,
    check_jump_route,
    parse_jump,
    resolve,
)
from vlcalc.transport.ssh.known_hosts import KnownHostsFile
from vlcalc.transport.ssh.ssh_config import Config, Local, parse_text

from sshfleet import (
    NodeSpec,
    SSHFleet,
    fingerprint_of,
    generate_ed25519,
    sign_user_key,
    ssh_add,
    start_ssh_agent,
)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def ssh(test: F) -> F:
    """Mark a test that needs the real-sshd fleet."""
    needs_sshd = pytest.mark.skipif(
        not os.path.exists("/usr/sbin/sshd"), reason="needs OpenSSH sshd"
    )
    marked: F = pytest.mark.ssh(needs_sshd(test))
    return marked


PROBE = b"import json, sys\nprint(json.dumps({'schema': 'vlcalc.probe/1'}))\n"
COMMAND = "python3 -"
FAST = Timeouts(connect_s=2, banner_s=2, auth_s=3, exec_s=5, node_s=10, retries=0)
LONG_STDERR = b"x" * 10_000 + b"\nTraceback: the end\n"
HEALTHY = [f"node{i:02d}" for i in range(1, 8)]


def document(name: str) -> bytes:
    return json.dumps({"schema": "vlcalc.probe/1", "hostname": name}).encode() + b"\n"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHFleet]:
    specs = [NodeSpec(name, document=document(name)) for name in HEALTHY]
    specs += [
        NodeSpec("unknown", host_key="unknown", document=document("unknown")),
        NodeSpec("changed", host_key="changed"),
        NodeSpec("failing", behaviour="fail", exit_status=2, stderr=LONG_STDERR),
        NodeSpec("garbage", behaviour="garbage"),
        NodeSpec("oversized", behaviour="oversized", oversized_bytes=10 * 1024 * 1024),
        NodeSpec("hang", behaviour="hang"),
        NodeSpec("sudo", behaviour="sudo-fail"),
        NodeSpec("nopython", behaviour="no-python"),
        NodeSpec("echo", behaviour="echo-stdin"),
        NodeSpec("silent", kind="silent"),
        NodeSpec("drop", kind="drop"),
        NodeSpec("blackhole", kind="blackhole"),
        NodeSpec("closed", kind="closed"),
    ]
    with SSHFleet(tmp_path_factory.mktemp("fleet"), specs, expected_stdin=PROBE, bastion=True) as f:
        yield f


@pytest.fixture
def transport(fleet: SSHFleet) -> Iterator[SSHTransport]:
    with SSHTransport(fleet.ssh_config_path, fleet.known_hosts_path, use_agent=False) as t:
        yield t


def run(
    transport: SSHTransport,
    name: str,
    *,
    timeouts: Timeouts = FAST,
    max_stdout: int = 1 << 20,
    stdin: bytes = PROBE,
    **target: object,
) -> RunResult:
    return transport.run(
        Target(name=name, host=name, **target),  # type: ignore[arg-type]
        COMMAND,
        stdin,
        timeouts=timeouts,
        max_stdout=max_stdout,
    )


def node_error(transport: SSHTransport, name: str, kind: str, **kwargs: object) -> NodeError:
    with pytest.raises(NodeError) as caught:
        run(transport, name, **kwargs)  # type: ignore[arg-type]
    assert caught.value.kind == kind, caught.value.message
    assert caught.value.node == name
    return caught.value


# ------------------------------------------------------------------ healthy nodes


@ssh
def test_each_node_answers_with_its_own_document(fleet: SSHFleet, transport: SSHTransport) -> None:
    for name in ("node01", "node02"):
        result = run(transport, name)
        assert result == RunResult(exit_status=0, stdout=document(name), stderr_tail=b"")
        assert fleet.node(name).last_command() == COMMAND


@ssh
def test_the_node_checks_it_received_the_probe(transport: SSHTransport) -> None:
    result = run(transport, "node03", stdin=b"print('not the probe')\n")
    assert result.exit_status == 3
    assert b"not the expected probe" in result.stderr_tail


@ssh
def test_large_stdin_is_written_fully_while_output_is_read(transport: SSHTransport) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # more than the 2 MiB channel window, both ways
    result = run(transport, "echo", stdin=payload, max_stdout=4 * 1024 * 1024)
    assert result.exit_status == 0
    assert result.stdout == payload


@ssh
def test_explicit_target_fields_override_ssh_config(
    fleet: SSHFleet, transport: SSHTransport
) -> None:
    # "node04" in ssh_config points at node04's port; an explicit port (like ssh -p) wins.
    result = run(transport, "node04", port=fleet.node("node05").port)
    assert result.stdout == document("node05")


# ------------------------------------------------------------------ host keys


@ssh
def test_unknown_host_key_is_refused_before_authenticating(
    fleet: SSHFleet, transport: SSHTransport
) -> None:
    error = node_error(transport, "unknown", "host-key-unknown")
    node = fleet.node("unknown")
    assert isinstance(error, HostKeyUnknownError)
    assert node.host_key_fingerprint is not None
    assert (error.key_type, error.offered_fingerprint) == ("ssh-ed25519", node.host_key_fingerprint)
    assert "ssh-keyscan" in error.message and "--accept-new" in error.message  # the ways out
    assert node.last_command() is None
    assert "Accepted publickey" not in node.log()


@ssh
def test_changed_host_key_is_refused_with_both_fingerprints(
    fleet: SSHFleet, transport: SSHTransport
) -> None:
    error = node_error(transport, "changed", "host-key-changed")
    node = fleet.node("changed")
    assert isinstance(error, HostKeyChangedError)
    assert error.offered_fingerprint == node.host_key_fingerprint
    assert len(error.expected_fingerprints) == 1
    assert error.expected_fingerprint not in (None, error.offered_fingerprint)
    assert node.last_command() is None
    assert "Accepted publickey" not in node.log()


@ssh
def test_accept_new_records_the_key_and_still_refuses_a_changed_one(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    shutil.copy(fleet.known_hosts_path, known)
    with SSHTransport(fleet.ssh_config_path, known, accept_new=True, use_agent=False) as t:
        # Eight concurrent first contacts record the key once.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: run(t, "unknown"), range(8)))
        assert {r.stdout for r in results} == {document("unknown")}
        node_error(t, "changed", "host-key-changed")
    lines = known.read_text().splitlines()
    assert lines.count(fleet.known_hosts_line("unknown")) == 1
    assert not any(line.startswith("|1|") for line in lines)
    # A strict transport that reads the file afresh now knows the host.
    with SSHTransport(fleet.ssh_config_path, known, use_agent=False) as strict:
        assert run(strict, "unknown").stdout == document("unknown")


@ssh
def test_accept_new_writes_hashed_names_when_ssh_config_says_so(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n    HashKnownHosts yes\n" + fleet.ssh_config_path.read_text())
    known = tmp_path / "known_hosts"
    known.write_text("")
    with SSHTransport(config, known, accept_new=True, use_agent=False) as t:
        assert run(t, "node06").exit_status == 0
    (line,) = known.read_text().splitlines()
    assert line.startswith("|1|") and str(fleet.node("node06").port) not in line
    with SSHTransport(config, known, use_agent=False) as strict:
        assert run(strict, "node06").stdout == document("node06")


@ssh
def test_hashed_and_multi_name_known_hosts_entries_match(fleet: SSHFleet, tmp_path: Path) -> None:
    node = fleet.node("node07")
    known = tmp_path / "known_hosts"
    public = node.host_public_key
    known.write_text(
        "# comment\n"
        f"{paramiko.HostKeys.hash_host(f'[127.0.0.1]:{node.port}')} {public}\n"
        f"other.example,[127.0.0.1]:{fleet.node('node01').port} "
        f"{fleet.node('node01').host_public_key}\n"
    )
    with SSHTransport(fleet.ssh_config_path, known, use_agent=False) as t:
        assert run(t, "node07").stdout == document("node07")
        assert run(t, "node01").stdout == document("node01")
        node_error(t, "node02", "host-key-unknown")


@ssh
def test_revoked_host_key_is_refused(fleet: SSHFleet, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(
        fleet.known_hosts_line("node01")
        + "\n@revoked * "
        + str(fleet.node("node01").host_public_key)
    )
    with SSHTransport(fleet.ssh_config_path, known, use_agent=False) as t:
        error = node_error(t, "node01", "host-key-changed")
    assert isinstance(error, HostKeyRevokedError)
    assert error.offered_fingerprint == fleet.node("node01").host_key_fingerprint


# ------------------------------------------------------------------ authentication


@ssh
def test_key_file_comes_before_the_ssh_config_identities_as_ssh_i_does(
    fleet: SSHFleet, transport: SSHTransport
) -> None:
    # ``ssh -i other`` offers other first, then ssh_config's IdentityFile (the right key).
    result = run(transport, "node01", key_file=str(fleet.other_key_path))
    assert result.stdout == document("node01")


@ssh
def test_wrong_user_key_is_auth_failed_without_key_material(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(re.sub(r"\n\s*IdentityFile .*", "", fleet.ssh_config_path.read_text()))
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        error = node_error(t, "node01", "auth-failed", key_file=str(fleet.other_key_path))
    assert isinstance(error, AuthError)
    other = fingerprint_of(Path(f"{fleet.other_key_path}.pub").read_text())
    assert error.tried == (f"{fleet.other_key_path} (ssh-ed25519 {other})",)
    private = fleet.other_key_path.read_text()
    assert "PRIVATE KEY" not in error.message
    assert not any(line in error.message for line in private.splitlines()[1:-1])


@ssh
def test_key_file_logs_in_where_ssh_config_names_no_identity(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(re.sub(r"\n\s*IdentityFile .*", "", fleet.ssh_config_path.read_text()))
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        error = node_error(t, "node02", "auth-failed")
        assert isinstance(error, AuthError) and error.tried == ()
        result = run(t, "node02", key_file=str(fleet.user_key_path))
    assert result.stdout == document("node02")


@ssh
def test_ssh_agent_keys_are_used(
    fleet: SSHFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, sock = start_ssh_agent(tmp_path)
    try:
        ssh_add(sock, fleet.user_key_path)
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        config = tmp_path / "ssh_config"
        config.write_text(re.sub(r"\n\s*IdentityFile .*", "", fleet.ssh_config_path.read_text()))
        with SSHTransport(config, fleet.known_hosts_path) as t:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                results = list(pool.map(lambda n: run(t, n), HEALTHY[:4]))
            assert [r.stdout for r in results] == [document(n) for n in HEALTHY[:4]]
        with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
            node_error(t, "node01", "auth-failed")
    finally:
        agent.terminate()
        agent.wait()


# ------------------------------------------------------------------ unreachable and timeouts


@ssh
def test_closed_port_is_unreachable_after_jittered_retries(fleet: SSHFleet) -> None:
    timeouts = Timeouts(connect_s=2, banner_s=2, auth_s=2, exec_s=2, node_s=10, retries=3)
    with SSHTransport(
        fleet.ssh_config_path, fleet.known_hosts_path, use_agent=False, retry_backoff_s=0.05
    ) as t:
        started = time.monotonic()
        error = node_error(t, "closed", "unreachable", timeouts=timeouts)
        elapsed = time.monotonic() - started
    assert isinstance(error, ConnectError) and error.errno == errno.ECONNREFUSED
    assert error.attempts == 4
    # Three sleeps of 0.05, 0.1 and 0.2 s, each jittered by +-50 %.
    assert 0.175 <= elapsed < 2.0


@ssh
def test_connection_dropped_before_the_banner_is_retried_a_bounded_number_of_times(
    fleet: SSHFleet,
) -> None:
    timeouts = Timeouts(connect_s=2, banner_s=2, auth_s=2, exec_s=2, node_s=10, retries=2)
    before = fleet.connections("drop")
    with SSHTransport(
        fleet.ssh_config_path, fleet.known_hosts_path, use_agent=False, retry_backoff_s=0.02
    ) as t:
        error = node_error(t, "drop", "unreachable", timeouts=timeouts)
    assert isinstance(error, ConnectionClosedError) and error.phase == "the SSH banner"
    assert fleet.connections("drop") - before == 3


@ssh
def test_connect_timeout_is_a_timeout_and_is_retried(fleet: SSHFleet) -> None:
    timeouts = Timeouts(connect_s=0.3, banner_s=2, auth_s=2, exec_s=2, node_s=10, retries=1)
    with SSHTransport(
        fleet.ssh_config_path, fleet.known_hosts_path, use_agent=False, retry_backoff_s=0.02
    ) as t:
        started = time.monotonic()
        error = node_error(t, "blackhole", "timeout", timeouts=timeouts)
        elapsed = time.monotonic() - started
    assert isinstance(error, ConnectTimeoutError) and error.retryable
    assert (error.phase, error.limit_s, error.node_deadline) == ("TCP connect", 0.3, False)
    assert error.attempts == 2
    assert 0.6 <= elapsed < 2.0


@ssh
def test_silent_node_times_out_on_the_banner_without_stalling_the_others(
    fleet: SSHFleet, transport: SSHTransport
) -> None:
    timeouts = Timeouts(connect_s=2, banner_s=1.5, auth_s=3, exec_s=5, node_s=10, retries=2)
    names = ["silent", *HEALTHY]
    finished: dict[str, float] = {}
    started = time.monotonic()

    def one(name: str) -> RunResult | NodeError:
        try:
            return run(transport, name, timeouts=timeouts)
        except NodeError as exc:
            return exc
        finally:
            finished[name] = time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        outcomes = dict(zip(names, pool.map(one, names)))
    silent = outcomes.pop("silent")
    assert isinstance(silent, NodeTimeoutError)
    assert (silent.phase, silent.limit_s) == ("waiting for the SSH banner", 1.5)
    assert 1.4 <= finished["silent"] < 3.0  # a banner timeout is not retried
    for name, outcome in outcomes.items():
        assert isinstance(outcome, RunResult) and outcome.stdout == document(name)
        assert finished[name] < 1.4, finished


@ssh
def test_node_deadline_caps_every_phase(fleet: SSHFleet, transport: SSHTransport) -> None:
    timeouts = Timeouts(connect_s=30, banner_s=30, auth_s=30, exec_s=30, node_s=1.0)
    started = time.monotonic()
    error = node_error(transport, "silent", "timeout", timeouts=timeouts)
    assert time.monotonic() - started < 2.0
    assert isinstance(error, NodeTimeoutError) and error.node_deadline and error.limit_s == 1.0


@ssh
def test_hanging_command_times_out_in_the_exec_phase(transport: SSHTransport) -> None:
    timeouts = Timeouts(connect_s=2, banner_s=2, auth_s=2, exec_s=1.0, node_s=10)
    started = time.monotonic()
    error = node_error(transport, "hang", "timeout", timeouts=timeouts)
    assert 0.9 <= time.monotonic() - started < 3.0
    assert isinstance(error, NodeTimeoutError) and not error.node_deadline
    assert (error.phase, error.limit_s) == ("running the command", 1.0)


@ssh
def test_connection_dropped_mid_run_is_unreachable(
    fleet: SSHFleet, transport: SSHTransport
) -> None:
    timer = threading.Timer(1.0, fleet.kill_sessions, args=("hang",))
    timer.start()
    try:
        error = node_error(transport, "hang", "unreachable")
    finally:
        timer.cancel()
    assert isinstance(error, ConnectionLostError) and error.phase == "running the command"


# ------------------------------------------------------------------ what the command does


@ssh
def test_nonzero_exit_keeps_the_stderr_tail(transport: SSHTransport) -> None:
    result = run(transport, "failing")
    assert result.exit_status == 2
    assert result.stdout == b""
    assert len(result.stderr_tail) == 4096
    assert result.stderr_tail.endswith(b"\nTraceback: the end\n")


@ssh
def test_garbage_output_is_returned_for_the_caller_to_judge(transport: SSHTransport) -> None:
    result = run(transport, "garbage")
    assert result.exit_status == 0
    assert result.stdout.startswith(b"Traceback")


@ssh
def test_sudo_and_python_failures_are_results(transport: SSHTransport) -> None:
    sudo = run(transport, "sudo")
    assert (sudo.exit_status, sudo.stderr_tail) == (1, b"sudo: a password is required\n")
    python = run(transport, "nopython")
    assert python.exit_status == 127 and b"python3: not found" in python.stderr_tail


@ssh
def test_oversized_output_is_bad_output_without_reading_it_all(transport: SSHTransport) -> None:
    tracemalloc.start()
    try:
        started = time.monotonic()
        error = node_error(transport, "oversized", "bad-output", max_stdout=64 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, OutputTooLargeError) and error.limit_bytes == 64 * 1024
    assert time.monotonic() - started < 5
    assert peak < 6 * 1024 * 1024  # the node prints 10 MiB


# ------------------------------------------------------------------ ProxyJump


@ssh
def test_proxyjump_through_the_bastion_reuses_one_jump_connection(
    fleet: SSHFleet, transport: SSHTransport
) -> None:
    bastion = fleet.node("bastion")
    logins_before = bastion.log().count("Accepted publickey")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: run(transport, f"{n}-via-bastion"), HEALTHY[:4]))
    assert [r.stdout for r in results] == [document(n) for n in HEALTHY[:4]]
    assert bastion.log().count("Accepted publickey") - logins_before == 1
    transport.close()  # drops the cached jump connection; the next run reconnects
    assert run(transport, "node05-via-bastion").stdout == document("node05")
    assert bastion.log().count("Accepted publickey") - logins_before == 2


@ssh
def test_proxyjump_chain_of_two_hops(fleet: SSHFleet, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    node = fleet.node("node03")
    config.write_text(
        f"Host chained\n    HostName 127.0.0.1\n    Port {node.port}\n"
        f"    IdentityFile {fleet.user_key_path}\n    ProxyJump bastion,bastion\n\n"
        + fleet.ssh_config_path.read_text()
    )
    bastion = fleet.node("bastion")
    logins_before = bastion.log().count("Accepted publickey")
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        assert run(t, "chained").stdout == document("node03")
    # One login to the bastion directly, one to the bastion through itself.
    assert bastion.log().count("Accepted publickey") - logins_before == 2


@ssh
def test_proxyjump_checks_the_bastion_host_key(fleet: SSHFleet, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    port = fleet.node("bastion").port
    known.write_text(
        "".join(
            line + "\n"
            for line in fleet.known_hosts_path.read_text().splitlines()
            if not line.startswith(f"[127.0.0.1]:{port} ")
        )
    )
    with SSHTransport(fleet.ssh_config_path, known, use_agent=False) as t:
        error = node_error(t, "node01-via-bastion", "host-key-unknown")
    assert isinstance(error, HostKeyUnknownError)
    assert error.jump_host == "bastion" and error.port == port
    assert error.message.startswith("jump host bastion: ")  # the record says where it failed


@ssh
def test_proxyjump_to_a_closed_port_is_unreachable(fleet: SSHFleet, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        fleet.ssh_config_path.read_text()
        + f"\nHost closed-via-bastion\n    HostName 127.0.0.1\n    Port {fleet.node('closed').port}"
        + "\n    ProxyJump bastion\n"
    )
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        error = node_error(t, "closed-via-bastion", "unreachable")
    assert isinstance(error, ConnectError) and error.jump_host == "bastion"
    assert error.port == fleet.node("closed").port


# ------------------------------------------------------------------ cost per node


@ssh
def test_controller_cpu_per_node(fleet: SSHFleet, transport: SSHTransport) -> None:
    """Not a benchmark, a tripwire: the whole run must stay a few milliseconds of our CPU."""
    names = HEALTHY * 4
    run(transport, "node01")  # warm the caches (config, known_hosts, keys)
    cpu = time.process_time()
    wall = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: run(transport, n), names))
    cpu_ms = (time.process_time() - cpu) * 1000 / len(names)
    wall_s = time.monotonic() - wall
    assert all(r.exit_status == 0 for r in results)
    print(f"controller CPU {cpu_ms:.1f} ms/node, {len(names)} runs in {wall_s:.2f} s")
    assert cpu_ms < 30


# ------------------------------------------------------------------ pure parts (no sshd)


def test_the_host_index_answers_like_a_walk_over_every_block() -> None:
    text = (
        "Host *.example\n  User wild\n"
        "Host n0005 other\n  Port 1\n"
        + "".join(
            f"Host n{i:04d}\n  HostName 10.0.0.{i % 250}\n  Port {2000 + i}\n" for i in range(300)
        )
        + "Host !n0003 n000*\n  User negated\n"
        "Host *\n  User fallback\n  IdentityFile ~/.ssh/k\n"
        "Match host n0007\n  Port 9\n"
    )
    local = Local.current()
    indexed = Config([parse_text(text, "<test>", local)], local)
    unindexed_file = parse_text(text, "<test>", local)
    unindexed_file.literal, unindexed_file.always = {}, list(range(len(unindexed_file.blocks)))
    unindexed = Config([unindexed_file], local)
    for host in ("n0003", "n0005", "n0007", "n0299", "other", "a.example", "unknown"):
        one = resolve(indexed, host, None, None, None)
        assert one == resolve(unindexed, host, None, None, None), host
    assert resolve(indexed, "n0007", None, None, None).port == 2007
    assert resolve(indexed, "n0005", None, None, None).port == 1
    assert resolve(indexed, "n0003", None, None, None).user == "fallback"
    assert resolve(indexed, "n0004", None, None, None).user == "negated"


def test_jump_specs() -> None:
    assert parse_jump("bastion") == (None, "bastion", None)
    assert parse_jump("ops@bastion:2222") == ("ops", "bastion", 2222)
    assert parse_jump("ssh://ops@[::1]:2200") == ("ops", "::1", 2200)


def test_known_hosts_index(tmp_path: Path) -> None:
    import base64

    blob_a, blob_b, blob_c = (
        base64.b64encode(b"\0\0\0\x0bssh-ed25519" + bytes([n]) * 36).decode() for n in (1, 2, 3)
    )
    path = tmp_path / "known_hosts"
    path.write_text(
        f"# comment\n\n"
        f"alpha,[beta]:2222 ssh-ed25519 {blob_a}\n"
        f"{paramiko.HostKeys.hash_host('gamma')} ssh-ed25519 {blob_b}\n"
        f"*.lab ssh-ed25519 {blob_c}\n"
        f"@cert-authority *.corp ssh-ed25519 {blob_c}\n"
        f"@revoked * ssh-ed25519 {blob_b}\n"
        "broken line\n"
    )
    index = KnownHostsFile.load(str(path))
    assert [t for t, _ in index.lookup("alpha")] == ["ssh-ed25519"]
    assert index.lookup("[beta]:2222") == index.lookup("alpha")
    assert index.lookup("beta") == []
    assert index.lookup("gamma")[0][1] == base64.b64decode(blob_b)
    assert index.lookup("node.lab")[0][1] == base64.b64decode(blob_c)
    assert index.lookup("x.corp") == []
    assert index.revoked == {base64.b64decode(blob_b)}
    assert KnownHostsFile.load(str(tmp_path / "missing")).lookup("alpha") == []


# ------------------------------------------------------------------ jump loops and deadlines


def finishes_within(seconds: float, call: Callable[[], T]) -> T:
    """Run ``call`` on a daemon thread and fail the test if it is not done within ``seconds``:
    a hang (the bug this guards against) fails instead of stalling the suite."""
    outcome: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=body, name="finishes-within", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds:g} s (a hang)")
    if error:
        raise error[0]
    return outcome[0]


def raised(call: Callable[[], object]) -> Callable[[], NodeError]:
    def body() -> NodeError:
        with pytest.raises(NodeError) as caught:
            call()
        return caught.value

    return body


@ssh
def test_host_star_proxyjump_is_a_jumphost_loop_not_a_hang(fleet: SSHFleet, tmp_path: Path) -> None:
    # Issue 12: "Host *" gives the bastion itself "ProxyJump bastion"; connecting to it went
    # through itself forever (a lock taken twice by one thread, past every deadline).
    config = tmp_path / "ssh_config"
    config.write_text(fleet.ssh_config_path.read_text() + "\nHost *\n    ProxyJump bastion\n")
    bastion = fleet.node("bastion")
    before = bastion.log().count("Connection from")
    with (
        SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        futures = [
            pool.submit(finishes_within, 5, raised(lambda n=n: run(t, n)))
            for n in ("node01", "node02", "node01-via-bastion", "bastion")
        ]
        errors = [future.result() for future in futures]
    for error in errors:
        assert isinstance(error, JumpLoopError)
        assert error.kind == "unreachable" and not error.retryable
        assert error.chain == ("bastion", "bastion")
        assert error.message.startswith("jumphost loop via bastion")
        assert "ProxyJump none" in error.message  # the way out
    assert [e.node for e in errors] == ["node01", "node02", "node01-via-bastion", "bastion"]
    assert bastion.log().count("Connection from") == before  # refused before connecting


@ssh
def test_a_jump_loop_through_two_hosts_is_refused(fleet: SSHFleet, tmp_path: Path) -> None:
    port = fleet.node("bastion").port
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host hop-a\n    HostName 127.0.0.1\n    Port {port}\n    ProxyJump hop-b\n"
        f"Host hop-b\n    HostName 127.0.0.1\n    Port {port}\n    ProxyJump hop-a\n"
        f"Host target\n    HostName 127.0.0.1\n    Port {fleet.node('node01').port}\n"
        "    ProxyJump hop-a\n"
    )
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        error = finishes_within(5, raised(lambda: run(t, "target")))
    assert isinstance(error, JumpLoopError)
    assert error.chain == ("hop-a", "hop-b", "hop-a")
    assert error.message.startswith("jumphost loop via hop-a (hop-a -> hop-b -> hop-a)")


@ssh
def test_a_jump_host_chain_without_a_loop_still_connects_with_host_star(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    # The way out the loop message names: the bastion's own block says ProxyJump none.
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host bastion\n    ProxyJump none\n\n"
        + fleet.ssh_config_path.read_text()
        + "\nHost *\n    ProxyJump bastion\n"
    )
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        result = finishes_within(10, lambda: run(t, "node02"))
    assert result.stdout == document("node02")


@ssh
def test_waiting_for_another_threads_jump_connection_ends_at_the_node_deadline(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    # "silent" accepts TCP and never speaks SSH: the first thread holds the jump host's
    # connection lock for its whole (long) deadline; the second must give up at its own.
    config = tmp_path / "ssh_config"
    config.write_text(
        fleet.ssh_config_path.read_text()
        + f"\nHost via-silent\n    HostName 127.0.0.1\n    Port {fleet.node('node01').port}\n"
        "    ProxyJump silent\n"
    )
    slow = Timeouts(connect_s=5, banner_s=5, auth_s=5, exec_s=5, node_s=3, retries=0)
    quick = Timeouts(connect_s=5, banner_s=5, auth_s=5, exec_s=5, node_s=0.5, retries=0)
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        first = threading.Thread(
            target=raised(lambda: run(t, "via-silent", timeouts=slow)),
            daemon=True,
        )
        first.start()
        time.sleep(0.3)  # the first thread is now connecting to the jump host
        started = time.monotonic()
        error = finishes_within(5, raised(lambda: run(t, "via-silent", timeouts=quick)))
        waited = time.monotonic() - started
        first.join(5)
    assert isinstance(error, NodeTimeoutError)
    assert error.node_deadline and error.limit_s == 0.5
    assert error.phase == "waiting for the connection to jump host silent"
    assert waited < 1.0


# ------------------------------------------------------------------ errors carry their data


@ssh
def test_error_fields_say_what_failed_where(
    fleet: SSHFleet, transport: SSHTransport, tmp_path: Path
) -> None:
    unknown = node_error(transport, "unknown", "host-key-unknown")
    assert isinstance(unknown, HostKeyUnknownError)
    assert (unknown.host, unknown.port) == ("127.0.0.1", fleet.node("unknown").port)
    assert unknown.offered_fingerprint == fleet.node("unknown").host_key_fingerprint
    assert unknown.key_type == "ssh-ed25519"
    assert unknown.known_hosts_name == f"[127.0.0.1]:{fleet.node('unknown').port}"
    assert unknown.known_hosts_path == str(fleet.known_hosts_path)

    changed = node_error(transport, "changed", "host-key-changed")
    assert isinstance(changed, HostKeyChangedError)
    assert changed.offered_fingerprint == fleet.node("changed").host_key_fingerprint
    name = f"[127.0.0.1]:{fleet.node('changed').port} "
    (line,) = (x for x in fleet.known_hosts_path.read_text().splitlines() if x.startswith(name))
    recorded = line.split(maxsplit=1)[1]
    assert changed.expected_fingerprint == fingerprint_of(recorded)
    assert changed.expected_fingerprint != changed.offered_fingerprint

    refused = node_error(transport, "closed", "unreachable")
    assert isinstance(refused, ConnectError) and refused.retryable
    assert refused.errno == errno.ECONNREFUSED and refused.port == fleet.node("closed").port

    config = tmp_path / "ssh_config"
    config.write_text(re.sub(r"\n\s*IdentityFile .*", "", fleet.ssh_config_path.read_text()))
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as keyless:
        login = node_error(keyless, "node01", "auth-failed", key_file=str(fleet.other_key_path))
    assert isinstance(login, AuthError)
    assert login.user == fleet.user
    assert len(login.tried) == 1 and login.tried[0].startswith(str(fleet.other_key_path))

    banner = node_error(transport, "silent", "timeout", timeouts=replace(FAST, banner_s=0.5))
    assert isinstance(banner, NodeTimeoutError) and not banner.retryable
    assert (banner.phase, banner.limit_s, banner.node_deadline) == (
        "waiting for the SSH banner",
        0.5,
        False,
    )

    big = node_error(transport, "oversized", "bad-output", max_stdout=1024)
    assert isinstance(big, OutputTooLargeError) and big.limit_bytes == 1024


@ssh
def test_retried_errors_count_their_attempts(fleet: SSHFleet) -> None:
    timeouts = replace(FAST, retries=2)
    with SSHTransport(
        fleet.ssh_config_path, fleet.known_hosts_path, use_agent=False, retry_backoff_s=0.01
    ) as t:
        dropped = node_error(t, "drop", "unreachable", timeouts=timeouts)
        unknown = node_error(t, "unknown", "host-key-unknown", timeouts=timeouts)
    assert isinstance(dropped, ConnectionClosedError) and dropped.attempts == 3
    assert dropped.phase == "the SSH banner"
    assert unknown.attempts == 1  # a host key problem is never retried


# ------------------------------------------------------------------ the paramiko adapter


def test_paramiko_adapter_can_wait_for_an_exit_status_with_a_deadline() -> None:
    """``wait_exit_status`` relies on ``Channel.status_event``; without it, it polls."""
    channel = paramiko.Channel(0)
    assert isinstance(channel.status_event, threading.Event), "paramiko changed Channel"
    started = time.monotonic()
    assert not wait_exit_status(channel, 0.05)
    assert time.monotonic() - started < 1
    channel.status_event.set()
    assert wait_exit_status(channel, 0.05)


def test_paramiko_adapter_keeps_invoke_out_of_start_up() -> None:
    """``import vlcalc.transport.ssh`` must not import invoke (~55 ms of start-up); a ``Match
    exec`` config works without it (vlcalc runs the command itself).  A fresh interpreter."""
    code = (
        "import sys\n"
        "import vlcalc.transport.ssh\n"
        "assert 'invoke' not in sys.modules, 'invoke imported at start-up'\n"
        "from vlcalc.transport.ssh.config import read_ssh_config, resolve\n"
        "import tempfile, os\n"
        "path = os.path.join(tempfile.mkdtemp(), 'config')\n"
        "open(path, 'w').write('Match exec true\\n  Port 2200\\n')\n"
        "assert resolve(read_ssh_config(path, None), 'x', None, None, None).port == 2200\n"
        "assert 'invoke' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@ssh
def test_a_locked_known_hosts_file_holds_accept_new_only_until_the_node_deadline(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    import fcntl

    known = tmp_path / "known_hosts"
    shutil.copy(fleet.known_hosts_path, known)
    timeouts = replace(FAST, node_s=1.0)
    with (
        open(known, "a") as held,
        SSHTransport(fleet.ssh_config_path, known, accept_new=True, use_agent=False) as t,
    ):
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as another ssh or vlcalc process would
        started = time.monotonic()
        error = finishes_within(5, raised(lambda: run(t, "unknown", timeouts=timeouts)))
        waited = time.monotonic() - started
    assert isinstance(error, NodeTimeoutError) and error.node_deadline
    assert error.phase == f"waiting for the lock of {known}"
    assert 0.9 <= waited < 2.0
    assert fleet.known_hosts_line("unknown") not in known.read_text()


def route_resolver(text: str) -> Callable[[str, int | None, str | None], Endpoint]:
    local = Local.current()
    config = Config([parse_text(text, "<test>", local)], local)

    def resolver(host: str, port: int | None, user: str | None) -> Endpoint:
        return resolve(config, host, port, user, None, known_hosts_path="/dev/null")

    return resolver


def test_jump_routes_that_end_are_allowed_and_loops_refused() -> None:
    resolver = route_resolver("Host b\n  ProxyJump none\nHost *\n  ProxyJump b\n")
    check_jump_route(resolver("node", None, None), resolver)
    # An explicit chain through the same host twice ends (OpenSSH allows it too).
    explicit = route_resolver("Host node\n  ProxyJump b,b\n")
    check_jump_route(explicit("node", None, None), explicit)

    looping = route_resolver("Host *\n  ProxyJump b\n")
    with pytest.raises(JumpLoopError) as caught:
        check_jump_route(looping("node", None, None), looping)
    assert caught.value.chain == ("b", "b") and caught.value.kind == "unreachable"

    chain = "".join(f"Host h{i}\n  ProxyJump h{i + 1}\n" for i in range(12))
    long = route_resolver(chain)
    with pytest.raises(JumpLoopError) as too_long:
        check_jump_route(long("h0", None, None), long)
    assert too_long.value.chain[:3] == ("h1", "h2", "h3")
    assert too_long.value.message.startswith(f"ProxyJump route longer than {MAX_JUMPS} hosts")


def test_node_error_hierarchy() -> None:
    # The constructor the scan and the probe runner use stays valid.
    plain = NodeError("probe-failed", "exit 3", node="n1")
    assert (plain.kind, plain.message, str(plain), plain.retryable) == (
        "probe-failed",
        "exit 3",
        "n1: exit 3",
        False,
    )
    retryable = {
        cls.__name__
        for cls in (
            ConnectError,
            ConnectTimeoutError,
            ConnectionClosedError,
            NameLookupRetryError,
            NameLookupError,
            ConnectionLostError,
            NodeTimeoutError,
            AuthError,
            HostKeyUnknownError,
            HostKeyChangedError,
            JumpLoopError,
            OutputTooLargeError,
        )
        if cls.retryable
    }
    assert retryable == {
        "ConnectError",
        "ConnectTimeoutError",
        "ConnectionClosedError",
        "NameLookupRetryError",
    }


# ------------------------------------------------------------------ OpenSSH semantics, real sshd

RELAY = """import os, socket, sys, threading
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def upstream():
    while True:
        data = os.read(0, 65536)
        if not data:
            sock.shutdown(socket.SHUT_WR)
            return
        sock.sendall(data)
threading.Thread(target=upstream, daemon=True).start()
while True:
    data = sock.recv(65536)
    if not data:
        break
    os.write(1, data)
"""


def node_block(fleet: SSHFleet, node: str, alias: str, *extra: str, key: bool = True) -> str:
    """A ``Host alias`` block reaching fleet node ``node``, plus ``extra`` lines."""
    lines = [
        f"Host {alias}",
        "  HostName 127.0.0.1",
        f"  Port {fleet.node(node).port}",
        f"  User {fleet.user}",
    ]
    if key:
        lines.append(f"  IdentityFile {fleet.user_key_path}")
    return "\n".join([*lines, *(f"  {line}" for line in extra)]) + "\n"


@ssh
def test_proxycommand_carries_the_connection_with_tokens_expanded(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY)
    record = tmp_path / "argv"
    command = f'sh -c \'echo "$*" > {record}; exec {sys.executable} {relay} "$0" "$1"\' %h %p'
    config = tmp_path / "config"
    config.write_text(node_block(fleet, "node01", "pc", f"ProxyCommand {command}"))
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        result = run(t, "pc")
    assert result.stdout == document("node01")
    assert record.read_text().split() == [str(fleet.node("node01").port)]  # "$*" after $0


@ssh
def test_a_failing_proxycommand_is_unreachable_with_its_stderr(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text(
        node_block(fleet, "node01", "pc", "ProxyCommand sh -c 'echo no route to %h >&2; exit 7'")
    )
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        error = finishes_within(5, raised(lambda: run(t, "pc")))
    assert error.kind == "unreachable"
    assert "exited with status 7" in error.message
    assert "no route to 127.0.0.1" in error.message


@ssh
def test_a_proxycommand_that_never_answers_ends_at_the_node_deadline(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text(node_block(fleet, "node01", "pc", "ProxyCommand sleep 30"))
    timeouts = replace(FAST, banner_s=5, node_s=1.0)
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        started = time.monotonic()
        error = finishes_within(5, raised(lambda: run(t, "pc", timeouts=timeouts)))
    assert isinstance(error, NodeTimeoutError) and error.node_deadline
    assert time.monotonic() - started < 3


@ssh
def test_include_inside_a_host_block_reaches_the_node(fleet: SSHFleet, tmp_path: Path) -> None:
    parts = tmp_path / "conf.d"
    parts.mkdir()
    (parts / "10-node.conf").write_text(node_block(fleet, "node02", "included"))
    (parts / "20-later.conf").write_text("Host included\n  Port 1\n")  # first value wins
    config = tmp_path / "config"
    config.write_text(f"Host incl*\n  Include {parts}/*.conf\n")
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        assert run(t, "included").stdout == document("node02")


@ssh
def test_certificate_file_logs_in_with_a_user_certificate(fleet: SSHFleet, tmp_path: Path) -> None:
    key = tmp_path / "id_cert_only"
    generate_ed25519(key, "not in authorized_keys")
    certificate = sign_user_key(fleet.user_ca_path, key, str(fleet.user))
    moved = tmp_path / "elsewhere-cert.pub"
    certificate.rename(moved)
    config = tmp_path / "config"
    config.write_text(
        node_block(fleet, "node03", "cert", f"IdentityFile {key}", f"CertificateFile {moved}",
                   key=False)
        + node_block(fleet, "node03", "nocert", f"IdentityFile {key}", key=False)
    )  # fmt: skip
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        assert run(t, "cert").stdout == document("node03")
        refused = node_error(t, "nocert", "auth-failed")
    assert isinstance(refused, AuthError) and refused.tried == (
        f"{key} (ssh-ed25519 {fingerprint_of(Path(f'{key}.pub').read_text())})",
    )
    # OpenSSH also finds KEY-cert.pub beside the key without a CertificateFile line.
    moved.rename(certificate)
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        assert run(t, "nocert").stdout == document("node03")


@ssh
def test_identity_agent_names_the_agent_socket(
    fleet: SSHFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, sock = start_ssh_agent(tmp_path)
    try:
        ssh_add(sock, fleet.user_key_path)
        monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
        config = tmp_path / "config"
        config.write_text(
            node_block(fleet, "node04", "agent", f"IdentityAgent {sock}", key=False)
            + node_block(fleet, "node04", "noagent", "IdentityAgent none", key=False)
        )
        with SSHTransport(config, fleet.known_hosts_path) as t:
            assert run(t, "agent").stdout == document("node04")
            monkeypatch.setenv("SSH_AUTH_SOCK", sock)
            error = node_error(t, "noagent", "auth-failed")
        assert isinstance(error, AuthError) and error.tried == ()
    finally:
        agent.terminate()
        agent.wait()


@ssh
def test_every_known_hosts_file_is_read_and_names_are_lower_cased(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    port = fleet.node("node05").port
    public = fleet.known_hosts_line("node05").split(maxsplit=1)[1]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    second = tmp_path / "second_known_hosts"
    second.write_text(f"[LocalHost]:{port} {public}\n")
    global_file = tmp_path / "global_known_hosts"
    global_file.write_text(f"node05-alias {public}\n")
    config = tmp_path / "config"
    config.write_text(
        node_block(fleet, "node05", "second", f"UserKnownHostsFile {empty} {second}").replace(
            "HostName 127.0.0.1", "HostName LOCALHOST"
        )
        + node_block(
            fleet,
            "node05",
            "global",
            f"UserKnownHostsFile {empty}",
            f"GlobalKnownHostsFile {global_file}",
            "HostKeyAlias Node05-Alias",
        )
    )
    with SSHTransport(config, use_agent=False) as t:
        assert run(t, "second").stdout == document("node05")
        assert run(t, "global").stdout == document("node05")


@ssh
def test_strict_host_key_checking_no_in_ssh_config_does_not_turn_checking_off(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.write_text(node_block(fleet, "unknown", "lax", "StrictHostKeyChecking no"))
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        error = node_error(t, "lax", "host-key-unknown")
    assert "StrictHostKeyChecking no is not honoured" in error.message
    assert fleet.known_hosts_line("unknown") not in fleet.known_hosts_path.read_text()


@ssh
def test_an_unsupported_option_refuses_only_its_host(fleet: SSHFleet, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        node_block(fleet, "node06", "smartcard", "PKCS11Provider /usr/lib/opensc-pkcs11.so")
        + node_block(fleet, "node06", "plain")
    )
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        error = node_error(t, "smartcard", "unreachable")
        assert run(t, "plain").stdout == document("node06")
    assert isinstance(error, UnsupportedConfigError)
    assert (error.option, error.value, error.path) == (
        "pkcs11provider",
        "/usr/lib/opensc-pkcs11.so",
        str(config),
    )
    assert error.node == "smartcard" and "--transport openssh" in str(error)


@ssh
def test_inventory_ssh_options_override_ssh_config(fleet: SSHFleet, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(node_block(fleet, "node07", "wrongport", "Port 1"))
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        result = run(t, "wrongport", ssh_options=(("port", str(fleet.node("node07").port)),))
    assert result.stdout == document("node07")


@ssh
def test_connect_timeout_of_ssh_config_limits_the_connect(fleet: SSHFleet, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(node_block(fleet, "silent", "slow", "ConnectTimeout 1"))
    timeouts = replace(FAST, connect_s=5, banner_s=5, node_s=10)
    with SSHTransport(config, fleet.known_hosts_path, use_agent=False) as t:
        started = time.monotonic()
        error = node_error(t, "slow", "timeout", timeouts=timeouts)
    assert isinstance(error, NodeTimeoutError) and error.limit_s == 1
    assert time.monotonic() - started < 3


def test_known_hosts_patterns_match_as_openssh(tmp_path: Path) -> None:
    """Only ``*`` and ``?`` are wildcards (``[...]`` is a literal: ``[host]:port``), and a
    ``!negated`` pattern that matches takes the whole line away (OpenSSH's match_hostname)."""
    import base64

    a, b, c = (
        base64.b64encode(b"\0\0\0\x0bssh-ed25519" + bytes([n]) * 36).decode() for n in (1, 2, 3)
    )
    path = tmp_path / "known_hosts"
    path.write_text(
        f"*.lab,!bad.lab ssh-ed25519 {a}\n[127.0.0.1]:* ssh-ed25519 {b}\n[a-z]x ssh-ed25519 {c}\n"
    )
    index = KnownHostsFile.load(str(path))
    assert [blob for _, blob in index.lookup("good.lab")] == [base64.b64decode(a)]
    assert index.lookup("bad.lab") == []
    assert [blob for _, blob in index.lookup("[127.0.0.1]:2222")] == [base64.b64decode(b)]
    assert index.lookup("ax") == []
    assert [blob for _, blob in index.lookup("[a-z]x")] == [base64.b64decode(c)]


@ssh
def test_a_host_known_under_another_key_type_has_a_changed_key(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    """As OpenSSH: the server offers none of the known types, so its key changed; --accept-new
    must not add a second key type next to the known one."""
    import base64

    rsa = paramiko.RSAKey.generate(2048)
    known = tmp_path / "known_hosts"
    blob = base64.b64encode(rsa.asbytes()).decode()
    line = f"[127.0.0.1]:{fleet.node('unknown').port} ssh-rsa {blob}\n"
    known.write_text(line)
    with SSHTransport(fleet.ssh_config_path, known, accept_new=True, use_agent=False) as t:
        changed = node_error(t, "unknown", "host-key-changed")
    assert changed.expected_fingerprints == (str(rsa.fingerprint),)  # type: ignore[attr-defined]
    assert known.read_text() == line


@ssh
def test_accept_new_that_cannot_write_known_hosts_is_one_node_error(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    known = tmp_path / "file" / "known_hosts"  # under a regular file: cannot be created
    with SSHTransport(fleet.ssh_config_path, known, accept_new=True, use_agent=False) as t:
        failure = node_error(t, "unknown", "unreachable")
    assert failure.message.startswith("--accept-new cannot add the host key of [127.0.0.1]:")
    assert failure.message.endswith("the node was not probed")


@ssh
def test_a_jump_channel_that_times_out_leaves_the_others_running(
    fleet: SSHFleet, transport: SSHTransport
) -> None:
    """One node's channel through the bastion times out (the bastion's TCP connect to a port
    that drops SYNs) while another node's session runs through the same bastion connection:
    only the first fails.  (vlcalc used to close the shared connection then: under load, a
    random node of a scan through a bastion lost its session, "no exit status".)"""
    slow = HEALTHY[5]
    (fleet.node(slow).directory / "delay_s").write_text("2")
    fleet.set_behaviour(slow, "ok-slow")
    hurried = Timeouts(connect_s=0.3, banner_s=2, auth_s=3, exec_s=5, node_s=10, retries=0)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(run, transport, f"{slow}-via-bastion")
            time.sleep(0.8)  # its session runs through the bastion connection now
            with pytest.raises(NodeError) as caught:
                transport.run(
                    Target(
                        "blackhole",
                        "127.0.0.1",
                        port=fleet.node("blackhole").port,
                        ssh_options=(("proxyjump", "bastion"),),
                    ),
                    COMMAND,
                    PROBE,
                    timeouts=hurried,
                    max_stdout=1 << 20,
                )
            failure = caught.value
            assert failure.kind == "timeout", failure.message
            assert "through jump host bastion" in failure.message, failure.message
            assert running.result().stdout == document(slow)
    finally:
        fleet.set_behaviour(slow, "ok")
