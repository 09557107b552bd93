"""The QEMU lab fleet: emulated arm64 nodes with arm64 QEMU inside, for inner KVM guests.

Booted from the image variant with ``qemu-system-aarch64`` (``NodeSpec(..., qemu=True)``, 768 MiB
each) and only for the tests in ``test_lab_qemu.py``; the other lab tests keep the small image.
Host sets: a 384 node and a {128,256,512} node on kernel 6.1 in VHE mode (migration needs the
same kernel line and KVM mode on both ends: see the cross-kernel test), a {128,256,384,512}
node on 6.12 in nVHE mode and an SVE-off node on 6.12.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labfleet import LabFleet

from vlcalc.lab import inner
from vlcalc.lab.cluster import NodeSpec

GUEST_SOURCE = Path(__file__).resolve().parent / "guest" / "vlguest.S"

QEMU_FLEET = (
    # libvirt too: vlcalc's <cpu> XML through libvirt's own conversion, with real KVM.
    NodeSpec("q384", frozenset({128, 256, 384}), "6.1", qemu=True, libvirt=True),
    NodeSpec("qa64fx", frozenset({128, 256, 512}), "6.1", qemu=True),
    NodeSpec("qvl4", frozenset({128, 256, 384, 512}), "6.12", ("kvm-arm.mode=nvhe",), qemu=True),
    NodeSpec("qnosve", None, "6.12", qemu=True),
)
QEMU_SVE_NODES = tuple(spec.name for spec in QEMU_FLEET if spec.vls)

#: QEMU-versus-model results, printed at the end of the run (conftest.py).
QEMU_AGREEMENTS: list[str] = []

QEMU_VLS = tuple(range(128, 2049, 128))
# Properties QEMU refuses whatever the host: no such length, TCG only, not a bool.
INVALID_PROPS: tuple[dict[str, str], ...] = (
    {"sve-max-vq": "2"},
    {"sve": "on", "sve-max-vq": "4"},
    {"sve4096": "on"},
    {"sve2176": "on"},
    {"sve100": "on"},
    {"sve0": "off"},
    {"sve128": "maybe"},
    {"sve": "maybe"},
    {"sve256": "2"},
)


def property_sets(seed: int, count: int = 240) -> list[dict[str, str]]:
    """``count`` distinct ``-cpu host`` property sets: none, sve=on/off, each sveN on and off
    alone, every pinned prefix (all on, and on-then-off as vlcalc prints them), sve=off with
    lengths, the invalid ones, every on-only and off-only choice among 128..640, a top length on
    with larger ones off, then random mixes (1-6
    lengths near the hosts' range, each on or off, sometimes with sve=on/off or QEMU's other bool
    spellings).  Deterministic for a seed.
    """
    sets: list[dict[str, str]] = [{}, {"sve": "on"}, {"sve": "off"}]
    sets += [{f"sve{vl}": state} for vl in QEMU_VLS for state in ("on", "off")]
    for top in range(1, len(QEMU_VLS) + 1):
        on = {f"sve{vl}": "on" for vl in QEMU_VLS[:top]}
        sets.append({"sve": "on", **on})
        sets.append({"sve": "on", **on, **{f"sve{vl}": "off" for vl in QEMU_VLS[top:]}})
    sets += [{"sve": "off", "sve128": "on"}, {"sve": "off", "sve256": "off"}]
    sets += [dict(props) for props in INVALID_PROPS]
    unique = {tuple(props.items()): props for props in sets}
    rng = random.Random(seed)
    # Every on-only and every off-only choice among the lengths where the hosts differ: QEMU's
    # auto-enabling below the largest "on" and its "disabling one disables all larger" rule.
    low = QEMU_VLS[:5]
    for bits in range(1, 1 << len(low)):
        chosen = [vl for index, vl in enumerate(low) if bits >> index & 1]
        for state in ("on", "off"):
            props = {f"sve{vl}": state for vl in chosen}
            unique.setdefault(tuple(props.items()), props)
    # The shapes users write: one top length on, some larger ones off (QEMU ignores those).
    for top in QEMU_VLS[:6]:
        for _ in range(5):
            above = [vl for vl in QEMU_VLS if vl > top]
            props = {f"sve{top}": "on", **{f"sve{vl}": "off" for vl in rng.sample(above, k=3)}}
            unique.setdefault(tuple(props.items()), props)
    while len(unique) < count:
        # Mostly the lengths where hosts differ (up to 640), sometimes any QEMU length.
        pool = QEMU_VLS[:5] if rng.random() < 0.7 else QEMU_VLS
        chosen = rng.sample(pool, k=rng.randint(1, min(6, len(pool))))
        spellings = ("on", "off") if rng.random() < 0.9 else ("yes", "false")
        props = {f"sve{vl}": rng.choice(spellings) for vl in chosen}
        sve = rng.random()
        if sve < 0.3:
            props = {"sve": "on", **props}
        elif sve < 0.4:
            props = {"sve": "off", **props}
        unique.setdefault(tuple(props.items()), props)
    return list(unique.values())[:count]


def copy_to(lab: LabFleet, name: str, path: str, data: bytes) -> None:
    done = lab.ssh(name, f"mkdir -p {inner.NODE_DIR} && cat > {path}", stdin=data)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def copy_from(lab: LabFleet, name: str, path: str) -> bytes:
    done = lab.ssh(name, f"cat {path}")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def drive(
    lab: LabFleet,
    name: str,
    qemu_argv: Sequence[str],
    steps: Sequence[Mapping[str, Any]],
    timeout_s: float = 240.0,
) -> dict[str, Any]:
    """Run one inner QEMU on node ``name`` through :mod:`vlcalc.lab.qmp_driver`, in one SSH
    session; the driver's result document."""
    plan = inner.driver_plan(qemu_argv, steps, timeout_s=timeout_s)
    done = lab.ssh(
        name, inner.DRIVER_COMMAND, stdin=inner.driver_script(plan), timeout_s=timeout_s + 60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    document: dict[str, Any] = json.loads(done.stdout)
    return document
