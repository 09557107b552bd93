"""The session fixture that boots the lab fleet once (see labfleet.py for what it holds)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from labfleet import AGREEMENTS, FLEET, LabFleet
from labqemu import QEMU_AGREEMENTS, QEMU_FLEET

from vlcalc.lab.cluster import Fleet


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    if shutil.which("qemu-system-aarch64") is None:
        pytest.skip("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)")
    if shutil.which("ssh") is None:
        pytest.skip("the OpenSSH client is not installed (apt-get install openssh-client)")
    # A generous deadline: on a busy 2-core CI machine six nodes took 78 s instead of 12-18 s.
    with Fleet(FLEET, tmp_path_factory.mktemp("lab"), boot_timeout_s=400) as fleet:
        yield LabFleet(fleet, {node.spec.name: node for node in fleet.nodes})


@pytest.fixture(scope="module")
def qemu_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    """The nodes with QEMU inside (labqemu.py), for one test module: they take 768 MiB each,
    so they are stopped as soon as that module is done."""
    if shutil.which("qemu-system-aarch64") is None:
        pytest.skip("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)")
    if shutil.which("ssh") is None:
        pytest.skip("the OpenSSH client is not installed (apt-get install openssh-client)")
    with Fleet(QEMU_FLEET, tmp_path_factory.mktemp("qemu-lab"), boot_timeout_s=400) as fleet:
        yield LabFleet(fleet, {node.spec.name: node for node in fleet.nodes})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Lab tests boot QEMU nodes (tens of seconds, ~250 MB each): run them only on request,
    with ``-m lab`` (any marker expression naming ``lab``) or ``VLCALC_LAB=1``, so a plain
    ``pytest`` stays fast."""
    if "lab" in (config.option.markexpr or "") or os.environ.get("VLCALC_LAB") == "1":
        return
    skip = pytest.mark.skip(reason="lab test: run with -m lab or VLCALC_LAB=1")
    for item in items:
        if item.get_closest_marker("lab") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The rule-truth counts, in every run's output (CI's included)."""
    if AGREEMENTS:
        terminalreporter.section("lab: the kernel's verdicts against vlcalc's model")
        for line in AGREEMENTS:
            terminalreporter.write_line(line)
    if QEMU_AGREEMENTS:
        terminalreporter.section("lab: QEMU + KVM inside the nodes against vlcalc's QEMU model")
        for line in QEMU_AGREEMENTS:
            terminalreporter.write_line(line)
