"""Truth tests against real arm64 KVM: the probe and the kernel rule on an emulated fleet.

Each node's SVE set is chosen on the QEMU command line, so the answer is known exactly; the probe
must report it, and for a few hundred candidate sets per node the kernel's verdict
(``KVM_SET_ONE_REG``) must equal :func:`vlcalc.compat.accepts`.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import paramiko
import pytest
import yaml
from labfleet import AGREEMENTS, FLEET, PROBE, LabFleet

from vlcalc.compat import accepts
from vlcalc.lab.cluster import Fleet, NodeSpec
from vlcalc.lab.errors import LabError, NodeBootError
from vlcalc.vl import VLSet

pytestmark = pytest.mark.lab

QEMU_VLS = tuple(range(128, 2049, 128))
# Beyond every node's maximum and beyond QEMU's 2048, up to the ABI's vq 512.
BEYOND_VLS = (2176, 2304, 4096, 65536)
TRIALS_PER_PROBE = 200  # the probe caps one run at 256 trials
SVE_NODES = [spec for spec in FLEET if spec.vls]


def _ids(spec: NodeSpec) -> str:
    return spec.name


def candidate_sets(host: Iterable[int], seed: int, count: int = 300) -> list[frozenset[int]]:
    """``count`` distinct sets to try on a host: the empty set, every prefix of 128..2048 and of
    the host, the host with one VL removed or added (also VLs above 2048), singletons, then random
    subsets (near the host, dense and sparse).  Deterministic for a seed."""
    hs = sorted(host)
    full = frozenset(hs)
    sets: list[frozenset[int]] = [frozenset()]
    sets += [frozenset(QEMU_VLS[:i]) for i in range(1, len(QEMU_VLS) + 1)]
    sets += [frozenset(hs[:i]) for i in range(1, len(hs) + 1)]
    sets += [full - {vl} for vl in hs]
    sets += [full | {vl} for vl in (*QEMU_VLS, *BEYOND_VLS) if vl not in full]
    sets += [frozenset({vl}) for vl in (*QEMU_VLS, *BEYOND_VLS)]
    unique = dict.fromkeys(sets)
    rng = random.Random(seed)
    for index in range(100 * count):
        if len(unique) >= count:
            break
        if index % 2 and hs:
            # Near the host: a prefix of it with one or two VLs at or below its top flipped.
            top = rng.choice(QEMU_VLS[: QEMU_VLS.index(hs[-1]) + 2])
            near = {vl for vl in hs if vl <= top}
            for vl in rng.sample([v for v in QEMU_VLS if v <= top], k=min(2, top // 128)):
                near ^= {vl}
            unique[frozenset(near)] = None
        else:
            density = rng.random()
            unique[frozenset(vl for vl in QEMU_VLS if rng.random() < density)] = None
    return list(unique)


def _spec(vls: frozenset[int]) -> str:
    return ",".join(str(vl) for vl in sorted(vls))


def test_candidate_sets_cover_the_interesting_cases() -> None:
    sets = candidate_sets({128, 256, 512}, seed=1)
    assert frozenset() in sets
    assert frozenset({128, 256}) in sets and frozenset({128, 256, 512}) in sets
    assert frozenset({128, 256, 512, 2176}) in sets
    assert len(sets) == len(set(sets)) == 300


@pytest.mark.parametrize("spec", FLEET, ids=_ids)
def test_probe_reports_the_configured_set(lab: LabFleet, spec: NodeSpec) -> None:
    doc = lab.probe(spec.name)
    assert doc["schema"] == "vlcalc.probe/1"
    assert doc["error"] is None, doc["error"]
    assert doc["arch"] == "aarch64"
    assert doc["kernel"].startswith(spec.kernel + ".")
    assert doc["kvm"]["api_version"] == 12
    if spec.vls:
        expected = VLSet.from_vls(spec.vls)
        assert doc["kvm"]["sve_cap"] == 1
        assert doc["sve"]["vls"] == expected.vls()
        assert [int(word, 16) for word in doc["sve"]["words"]] == expected.words()
    else:
        assert doc["kvm"]["sve_cap"] == 0
        assert not (doc["sve"] or {}).get("vls")


@pytest.mark.parametrize("spec", FLEET, ids=_ids)
def test_kernel_verdicts_match_the_prefix_rule(lab: LabFleet, spec: NodeSpec) -> None:
    host = VLSet.from_vls(spec.vls or ())
    candidates = candidate_sets(spec.vls or (), seed=len(spec.name) * 7919 + sum(spec.vls or ()))
    agree = 0
    disagreements: list[str] = []
    for start in range(0, len(candidates), TRIALS_PER_PROBE):
        batch = candidates[start : start + TRIALS_PER_PROBE]
        doc = lab.probe(spec.name, [_spec(vls) for vls in batch])
        assert doc["error"] is None, doc["error"]
        assert [trial["spec"] for trial in doc["trials"]] == [_spec(vls) for vls in batch]
        for vls, trial in zip(batch, doc["trials"]):
            model = accepts(host, VLSet.from_vls(vls))
            if trial["accepted"] is model:
                agree += 1
            else:
                disagreements.append(f"{{{_spec(vls)}}}: kernel {trial}, model {model}")
            if spec.vls and not trial["accepted"]:
                # A rejection on an SVE host is the kernel's EINVAL, never something else.
                assert trial["errno"] == "EINVAL", trial
    AGREEMENTS.append(f"{spec.name}: kernel and model agree on {agree}/{len(candidates)} sets")
    assert not disagreements, "\n".join(disagreements)
    assert agree == len(candidates) >= 250


@pytest.mark.parametrize("name", ["vl4", "a64fx"])  # one node per kernel line
def test_unprivileged_user_gets_permission_denied(lab: LabFleet, name: str) -> None:
    doc = lab.probe(name, user="probe")
    assert doc["error"]["kind"] == "permission-denied", doc["error"]
    assert doc["error"]["errno"] == "EACCES"


def test_sudo_lets_the_unprivileged_user_probe(lab: LabFleet) -> None:
    doc = lab.probe("vl4", ["128,256"], user="probe", sudo=True)
    assert doc["error"] is None
    assert doc["sve"]["vls"] == [128, 256, 384, 512]
    assert doc["trials"][0]["accepted"] is True


@pytest.mark.parametrize("spec", FLEET, ids=_ids)
def test_kernel_line_and_kvm_mode(lab: LabFleet, spec: NodeSpec) -> None:
    console = lab.nodes[spec.name].console.read_text(errors="replace")
    initialised = re.search(r"kvm \[\d+\]: (.*)mode initialized successfully", console)
    assert initialised, console[-2000:]
    # 6.1 says "VHE", "Hyp" or "Protected nVHE"; 6.12 "VHE", "Hyp nVHE" or "Protected hVHE".
    mode = initialised.group(1)
    assert (mode == "VHE ") is (spec.kvm_mode == "vhe"), initialised.group(0)
    assert mode.startswith("Protected") is (spec.kvm_mode == "protected"), initialised.group(0)
    done = lab.ssh(spec.name, "uname -r; uname -m")
    assert done.returncode == 0
    release, machine = done.stdout.decode().split()
    assert release.startswith(spec.kernel + ".") and machine == "aarch64"


def test_strict_host_key_checking_refuses_unknown_and_wrong_keys(
    lab: LabFleet, tmp_path: Path
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    assert lab.ssh("vl4", "true", known_hosts=empty).returncode == 255
    # Another node's key under this node's address: a changed host key.
    other = lab.nodes["a64fx"].host_key
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{lab.nodes['vl4'].port} {other}\n")
    refused = lab.ssh("vl4", "true", known_hosts=wrong)
    assert refused.returncode == 255
    assert b"HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert lab.ssh("vl4", "true").returncode == 0


def test_paramiko_talks_to_dropbear_with_known_hosts(lab: LabFleet) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            "127.0.0.1",
            port=lab.nodes["a64fx"].port,
            username="root",
            key_filename=str(lab.key),
            look_for_keys=False,
            allow_agent=False,
            timeout=20,
            banner_timeout=20,
            auth_timeout=20,
        )
        stdin, stdout, stderr = client.exec_command("python3 - --try ''", timeout=60)
        stdin.write(PROBE.read_bytes())
        stdin.channel.shutdown_write()
        output = stdout.read()
        assert stdout.channel.recv_exit_status() == 0, stderr.read()
    finally:
        client.close()
    assert b'"vls":[128,256,512]' in output


def test_cli_up_and_down(tmp_path: Path) -> None:
    """``python -m vlcalc.lab up`` boots, writes a usable inventory, and ``down`` ends it all."""
    workdir = tmp_path / "fleet"
    up = subprocess.Popen(
        [sys.executable, "-m", "vlcalc.lab", "up", "--node", "solo=128,256", "--dir", str(workdir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert up.stdout is not None
        lines = [up.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("inventory: ") and lines[1].startswith("known_hosts: ")
        inventory = yaml.safe_load(Path(lines[0].split(": ", 1)[1].strip()).read_text())
        host = inventory["all"]["hosts"]["solo"]
        pid = int((workdir / "solo.pid").read_text())
        done = subprocess.run(
            [
                "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={lines[1].split(': ', 1)[1].strip()}",
                "-i", host["ansible_ssh_private_key_file"], "-p", str(host["ansible_port"]),
                "root@127.0.0.1", "cat /proc/sys/abi/sve_default_vector_length",
            ],
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        # A second fleet in the same directory would orphan the first one's QEMUs.
        with pytest.raises(LabError, match="already running"):
            Fleet([NodeSpec("again", None)], workdir).start()
        down = subprocess.run(
            [sys.executable, "-m", "vlcalc.lab", "down", "--dir", str(workdir)],
            capture_output=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert down.returncode == 0
        assert up.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/cmdline").exists() and time.monotonic() < deadline:
            if not Path(f"/proc/{pid}/cmdline").read_bytes():
                break  # a zombie waiting for its reaper: the QEMU itself is gone
            time.sleep(0.1)
        cmdline = Path(f"/proc/{pid}/cmdline")
        assert not cmdline.exists() or not cmdline.read_bytes()
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=30)
        if up.stdout is not None:
            up.stdout.close()


def test_a_node_that_cannot_boot_fails_with_its_console_tail(tmp_path: Path) -> None:
    # rdinit=/bin/false: init exits at once, the kernel panics, and -no-reboot ends QEMU.
    spec = NodeSpec("broken", frozenset({128}), cmdline=("rdinit=/bin/false",))
    fleet = Fleet([spec], tmp_path, boot_timeout_s=120)
    with pytest.raises(NodeBootError) as caught:
        fleet.start()
    assert caught.value.node == "broken"
    assert "Kernel panic" in caught.value.console_tail
    assert fleet.nodes == []
    assert not (tmp_path / "lab.json").exists()


def test_python3_on_the_nodes_is_python3_minimal_plus_json(lab: LabFleet) -> None:
    # The probe must run on a bare python3-minimal; a lab python with more would hide a slip.
    done = lab.ssh("vl4", "python3 -c 'import json, array, fcntl, struct; import shutil'")
    assert done.returncode == 1
    assert b"No module named 'shutil'" in done.stderr
    assert lab.ssh("vl4", "python3 -c 'import ctypes'").returncode == 1


@pytest.mark.ansible
def test_ansible_reaches_the_fleet_through_the_inventory(lab: LabFleet, tmp_path: Path) -> None:
    assert shutil.which("ansible"), "ansible-core is a test dependency: pip install -e .[test]"
    done = subprocess.run(
        [
            # Two nodes, one per kernel line, through the inventory's groups: each Ansible module
            # run costs seconds of emulated Python, so the whole fleet would add a minute.
            "ansible", "-i", str(lab.fleet.inventory_path), "kernel_6_1:kernel_6_12:&kvm_vhe",
            "-l", "vl4,a64fx", "-m", "ping",
            # Ansible's modules need more stdlib than the probe; the wrapper adds it.
            "-e", "ansible_python_interpreter=/usr/bin/python3-ansible",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "ANSIBLE_HOME": str(tmp_path), "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == 2, done.stdout
