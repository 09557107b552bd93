"""vlcalc's QEMU settings against real QEMU + KVM, inside emulated arm64 nodes (labqemu.py).

- QMP ``query-cpu-model-expansion`` on ``host`` for a few hundred property sets per node must
  equal :func:`vlcalc.qemu.resolve_kvm` for that node's KVM set (or both refuse);
- a tiny assembly guest started with the exact ``-cpu`` that ``vlcalc report -f qemu`` prints
  enumerates its VLs (ZCR_EL1.LEN + RDVL): the cluster set on every node;
- live migration of that guest to a node with another host set keeps its set; with plain
  ``-cpu host`` the guest's set changes under it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from labfleet import LabFleet
from labqemu import (
    GUEST_SOURCE,
    QEMU_AGREEMENTS,
    QEMU_FLEET,
    QEMU_SVE_NODES,
    copy_from,
    copy_to,
    drive,
    property_sets,
)

from vlcalc.lab import inner
from vlcalc.lab.cluster import NodeSpec
from vlcalc.qemu import QemuError, pinned_props, resolve_kvm
from vlcalc.vl import VLSet

pytestmark = pytest.mark.lab

SPECS = {spec.name: spec for spec in QEMU_FLEET}
GUEST = f"{inner.NODE_DIR}/guest.bin"
STATE = f"{inner.NODE_DIR}/state"
# The guest prints a line about every 1/8 s: wait for this many, so at least one full round ran
# (the first line on a migration target may be the tail of a line begun on the source).
GUEST_LINES = 3


def _host(name: str) -> VLSet:
    return VLSet.from_vls(SPECS[name].vls or ())


def _ids(spec: NodeSpec) -> str:
    return spec.name


@pytest.fixture(scope="module")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inner.build_guest(GUEST_SOURCE, tmp_path_factory.mktemp("guest"))


@dataclass(frozen=True)
class ClusterAnswer:
    """What vlcalc says for the SVE nodes: the ``-cpu`` value and ``<cpu>`` XML users paste
    (``vlcalc report -f qemu`` / ``-f libvirt`` of a saved scan) and the scan's JSON report."""

    cpu: str
    libvirt_xml: str
    report: Any

    @property
    def vls(self) -> VLSet:
        return VLSet.from_vls(self.report["cluster"]["vls"])


