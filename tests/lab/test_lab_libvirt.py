"""The libvirt ``<cpu>`` XML vlcalc prints, through real libvirt (Debian 12: libvirt 9.0).

libvirt's embedded QEMU driver (``virsh -c qemu:///embed?root=DIR``: no daemon, every file under
DIR; run as ``nobody`` when the tests run as root, since a privileged libvirt wants its system
users) turns a domain with vlcalc's ``<cpu>`` into a QEMU command line with
``virsh domxml-to-native qemu-argv``, using this machine's arm64 ``qemu-system-aarch64`` for its
capabilities.  On an x86 host libvirt has no KVM for aarch64 and refuses ``host-passthrough`` for a
TCG domain, so the features are checked under ``mode='maximum'`` (``-cpu max``, the same CPU as
``host`` under KVM): libvirt must pass exactly the pinned set to QEMU.  The same check with
``host-passthrough`` and real KVM runs on a lab node (test_lab_qemu.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from labqemu import QEMU_AGREEMENTS

from vlcalc.qemu import QemuError, resolve_kvm
from vlcalc.vl import VLSet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fleet_fixtures import probe_doc

pytestmark = pytest.mark.lab

DOMAIN = """<domain type='qemu'>
  <name>vlcalc-libvirt-check</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='aarch64' machine='virt'>hvm</type><kernel>/nonexistent/guest.bin</kernel></os>
  {cpu}
  <devices><emulator>{emulator}</emulator></devices>
</domain>
"""

SETS = [
    [128],
    [128, 256],
    [128, 256, 384],
    [128, 256, 512],
    list(range(128, 2049, 128)),
]


class Libvirt:
    """``virsh`` with the embedded QEMU driver under a private root."""

    def __init__(self, home: Path, user_prefix: list[str]):
        self.home = home
        self.prefix = user_prefix
        version = subprocess.run(["virsh", "--version"], capture_output=True, text=True)
        self.version = version.stdout.strip() or "unknown"
        self.env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "LC_ALL": "C",
        }

    def virsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, "virsh", "-c", f"qemu:///embed?root={self.home}/root", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def to_argv(self, cpu_xml: str, name: str) -> subprocess.CompletedProcess[str]:
        path = self.home / f"{name}.xml"
        emulator = shutil.which("qemu-system-aarch64") or "/usr/bin/qemu-system-aarch64"
        path.write_text(DOMAIN.format(cpu=cpu_xml, emulator=emulator))
        os.chmod(path, 0o644)
        return self.virsh("domxml-to-native", "qemu-argv", str(path))


@pytest.fixture(scope="module")
def libvirt() -> Iterator[Libvirt]:
    for tool in ("virsh", "qemu-system-aarch64"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install libvirt-clients libvirt-daemon"
                        " libvirt-daemon-driver-qemu qemu-system-arm)")  # fmt: skip
    # Not under pytest's tmp_path: its parents are private to root, and nobody must reach it.
    home = Path(tempfile.mkdtemp(prefix="vlcalc-libvirt-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        # A privileged libvirt wants its system user (libvirt-qemu); an unprivileged one keeps
        # every file under its root.
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        for path in [home, *home.rglob("*")]:
            os.chown(path, 65534, 65534)
    try:
        yield Libvirt(home, prefix)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _vlcalc_xml(tmp_path: Path, vls: list[int]) -> tuple[int, str, str]:
    doc = tmp_path / "node.json"
    doc.write_text(json.dumps(probe_doc("node1", vls)))
    done = subprocess.run(
        [sys.executable, "-m", "vlcalc", "report", str(doc), "-f", "libvirt"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def _cpu_props(argv: str) -> tuple[str, dict[str, str]]:
    match = re.search(r" -cpu (\S+)", argv)
    assert match, argv
    model, *parts = match.group(1).split(",")
    return model, dict(part.split("=", 1) for part in parts)


@pytest.mark.parametrize("vls", SETS, ids=lambda vls: f"max{max(vls)}-{len(vls)}vls")
def test_libvirt_passes_vlcalc_pinned_set_to_qemu(
    libvirt: Libvirt, tmp_path: Path, vls: list[int]
) -> None:
    code, xml, stderr = _vlcalc_xml(tmp_path, vls)
    assert code == 0, stderr
    assert xml.startswith("<cpu mode='host-passthrough'"), xml
    # As printed: refused on this machine, for want of KVM for aarch64 (not for the features).
    refused = libvirt.to_argv(xml, "passthrough")
    assert refused.returncode != 0
    assert "host-passthrough" in refused.stderr and "not supported" in refused.stderr
    done = libvirt.to_argv(xml.replace("host-passthrough", "maximum"), "maximum")
    assert done.returncode == 0, done.stderr
    model, props = _cpu_props(done.stdout)
    assert model == "max" and props.get("sve") == "on", done.stdout
    cpu = re.search(r" -cpu (\S+)", done.stdout)
    QEMU_AGREEMENTS.append(
        f"libvirt {libvirt.version}: vlcalc's <cpu> for {{{','.join(map(str, vls))}}} (as"
        f" mode='maximum') -> -cpu {cpu.group(1) if cpu else '?'}"
    )
    wanted = VLSet.from_vls(vls)
    # What QEMU then builds: the set on a host that has it, a refusal on one without its top.
    assert resolve_kvm(props, wanted) == wanted
    with pytest.raises(QemuError):
        resolve_kvm(props, VLSet(wanted.mask & ~(1 << (wanted.max_vq - 1))))
    # Pinned means pinned: a host with every VL up to the top must refuse, or give the same set
    # (never auto-enable a VL the set lacks, such as 384 for {128,256,512}).
    full = VLSet(VLSet.prefix_mask(wanted.max_vq))
    with contextlib.suppress(QemuError):
        assert resolve_kvm(props, full) == wanted, f"{props} on {full}"


def test_libvirt_passes_sve_off(libvirt: Libvirt) -> None:
    xml = "<cpu mode='maximum'><feature policy='disable' name='sve'/></cpu>"
    done = libvirt.to_argv(xml, "sve-off")
    assert done.returncode == 0, done.stderr
    _, props = _cpu_props(done.stdout)
    assert props == {"sve": "off"}


@pytest.mark.parametrize("name", ["sve4096", "sve2176"])
def test_libvirt_refuses_lengths_above_2048(libvirt: Libvirt, name: str) -> None:
    xml = f"<cpu mode='maximum'><feature policy='require' name='{name}'/></cpu>"
    done = libvirt.to_argv(xml, name)
    assert done.returncode != 0
    assert f"unknown CPU feature: {name}" in done.stderr
