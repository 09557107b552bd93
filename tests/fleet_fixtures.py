"""Probe documents for the real-hardware fixtures in shared/docs/domain.md, and scan documents
built from them.  Used by unit tests and by the example files under inventories/."""

from __future__ import annotations

from typing import Any

from vlcalc.vl import VLSet

# Real hosts (domain.md): Fujitsu A64FX, AWS Graviton3 (Neoverse V1), Graviton4 / Grace / Axion
# (Neoverse V2), Cobalt 100 (Neoverse N2), Ampere Altra (no SVE), and an emulated-lab style node
# with the non-power-of-two VL 384.
HARDWARE: dict[str, tuple[list[int], str, str]] = {
    "a64fx": ([128, 256, 512], "0x461f0010", "Fujitsu A64FX"),
    "graviton3": ([128, 256], "0x411fd401", "Neoverse V1"),
    "graviton4": ([128], "0x410fd4f0", "Neoverse V2"),
    "grace": ([128], "0x410fd4f0", "Neoverse V2"),
    "cobalt100": ([128], "0x410fd490", "Neoverse N2"),
    "vl384": ([128, 256, 384, 512], "0x000f0510", "QEMU max (emulated)"),
    "altra": ([], "0x413fd0c1", "Neoverse N1 (Ampere Altra)"),
}


def probe_doc(
    hostname: str,
    vls: list[int] | None,
    *,
    midr: str | None = None,
    model: str | None = None,
    kernel: str = "6.1.0-27-arm64",
    error: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A probe document as the probe prints it; ``vls=None`` with ``error`` for a failed probe."""
    sve = None
    if error is None:
        assert vls is not None
        sve = {"vls": vls, "words": VLSet.from_vls(vls).hex_words()}
    return {
        "schema": "vlcalc.probe/1",
        "probe_version": 1,
        "hostname": hostname,
        "kernel": kernel,
        "arch": "aarch64",
        "python": "3.11.2",
        "kvm": None if error else {"api_version": 12, "ipa_bits": 48, "sve_cap": 1 if vls else 0},
        "cpu": {"midr": midr, "model": model},
        "sve": sve,
        "trials": [],
        "timing_ms": {"query": 14.2, "total": 31.0},
        "error": None
        if error is None
        else {"kind": error[0], "message": error[1], "ioctl": None, "errno": None},
    }


def hardware_doc(hostname: str, kind: str, **kwargs: Any) -> dict[str, Any]:
    vls, midr, model = HARDWARE[kind]
    return probe_doc(hostname, vls, midr=midr, model=model, **kwargs)


def scan_doc(entries: list[dict[str, Any]], inventory: str = "inventory.yaml") -> dict[str, Any]:
    return {
        "schema": "vlcalc.scan/1",
        "vlcalc_version": "0.1.0",
        "started": "2026-11-26T03:00:00Z",
        "finished": "2026-11-26T03:00:02Z",
        "inventory": inventory,
        "limit": None,
        "interrupted": False,
        "nodes": entries,
    }


def ok_entry(name: str, doc: dict[str, Any], groups: list[str], port: int = 22) -> dict[str, Any]:
    return {
        "name": name,
        "groups": groups,
        "target": {"host": name, "port": port, "user": "root"},
        "outcome": "ok",
        "probe": doc,
        "error": None,
        "elapsed_ms": 480.0,
    }


def error_entry(name: str, kind: str, message: str, groups: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "groups": groups,
        "target": {"host": name, "port": 22, "user": "root"},
        "outcome": "error",
        "probe": None,
        "error": {"kind": kind, "message": message},
        "elapsed_ms": 10000.0,
    }


def mixed_fleet() -> dict[str, Any]:
    """The fleet of issue 2's 'done when': every hardware kind, a no-SVE node, an error node."""
    return scan_doc(
        [
            ok_entry("a64fx-01", hardware_doc("a64fx-01", "a64fx"), ["hpc"]),
            ok_entry("graviton3-01", hardware_doc("graviton3-01", "graviton3"), ["cloud"]),
            ok_entry("graviton4-01", hardware_doc("graviton4-01", "graviton4"), ["cloud"]),
            ok_entry("lab-384-01", hardware_doc("lab-384-01", "vl384"), ["lab"]),
            ok_entry("altra-01", hardware_doc("altra-01", "altra"), ["cloud"]),
            error_entry(
                "grace-01",
                "unreachable",
                "connection refused by 10.0.4.21:22 (3 attempts)",
                ["cloud"],
            ),
        ],
        inventory="inventories/mixed-fleet.yaml",
    )


def example_fleet() -> dict[str, Any]:
    """The README's default example: an A64FX pool being extended with newer nodes that also
    offer VL 384 — the intersection says 128,256,512, KVM says 128,256."""
    entries = [
        ok_entry(f"a64fx-{i:02d}", hardware_doc(f"a64fx-{i:02d}", "a64fx"), ["hpc", "a64fx"])
        for i in range(1, 5)
    ]
    entries += [
        ok_entry(
            f"sve384-{i:02d}",
            hardware_doc(f"sve384-{i:02d}", "vl384", kernel="6.12.48+deb12-arm64"),
            ["hpc", "newgen"],
        )
        for i in range(1, 3)
    ]
    return scan_doc(entries, inventory="inventories/example.yaml")
