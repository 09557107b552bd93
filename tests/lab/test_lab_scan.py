"""vlcalc itself against real Linux KVM: `vlcalc scan` and `vlcalc check --verify` over the lab
fleet (emulated arm64 nodes, see labfleet.py), through the real CLI, paramiko and dropbear, with
strict host-key checking on.  What vlcalc says must equal the QEMU configuration and the kernel's
own verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from labfleet import FLEET, LabFleet

from vlcalc.compat import accepts
from vlcalc.vl import VLSet

pytestmark = pytest.mark.lab


def vlcalc(lab: LabFleet, *args: str, inventory: Path | None = None) -> tuple[int, Any, str]:
    argv = [
        sys.executable,
        "-m",
        "vlcalc",
        *args,
        str(inventory or lab.fleet.inventory_path),
        "--known-hosts",
        str(lab.known_hosts),
        "-f",
        "json",
        "--timeout",
        "180",
        "--connect-timeout",  # dropbear's key exchange runs under emulation: seconds, not ms
        "60",
    ]
    env = {**os.environ, "HOME": "/nonexistent-home"}
    env.pop("SSH_AUTH_SOCK", None)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, check=False)
    return done.returncode, json.loads(done.stdout) if done.stdout else None, done.stderr


def variant(lab: LabFleet, path: Path, **host_vars: Any) -> Path:
    """The lab inventory with extra variables on every host (e.g. another user, become)."""
    data = yaml.safe_load(lab.fleet.inventory_path.read_text())
    for values in data["all"]["hosts"].values():
        values.update(host_vars)
    path.write_text(yaml.safe_dump(data))
    return path


def test_scan_truth(lab: LabFleet) -> None:
    code, report, stderr = vlcalc(lab, "scan")
    assert code == 0, stderr
    assert report["complete"]
    configured = {spec.name: sorted(spec.vls or ()) for spec in FLEET}
    assert {n["name"]: n["vls"] for n in report["nodes"]} == configured
    status = {n["name"]: n["status"] for n in report["nodes"]}
    assert status["nosve"] == "no-sve" and list(status.values()).count("ok") == len(FLEET) - 1
    # The SVE-off node forces sve=off; among the SVE nodes, graviton3 caps the set at 256.
    assert report["cluster"]["vls"] == [] and report["cluster"]["qemu"] == "host,sve=off"
    limits = [(lim["kind"], lim["nodes"], lim["binding"]) for lim in report["limits"]]
    assert limits == [("no-sve", ["nosve"], True), ("max-vl", ["graviton3"], False)]


def test_scan_truth_divergence_at_384(lab: LabFleet) -> None:
    code, report, stderr = vlcalc(lab, "scan", "--limit", "sve:!graviton3")
    assert code == 0, stderr
    assert sorted(n["name"] for n in report["nodes"]) == ["a64fx", "pkvm", "vl4", "wide"]
    assert report["cluster"]["vls"] == [128, 256]
    assert report["cluster"]["naive_intersection"] == [128, 256, 512]
    (limit,) = report["limits"]
    assert (limit["kind"], limit["vl"]) == ("divergence", 384)
    assert sorted(limit["have"]) == ["pkvm", "vl4"] and sorted(limit["lack"]) == ["a64fx", "wide"]


@pytest.mark.parametrize("spec", ["128,256", "128,256,512", "128,256,384,512,640", "128"])
def test_migration_check_agrees_with_the_kernels(lab: LabFleet, spec: str) -> None:
    code, result, stderr = vlcalc(lab, "check", "--vls", spec, "--verify")
    requested = VLSet.from_vls(int(vl) for vl in spec.split(","))
    hosts = {s.name: VLSet.from_vls(s.vls or ()) for s in FLEET}
    expected = {
        name: "accept" if accepts(host, requested) else "reject" for name, host in hosts.items()
    }
    verdicts = {n["name"]: (n["verdict"], n["model"], n["kernel"]) for n in result["nodes"]}
    assert verdicts == {name: (v, v, v) for name, v in expected.items()}, stderr
    assert result["disagreements"] == 0
    assert code == (1 if "reject" in expected.values() else 0)
    print(f"check {spec}: {result['accepted']} accept, {result['rejected']} reject, kernel agrees")


def test_unprivileged_user_is_permission_denied_through_scan(lab: LabFleet, tmp_path: Path) -> None:
    inventory = variant(lab, tmp_path / "probe-user.yaml", ansible_user="probe")
    code, report, stderr = vlcalc(lab, "scan", "--limit", "vl4,a64fx", inventory=inventory)
    assert code == 4, stderr
    assert {n["name"]: n["error"]["kind"] for n in report["nodes"]} == {
        "vl4": "permission-denied",
        "a64fx": "permission-denied",
    }
    assert "group kvm" in report["nodes"][0]["error"]["message"]


def test_become_lets_the_unprivileged_user_probe(lab: LabFleet, tmp_path: Path) -> None:
    inventory = variant(lab, tmp_path / "become.yaml", ansible_user="probe", ansible_become=True)
    code, report, stderr = vlcalc(lab, "scan", "--limit", "vl4", inventory=inventory)
    if code == 4 and report["nodes"][0]["error"]["kind"] == "sudo-failed":
        pytest.skip("the lab image was built without sudo (vlcalc lab build --no-sudo)")
    assert code == 0, stderr
    assert report["nodes"][0]["vls"] == [128, 256, 384, 512]