@pytest.fixture(scope="module")
def cluster(qemu_lab: LabFleet, tmp_path_factory: pytest.TempPathFactory) -> ClusterAnswer:
    saved = tmp_path_factory.mktemp("scan") / "scan.json"
    env = {**os.environ, "HOME": "/nonexistent-home"}
    env.pop("SSH_AUTH_SOCK", None)
    scan = subprocess.run(
        [
            sys.executable, "-m", "vlcalc", "scan", str(qemu_lab.fleet.inventory_path),
            "--known-hosts", str(qemu_lab.known_hosts), "--limit", ",".join(QEMU_SVE_NODES),
            "-f", "json", "--timeout", "180", "--connect-timeout", "60", "--save", str(saved),
        ],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    printed = {}
    for fmt in ("qemu", "libvirt"):
        report = subprocess.run(
            [sys.executable, "-m", "vlcalc", "report", str(saved), "-f", fmt],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        printed[fmt] = report.stdout
    return ClusterAnswer(
        inner.cpu_from_report(printed["qemu"]), printed["libvirt"], json.loads(scan.stdout)
    )


def _cpu_props(cpu: str) -> dict[str, str]:
    model, *parts = cpu.split(",")
    assert model == "host", cpu
    return dict(part.split("=", 1) for part in parts)


# ---------------------------------------------------------------------------------------------
# QMP query-cpu-model-expansion against the model


@pytest.mark.parametrize("spec", QEMU_FLEET, ids=_ids)
def test_qmp_expansion_matches_the_model(qemu_lab: LabFleet, spec: NodeSpec) -> None:
    host = VLSet.from_vls(spec.vls or ())
    sets = property_sets(seed=sum(map(ord, spec.name)))
    steps = [inner.expansion_step(props) for props in sets] + [{"execute": "quit"}]
    result = drive(qemu_lab, spec.name, inner.inner_qemu_argv("host", paused=True), steps)
    assert result["error"] is None, result
    replies = result["replies"][: len(sets)]
    assert len(replies) == len(sets)
    agree = refused = 0
    disagreements: list[str] = []
    for props, reply in zip(sets, replies):
        qemu = inner.expanded_set(reply)
        try:
            model: VLSet | str = resolve_kvm(props, host)
        except QemuError as exc:
            model = f"refused: {exc}"
        if isinstance(qemu, str) and isinstance(model, str):
            agree += 1
            refused += 1
        elif qemu == model:
            agree += 1
        else:
            disagreements.append(f"{props}: QEMU {qemu}, model {model}")
    QEMU_AGREEMENTS.append(
        f"{spec.name}: QEMU's query-cpu-model-expansion and vlcalc.qemu agree on "
        f"{agree}/{len(sets)} property sets ({refused} refused by both)"
    )
    assert not disagreements, "\n".join(disagreements)
    assert agree == len(sets) >= 200


# ---------------------------------------------------------------------------------------------
# The tiny guest


def _run_guest(lab: LabFleet, name: str, cpu: str, image: Path) -> dict[str, Any]:
    copy_to(lab, name, GUEST, image.read_bytes())
    steps = [{"wait_serial": inner.GUEST_LINE}, {"serial_input": "q"}, {"wait_exit": True}]
    return drive(lab, name, inner.inner_qemu_argv(cpu, kernel=GUEST), steps)


@pytest.mark.parametrize("name", QEMU_SVE_NODES)
def test_guest_with_the_reported_cpu_gets_the_cluster_set(
    qemu_lab: LabFleet, name: str, guest_image: Path, cluster: ClusterAnswer
) -> None:
    assert cluster.vls == VLSet.from_vls([128, 256])  # q384 and qa64fx diverge at 384
    assert resolve_kvm(_cpu_props(cluster.cpu), _host(name)) == cluster.vls
    result = _run_guest(qemu_lab, name, cluster.cpu, guest_image)
    # The guest powered off by itself (PSCI SYSTEM_OFF): QEMU exits 0 after the 'q'.
    assert result["error"] is None and result["returncode"] == 0, result
    sets = inner.guest_sets(result["serial"])
    assert sets and all(vls == cluster.vls for vls in sets), result["serial"]


@pytest.mark.parametrize("name", ["q384", "qnosve"])
def test_guest_with_plain_host_gets_the_host_set(
    qemu_lab: LabFleet, name: str, guest_image: Path
) -> None:
    result = _run_guest(qemu_lab, name, "host", guest_image)
    assert result["error"] is None and result["returncode"] == 0, result
    assert inner.guest_sets(result["serial"])[0] == _host(name), result["serial"]


def test_guest_with_pinned_settings_refuses_a_host_without_the_set(
    qemu_lab: LabFleet, guest_image: Path
) -> None:
    # {128,256,384} pinned does not exist on qa64fx ({128,256,512}): QEMU must not start.
    cpu = ",".join(["host", *(f"{k}={v}" for k, v in pinned_props(_host("q384")).items())])
    result = _run_guest(qemu_lab, "qa64fx", cpu, guest_image)
    assert result["returncode"] == 1, result
    assert "cannot enable sve384" in result["stderr"], result


# ---------------------------------------------------------------------------------------------
# Live migration through a file


def _migrate(
    lab: LabFleet, source: str, target: str, cpu: str, image: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start the guest on ``source``, migrate it live into a file, move the file to ``target``
    over SSH and resume it there; the source's and the target's driver results."""
    for name in {source, target}:
        copy_to(lab, name, GUEST, image.read_bytes())
    saved = drive(
        lab,
        source,
        inner.inner_qemu_argv(cpu, kernel=GUEST),
        [
            {"wait_serial": inner.GUEST_LINE, "count": GUEST_LINES},
            # QEMU 7.2 has no file: URI; exec: runs a shell command with the stream on stdin.
            {"execute": "migrate", "arguments": {"uri": f"exec:cat > {STATE}"}},
            {"until": "query-migrate", "key": "status", "values": ["completed", "failed"]},
            {"execute": "quit"},
        ],
    )
    assert saved["error"] is None, saved
    assert saved["replies"][1]["return"]["status"] == "completed", saved
    copy_to(lab, target, STATE, copy_from(lab, source, STATE))
    restored = drive(
        lab,
        target,
        inner.inner_qemu_argv(cpu, kernel=GUEST, incoming=f"exec:cat {STATE}"),
        [
            {"wait_serial": inner.GUEST_LINE, "count": GUEST_LINES},
            {"serial_input": "q"},
            {"wait_exit": True},
        ],
    )
    return saved, restored


def _after_resume(result: dict[str, Any]) -> list[VLSet]:
    sets = inner.guest_sets(result["serial"])
    assert result["error"] is None and result["returncode"] == 0, result["stderr"]
    assert len(sets) >= GUEST_LINES - 1, result["serial"]
    return sets


def test_migration_with_vlcalc_settings_keeps_the_guest_set(
    qemu_lab: LabFleet, guest_image: Path, cluster: ClusterAnswer
) -> None:
    saved, restored = _migrate(qemu_lab, "q384", "qa64fx", cluster.cpu, guest_image)
    assert set(inner.guest_sets(saved["serial"])) == {cluster.vls}
    assert set(_after_resume(restored)) == {cluster.vls}
    QEMU_AGREEMENTS.append(
        f"migration q384 -> qa64fx with -cpu {cluster.cpu}: guest set {cluster.vls} before and"
        " after"
    )


def test_migration_with_plain_host_changes_the_guest_set(
    qemu_lab: LabFleet, guest_image: Path
) -> None:
    saved, restored = _migrate(qemu_lab, "q384", "qa64fx", "host", guest_image)
    before = set(inner.guest_sets(saved["serial"]))
    after = set(_after_resume(restored))
    # QEMU neither migrates nor checks the VL set: the target rebuilds it from its own host,
    # and the running guest silently finds 384 gone and 512 new.
    assert before == {_host("q384")} and after == {_host("qa64fx")}
    QEMU_AGREEMENTS.append(
        f"migration q384 -> qa64fx with -cpu host: guest set {_host('q384')} became"
        f" {_host('qa64fx')} (QEMU accepted the state)"
    )


def test_migration_across_kernel_lines_is_refused(
    qemu_lab: LabFleet, guest_image: Path, cluster: ClusterAnswer
) -> None:
    # Seen with QEMU 7.2: the 6.1 node's vcpu state does not load on 6.12 (KVM_SET_ONE_REG
    # EPERM on a register), whatever the SVE settings; vlcalc's pinning cannot change that.
    _, restored = _migrate(qemu_lab, "q384", "qvl4", cluster.cpu, guest_image)
    assert restored["returncode"] == 1, restored
    assert "load of migration failed" in restored["stderr"], restored


# ---------------------------------------------------------------------------------------------
# libvirt on a KVM node


LIBVIRT_DOMAIN = """<domain type='kvm'>
  <name>vlcalc-libvirt-check</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='aarch64' machine='virt'>hvm</type><kernel>{guest}</kernel></os>
  {cpu}
  <devices><emulator>/usr/bin/qemu-system-aarch64</emulator></devices>
</domain>
"""


def test_libvirt_on_a_kvm_node_turns_vlcalc_cpu_into_the_cluster_set(
    qemu_lab: LabFleet, guest_image: Path, cluster: ClusterAnswer
) -> None:
    """libvirt 9.0's own conversion (the embedded QEMU driver, ``qemu:///embed``: no daemon) of
    vlcalc's ``<cpu mode='host-passthrough'>`` on a node with real KVM, then the guest started
    with the ``-cpu`` libvirt chose: it must see the cluster set."""
    name = next(spec.name for spec in QEMU_FLEET if spec.libvirt)
    domain = f"{inner.NODE_DIR}/domain.xml"
    copy_to(
        qemu_lab, name, domain, LIBVIRT_DOMAIN.format(guest=GUEST, cpu=cluster.libvirt_xml).encode()
    )
    done = qemu_lab.ssh(
        name,
        f"virsh -c 'qemu:///embed?root={inner.NODE_DIR}/libvirt' domxml-to-native qemu-argv"
        f" {domain}",
        timeout_s=300,
    )
    argv = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert " -accel kvm " in argv, argv
    cpu = inner.cpu_from_argv(argv)
    assert cpu.startswith("host,"), argv
    result = _run_guest(qemu_lab, name, cpu, guest_image)
    assert result["error"] is None and result["returncode"] == 0, result
    sets = inner.guest_sets(result["serial"])
    assert sets and all(vls == cluster.vls for vls in sets), result["serial"]
    QEMU_AGREEMENTS.append(
        f"libvirt 9.0 on {name} (KVM): vlcalc's <cpu> -> -cpu {cpu}: guest set {cluster.vls}"
    )
