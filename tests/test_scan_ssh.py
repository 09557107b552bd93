"""`vlcalc scan` and `vlcalc check` end to end: the real CLI process, real paramiko, real OpenSSH
sshd nodes on 127.0.0.1 that each answer with their own probe document (after checking that what
they were sent is the real probe)."""

from __future__ import annotations

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

from vlcalc.probe import probe_source

from fleet_fixtures import hardware_doc, probe_doc
from sshfleet import NodeSpec, SSHFleet

pytestmark = pytest.mark.ssh


def doc_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def write_inventory(
    fleet: SSHFleet,
    path: Path,
    groups: dict[str, list[str]],
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    lines = [
        "all:",
        "  vars:",
        f"    ansible_ssh_private_key_file: {fleet.user_key_path}",
        "    ansible_host: 127.0.0.1",
        f"    ansible_user: {fleet.user}",
        "  children:",
    ]
    for group, names in groups.items():
        lines += [f"    {group}:", "      hosts:"]
        for name in names:
            port = fleet.node(name).port
            lines.append(f"        {name}:")
            lines.append(f"          ansible_port: {port}")
            for key, value in (extra or {}).get(name, {}).items():
                lines.append(f"          {key}: {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def vlcalc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": os.environ.get("VLCALC_TEST_HOME", "/nonexistent-home")}
    env.pop("SSH_AUTH_SOCK", None)
    return subprocess.run(
        [sys.executable, "-m", "vlcalc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


FLEET_SPECS = [
    NodeSpec("a64fx-01", doc_bytes(hardware_doc("a64fx-01", "a64fx"))),
    NodeSpec("a64fx-02", doc_bytes(hardware_doc("a64fx-02", "a64fx"))),
    NodeSpec("sve384-01", doc_bytes(hardware_doc("sve384-01", "vl384"))),
    NodeSpec("graviton3-01", doc_bytes(hardware_doc("graviton3-01", "graviton3"))),
    NodeSpec("altra-01", doc_bytes(hardware_doc("altra-01", "altra"))),
    NodeSpec(
        "nokvm-01",
        doc_bytes(
            probe_doc(
                "nokvm-01",
                None,
                error=(
                    "permission-denied",
                    "/dev/kvm: permission denied; add the user to group kvm",
                ),
            )
        ),
    ),
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHFleet]:
    specs = [
        *FLEET_SPECS,
        NodeSpec("unknown-key", doc_bytes(hardware_doc("u", "a64fx")), host_key="unknown"),
        NodeSpec("changed-key", doc_bytes(hardware_doc("c", "a64fx")), host_key="changed"),
        NodeSpec("wrong-user-key", doc_bytes(hardware_doc("w", "a64fx")), authorized=False),
        NodeSpec("closed", kind="closed"),
        NodeSpec("silent", kind="silent"),
        NodeSpec("hangs", doc_bytes(hardware_doc("h", "a64fx")), behaviour="hang"),
        NodeSpec("exits-3", behaviour="fail", exit_status=3, stderr=b"probe: boom\n"),
        NodeSpec("garbage", behaviour="garbage"),
        NodeSpec("oversized", behaviour="oversized"),
        NodeSpec("needs-password", behaviour="sudo-fail"),
        NodeSpec("no-python", behaviour="no-python"),
    ]
    with SSHFleet(
        tmp_path_factory.mktemp("fleet"), specs, expected_stdin=probe_source(), bastion=True
    ) as running:
        yield running


HEALTHY = {"hpc": ["a64fx-01", "a64fx-02", "sve384-01"], "cloud": ["graviton3-01"]}


def test_healthy_heterogeneous_fleet(fleet: SSHFleet, tmp_path: Path) -> None:
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", HEALTHY)
    result = vlcalc(
        "scan", str(inventory), "--known-hosts", str(fleet.known_hosts_path), "-f", "json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {n["name"]: n["vls"] for n in report["nodes"]} == {
        "a64fx-01": [128, 256, 512],
        "a64fx-02": [128, 256, 512],
        "sve384-01": [128, 256, 384, 512],
        "graviton3-01": [128, 256],
    }
    assert report["cluster"]["vls"] == [128, 256] and report["complete"]
    # graviton3-01 stops at 256, below the 384 divergence: it is the binding limit.
    assert [(lim["kind"], lim["vl"], lim["nodes"]) for lim in report["limits"]] == [
        ("max-vl", 256, ["graviton3-01"])
    ]


def test_every_format_and_per_group(fleet: SSHFleet, tmp_path: Path) -> None:
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", HEALTHY)
    kh = str(fleet.known_hosts_path)
    table = vlcalc("scan", str(inventory), "--known-hosts", kh)
    assert table.returncode == 0 and "Cluster VL set: 128,256" in table.stdout
    assert "max-vl" in table.stdout and "graviton3-01 stops at VL 256" in table.stdout
    assert vlcalc("scan", str(inventory), "--known-hosts", kh, "-f", "qemu").stdout == (
        "-cpu host,sve=on,sve128=on,sve256=on\n"
    )
    assert (
        "name='sve256'"
        in vlcalc("scan", str(inventory), "--known-hosts", kh, "-f", "libvirt").stdout
    )
    assert vlcalc("scan", str(inventory), "--known-hosts", kh, "-f", "kvm").stdout.startswith(
        "KVM_REG_ARM64_SVE_VLS = 0x3 "
    )
    assert (
        "| sve384-01 |"
        in vlcalc("scan", str(inventory), "--known-hosts", kh, "-f", "markdown").stdout
    )
    grouped = json.loads(
        vlcalc("scan", str(inventory), "--known-hosts", kh, "--per-group", "-f", "json").stdout
    )
    answers = {g["group"]: g["report"]["cluster"]["vls"] for g in grouped["groups"]}
    assert answers == {"cloud": [128, 256], "hpc": [128, 256], "all": [128, 256]}
    limited = json.loads(
        vlcalc(
            "scan", str(inventory), "--known-hosts", kh, "--limit", "a64fx-*", "-f", "json"
        ).stdout
    )
    assert limited["cluster"]["vls"] == [128, 256, 512]


def test_failures_are_values_with_their_kinds(fleet: SSHFleet, tmp_path: Path) -> None:
    broken = [
        "unknown-key",
        "changed-key",
        "wrong-user-key",
        "closed",
        "silent",
        "hangs",
        "exits-3",
        "garbage",
        "oversized",
        "no-python",
        "nokvm-01",
    ]
    inventory = write_inventory(
        fleet, tmp_path / "inv.yaml", {"good": ["a64fx-01", "graviton3-01"], "bad": broken}
    )
    save = tmp_path / "scan.json"
    started = time.monotonic()
    result = vlcalc(
        "scan",
        str(inventory),
        "--known-hosts",
        str(fleet.known_hosts_path),
        "--timeout",
        "4",
        "--connect-timeout",
        "2",
        "--retries",
        "1",
        "--save",
        str(save),
        "-f",
        "json",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 4, result.stderr  # incomplete
    assert "11 of 13 nodes could not be probed" in result.stderr
    report = json.loads(result.stdout)
    kinds = {n["name"]: (n["error"] or {}).get("kind") for n in report["nodes"]}
    assert kinds == {
        "a64fx-01": None,
        "graviton3-01": None,
        "unknown-key": "host-key-unknown",
        "changed-key": "host-key-changed",
        "wrong-user-key": "auth-failed",
        "closed": "unreachable",
        "silent": "timeout",
        "hangs": "timeout",
        "exits-3": "probe-failed",
        "garbage": "bad-output",
        "oversized": "bad-output",
        "no-python": "no-python",
        "nokvm-01": "permission-denied",
    }
    messages = {n["name"]: n["error"]["message"] for n in report["nodes"] if n["error"]}
    assert "SHA256:" in messages["unknown-key"] and "SHA256:" in messages["changed-key"]
    assert "probe: boom" in messages["exits-3"]
    # The two healthy nodes still give their answer; the stuck ones did not stall the scan.
    assert report["cluster"]["vls"] == [128, 256]
    assert elapsed < 30
    # --save wrote every node, failed ones included, and report reproduces the same answer.
    saved = json.loads(save.read_text())
    assert [n["name"] for n in saved["nodes"]] == ["a64fx-01", "graviton3-01", *broken]
    again = vlcalc("report", str(save), "-f", "json")
    assert again.returncode == 4
    assert json.loads(again.stdout) == report


def test_become_without_passwordless_sudo(fleet: SSHFleet, tmp_path: Path) -> None:
    inventory = write_inventory(
        fleet,
        tmp_path / "inv.yaml",
        {"g": ["needs-password"]},
        {"needs-password": {"ansible_become": True}},
    )
    result = vlcalc(
        "scan", str(inventory), "--known-hosts", str(fleet.known_hosts_path), "-f", "json"
    )
    assert result.returncode == 4
    node = json.loads(result.stdout)["nodes"][0]
    assert node["error"]["kind"] == "sudo-failed"
    assert (fleet.node("needs-password").last_command() or "").startswith("sudo -n -- python3 -")


def test_accept_new_records_unknown_keys_but_refuses_changed(
    fleet: SSHFleet, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(fleet.known_hosts_path.read_text())
    before = known.read_text().count("\n")
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", {"g": ["unknown-key", "changed-key"]})
    first = vlcalc(
        "scan", str(inventory), "--known-hosts", str(known), "--accept-new", "-f", "json"
    )
    kinds = [
        n["status"] if not n["error"] else n["error"]["kind"]
        for n in json.loads(first.stdout)["nodes"]
    ]
    assert kinds == ["ok", "host-key-changed"]
    assert known.read_text().count("\n") == before + 1  # the new host's key, and nothing else
    second = vlcalc("scan", str(inventory), "--known-hosts", str(known), "-l", "unknown-key")
    assert second.returncode == 0, second.stderr


def test_proxyjump_through_a_bastion(fleet: SSHFleet, tmp_path: Path) -> None:
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(
        "all:\n  hosts:\n    a64fx-01-via-bastion:\n    graviton3-01-via-bastion:\n"
    )
    result = vlcalc(
        "scan",
        str(inventory),
        "--ssh-config",
        str(fleet.ssh_config_path),
        "--known-hosts",
        str(fleet.known_hosts_path),
        "-f",
        "json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cluster"]["vls"] == [128, 256]


def test_check_against_an_inventory(fleet: SSHFleet, tmp_path: Path) -> None:
    inventory = write_inventory(fleet, tmp_path / "inv.yaml", HEALTHY)
    kh = str(fleet.known_hosts_path)
    ok = vlcalc("check", "--vls", "128,256", str(inventory), "--known-hosts", kh)
    assert ok.returncode == 0, ok.stderr
    bad = vlcalc(
        "check",
        "--vls",
        "host,sve=on,sve128=on,sve256=on,sve384=off,sve512=on",  # pinned {128,256,512}
        str(inventory),
        "--known-hosts",
        kh,
        "-f",
        "json",
    )
    assert bad.returncode == 1
    verdicts = {n["name"]: n["verdict"] for n in json.loads(bad.stdout)["nodes"]}
    assert verdicts == {
        "a64fx-01": "accept",
        "a64fx-02": "accept",
        "sve384-01": "reject",
        "graviton3-01": "reject",
    }
    assert vlcalc("check", "--vls", "128", "x.json", "--verify").returncode == 2


def test_ctrl_c_still_reports_what_was_collected(fleet: SSHFleet, tmp_path: Path) -> None:
    inventory = write_inventory(
        fleet, tmp_path / "inv.yaml", {"g": ["a64fx-01", "graviton3-01", "hangs"]}
    )
    save = tmp_path / "scan.json"
    env = {**os.environ, "HOME": "/nonexistent-home"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vlcalc",
            "scan",
            str(inventory),
            "--known-hosts",
            str(fleet.known_hosts_path),
            "--save",
            str(save),
            "-f",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(4)  # the healthy nodes answer within a second or two; "hangs" never does
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 130, err
    report = json.loads(out)
    kinds = [n["status"] if not n["error"] else n["error"]["kind"] for n in report["nodes"]]
    assert kinds == ["ok", "ok", "interrupted"]
    assert json.loads(save.read_text())["interrupted"] is True


def test_fifty_node_fleet(tmp_path: Path) -> None:
    kinds = ["a64fx", "graviton3", "vl384", "graviton4"]
    specs = [
        NodeSpec(f"n{i:02d}", doc_bytes(hardware_doc(f"n{i:02d}", kinds[i % 4]))) for i in range(50)
    ]
    with SSHFleet(tmp_path / "fleet", specs, expected_stdin=probe_source()) as big:
        inventory = write_inventory(
            big, tmp_path / "inv.yaml", {"all_nodes": [s.name for s in specs]}
        )
        result = vlcalc(
            "scan",
            str(inventory),
            "--known-hosts",
            str(big.known_hosts_path),
            "-f",
            "json",
            "--forks",
            "16",
        )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["nodes"]) == 50 and all(n["status"] == "ok" for n in report["nodes"])
    assert report["cluster"]["vls"] == [128]
