"""The lab fleet: emulated arm64 nodes with real KVM, shared by the lab tests.

The fleet mixes kernel lines (6.1, 6.12) and KVM modes (VHE, nVHE, protected) so every statement
is checked against more than one real kernel.  Images come from the lab cache (``python -m
vlcalc.lab build`` fills it; the fixture builds what is missing, which needs the Debian archive).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlcalc.lab.cluster import Fleet, Node, NodeSpec

PROBE = Path(__file__).resolve().parents[2] / "vlcalc" / "probe" / "probe.py"

FLEET = (
    NodeSpec("vl4", frozenset({128, 256, 384, 512}), "6.1"),
    NodeSpec("a64fx", frozenset({128, 256, 512}), "6.12"),
    NodeSpec("graviton3", frozenset({128, 256}), "6.1", ("kvm-arm.mode=nvhe",)),
    NodeSpec("nosve", None, "6.12"),
    NodeSpec("wide", frozenset({128, 256, 512, 1024, 2048}), "6.12", ("kvm-arm.mode=nvhe",)),
    # pKVM: the host kernel itself is deprivileged; KVM still gives non-protected guests SVE.
    NodeSpec("pkvm", frozenset({128, 256, 384, 512, 640}), "6.1", ("kvm-arm.mode=protected",)),
)


#: Rule-truth results, one line per node, printed at the end of the run (conftest.py).
AGREEMENTS: list[str] = []


@dataclass(frozen=True)
class LabFleet:
    """The running fleet and how to reach it."""

    fleet: Fleet
    nodes: dict[str, Node]

    @property
    def key(self) -> Path:
        return self.fleet.key_path

    @property
    def known_hosts(self) -> Path:
        return self.fleet.known_hosts_path

    def ssh(
        self,
        name: str,
        command: str,
        *,
        user: str = "root",
        stdin: bytes = b"",
        known_hosts: Path | None = None,
        timeout_s: float = 120.0,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` on node ``name`` with the real OpenSSH client, strict checking on."""
        argv = [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "ConnectTimeout=20",
            "-o", "IdentitiesOnly=yes",
            "-i", str(self.key),
            "-p", str(self.nodes[name].port),
            f"{user}@127.0.0.1",
            command,
        ]  # fmt: skip
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout_s)

    def probe(
        self, name: str, tries: Sequence[str] = (), *, user: str = "root", sudo: bool = False
    ) -> dict[str, Any]:
        """Send the probe to ``name`` as ``python3 - --try SPEC...`` and return its document.

        SSH joins the remote arguments into one shell line, so each SPEC is quoted: an empty
        SPEC (the empty set) would otherwise vanish.
        """
        command = " ".join(
            ["sudo -n" if sudo else "", "python3 -", *(f"--try {shlex.quote(s)}" for s in tries)]
        ).strip()
        done = self.ssh(name, command, user=user, stdin=PROBE.read_bytes())
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        lines = done.stdout.decode().splitlines()
        assert len(lines) == 1, done.stdout
        document: dict[str, Any] = json.loads(lines[0])
        return document
