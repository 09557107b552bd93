"""The Ansible playbooks in inventories/ansible/ run by the real ``ansible-playbook`` against real
OpenSSH sshd nodes on 127.0.0.1, and ``vlcalc report`` reading what they left behind.

``collect.yml`` runs the probe with ``ansible.builtin.script``, which does not send it on stdin as
vlcalc does: Ansible creates a temp directory with ``/bin/sh -c``, copies the file over SFTP,
``chmod``s it, runs ``python3 DIR/probe.py`` and removes the directory.  So these nodes run what
Ansible asks for (:data:`_ANSIBLE_NODE_SCRIPT`), except the probe itself: a node checks that the
file it was asked to run is the real probe (sha256) and prints its fixture document instead, or
runs it for real (``real-01``: on this x86 machine a ``not-arm64`` document).  ``vlcalc scan``
(``preflight.yml``) still sends the probe on stdin, which the fleet's own forced command checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vlcalc.probe import probe_source

from fleet_fixtures import hardware_doc
from sshfleet import FleetNode, KeyPair, NodeSpec, SSHFleet, _quote_option

pytestmark = pytest.mark.ansible

PLAYBOOKS = Path(__file__).resolve().parent.parent / "inventories" / "ansible"
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")

_ANSIBLE_NODE_SCRIPT = r"""#!/bin/sh
# Forced command of a node Ansible manages.  $1 is the node's directory.
d="$1"
cmd="$SSH_ORIGINAL_COMMAND"
printf '%s\n' "$cmd" >> "$d/commands"
case "$cmd" in
  internal-sftp) exec "$(cat "$d/../../sftp_server")" ;;
  "python3 -"*) exec "$d/../../node.sh" "$d" ;;  # vlcalc scan: the probe on stdin
esac
previous=
for word in $cmd; do  # Ansible's script task: /bin/sh -c ' python3 DIR/probe.py && sleep 0'
  case "$previous $word" in
    *python3\ */probe.py) probe="$word" ;;
  esac
  previous="$word"
done
mode=$(cat "$d/ansible_mode")
if [ -z "$probe" ] || [ "$mode" = real ]; then
  exec /bin/sh -c "$cmd"
fi
got=$(sha256sum < "$probe" | cut -d' ' -f1)
want=$(cat "$d/../../probe.sha256")
if [ "$got" != "$want" ]; then
  echo "ansible fleet: $probe is not the real probe (sha256 $got, want $want)" >&2
  exit 3
fi
case "$mode" in
  ok) cat "$d/document" ;;
  no-python) echo "sh: 1: python3: not found" >&2; exit 127 ;;
  *) echo "ansible fleet: unknown mode $mode" >&2; exit 99 ;;
esac
"""


@dataclass
class AnsibleFleet(SSHFleet):
    """An :class:`SSHFleet` whose nodes run the commands Ansible sends (see the module docstring).

    Nodes named in ``real_probe`` run the probe for real; the others answer ``ansible.builtin
    .script`` with their fixture ``document`` (behaviour ``ok``) or "python3: not found"
    (``no-python``) once they have checked the file is the probe.
    """

    real_probe: frozenset[str] = frozenset()

    def _write_node(self, node: FleetNode, user_key: KeyPair, *, bastion: bool) -> None:
        super()._write_node(node, user_key, bastion=bastion)
        base, directory = self.base_dir, node.directory
        script = base / "ansible_node.sh"
        if not script.exists():
            script.write_text(_ANSIBLE_NODE_SCRIPT)
            script.chmod(0o755)
            sftp = next((path for path in SFTP_SERVERS if os.path.exists(path)), None)
            assert sftp, f"no OpenSSH sftp-server in {SFTP_SERVERS}"
            (base / "sftp_server").write_text(sftp)
        mode = "real" if node.name in self.real_probe else node.spec.behaviour
        (directory / "ansible_mode").write_text(mode)
        command = _quote_option(f"{script} {directory}")
        (directory / "authorized_keys").write_text(f"command={command} {user_key.public_line}\n")


def doc_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


GROUPS = {
    "hpc": ["a64fx-01", "a64fx-02", "sve384-01", "graviton3-01"],
    "x86": ["real-01"],
    "broken": ["no-python-01", "down-01"],
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnsibleFleet]:
    if shutil.which("ansible-playbook") is None:
        pytest.fail("ansible-playbook is not installed: pip install -e '.[test]'")
    specs = [
        NodeSpec("a64fx-01", doc_bytes(hardware_doc("a64fx-01.probe", "a64fx"))),
        NodeSpec("a64fx-02", doc_bytes(hardware_doc("a64fx-02.probe", "a64fx"))),
        NodeSpec("sve384-01", doc_bytes(hardware_doc("sve384-01.probe", "vl384"))),
        NodeSpec("graviton3-01", doc_bytes(hardware_doc("graviton3-01.probe", "graviton3"))),
        NodeSpec("real-01"),
        NodeSpec("no-python-01", behaviour="no-python"),
        NodeSpec("down-01", kind="closed"),
    ]
    running = AnsibleFleet(
        tmp_path_factory.mktemp("ansible-fleet"),
        specs,
        expected_stdin=probe_source(),
        real_probe=frozenset({"real-01"}),
    )
    with running:
        yield running


@dataclass
class Workspace:
    """One test's inventory (for Ansible and vlcalc alike), ansible.cfg and directories."""

    root: Path
    inventory: Path
    config: Path
    fact_cache: Path
    collected: Path
    home: Path

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.config),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "HOME": str(self.home),  # no ~/.ssh/config or ~/.ansible of the user running tests
        }
        env.pop("SSH_AUTH_SOCK", None)
        return env


def workspace(fleet: SSHFleet, root: Path) -> Workspace:
    home = root / "home"
    home.mkdir()
    ssh_args = f"-o UserKnownHostsFile={fleet.known_hosts_path} -o StrictHostKeyChecking=yes"
    lines = [
        "all:",
        "  vars:",
        f"    ansible_user: {fleet.user}",
        f"    ansible_ssh_private_key_file: {fleet.user_key_path}",
        f"    ansible_ssh_common_args: '{ssh_args}'",
        "  children:",
    ]
    for group, names in GROUPS.items():
        lines += [f"    {group}:", "      hosts:"]
        for name in names:
            lines += [
                f"        {name}:",
                "          ansible_host: 127.0.0.1",
                f"          ansible_port: {fleet.node(name).port}",
            ]
    inventory = root / "inventory.yaml"
    inventory.write_text("\n".join(lines) + "\n")
    cache = root / "facts"
    config = root / "ansible.cfg"
    config.write_text(
        "\n".join(
            [
                "[defaults]",
                "host_key_checking = True",
                "forks = 16",
                "fact_caching = jsonfile",
                f"fact_caching_connection = {cache}",
                f"remote_tmp = {root / 'remote-tmp'}",
                f"local_tmp = {root / 'local-tmp'}",
                "interpreter_python = auto_silent",
                "retry_files_enabled = False",
                "[ssh_connection]",
                # -F /dev/null: not the user's ~/.ssh/config.  No ControlPersist: no ssh master
                # processes outlive the test.  usetty: the fleet's sshd refuses PTYs.
                "ssh_args = -F /dev/null -o ControlMaster=no",
                "usetty = False",
                "",
            ]
        )
    )
    return Workspace(root, inventory, config, cache, root / "collected", home)


def ansible_playbook(
    space: Workspace, playbook: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ansible-playbook", "-i", str(space.inventory), str(PLAYBOOKS / playbook), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=space.env(),
        cwd=space.root,
    )


def vlcalc(space: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlcalc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=space.env(),
    )


def test_collect_then_report_names_nodes_by_inventory_name(
    fleet: AnsibleFleet, tmp_path: Path
) -> None:
    space = workspace(fleet, tmp_path)
    began = time.monotonic()
    run = ansible_playbook(space, "collect.yml", "-e", "vlcalc_collect_dir=collected")
    elapsed = time.monotonic() - began
    # Failed and unreachable nodes are ignored by the play (recorded, not dropped): rc 0.
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no-python-01" in run.stdout and "ignored=1" in run.stdout
    assert elapsed < 30, f"collect.yml took {elapsed:.1f} s"

    # Ansible copied the real probe over SFTP and ran that file (the nodes checked its sha256),
    # then removed its temp directory.
    commands = (fleet.node("a64fx-01").directory / "commands").read_text()
    assert "internal-sftp" in commands and "/probe.py && sleep 0" in commands
    assert not any((tmp_path / "remote-tmp").iterdir())

    written = sorted(path.name for path in space.collected.iterdir())
    assert written == sorted(f"{name}.json" for names in GROUPS.values() for name in names)

    report = vlcalc(space, "report", str(space.collected), "-f", "json")
    assert report.returncode == 4, report.stderr  # not every node answered
    nodes = {node["name"]: node for node in json.loads(report.stdout)["nodes"]}
    assert {name: node["vls"] for name, node in nodes.items() if node["status"] == "ok"} == {
        "a64fx-01": [128, 256, 512],
        "a64fx-02": [128, 256, 512],
        "sve384-01": [128, 256, 384, 512],
        "graviton3-01": [128, 256],
    }
    errors = {name: node["error"]["kind"] for name, node in nodes.items() if node["error"]}
    assert errors == {"real-01": "not-arm64", "no-python-01": "no-python", "down-01": "unreachable"}
    assert "Connection refused" in nodes["down-01"]["error"]["message"]

    # The answer for the healthy nodes alone is complete.
    healthy = [str(space.collected / f"{name}.json") for name in GROUPS["hpc"]]
    answer = vlcalc(space, "report", *healthy, "--require-vl", "256", "-f", "json")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["cluster"]["vls"] == [128, 256]

    # The jsonfile fact cache holds the kvm_sve fact of every node whose probe ran: one file per
    # host, named after it (ansible-core >= 2.19 adds "s1_"), read as it is.
    cached = vlcalc(space, "report", str(space.fact_cache), "-f", "json")
    assert cached.returncode == 4, cached.stderr  # real-01 is not arm64
    cached_nodes = {node["name"]: node["vls"] for node in json.loads(cached.stdout)["nodes"]}
    assert cached_nodes == {
        "a64fx-01": [128, 256, 512],
        "a64fx-02": [128, 256, 512],
        "sve384-01": [128, 256, 384, 512],
        "graviton3-01": [128, 256],
        "real-01": None,
    }


def preflight(space: Workspace, fleet: SSHFleet, *extra: str) -> subprocess.CompletedProcess[str]:
    scan_args = ["--known-hosts", str(fleet.known_hosts_path), "--retries", "0"]
    variables = {"vlcalc_command": [sys.executable, "-m", "vlcalc"], "vlcalc_scan_args": scan_args}
    return ansible_playbook(space, "preflight.yml", "-e", json.dumps(variables), *extra)


def test_preflight_passes_when_every_node_runs_the_vl(fleet: AnsibleFleet, tmp_path: Path) -> None:
    space = workspace(fleet, tmp_path)
    run = preflight(space, fleet, "-e", "vlcalc_limit=hpc", "-e", "required_vl=256")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "VL 256 runs on all 4 nodes: the cluster set is 128,256" in run.stdout
    assert "ok=3" in run.stdout and "failed=0" in run.stdout


@pytest.mark.parametrize(
    ("limit", "required_vl", "expected"),
    [
        (
            "hpc",
            "512",
            [
                "VL 512 is not safe on every node: the cluster set is 128,256 "
                "(4 nodes probed, 0 not).",
                "Limiting nodes: graviton3-01.",
                "Why: node graviton3-01 stops at VL 256; the others go higher.",
            ],
        ),
        (
            "hpc:broken",
            "128",
            [
                "VL 128 is not safe on every node: the cluster set is 128,256 "
                "(4 nodes probed, 2 not).",
                "Limiting nodes: no-python-01, down-01.",
                "Why: no-python-01: not probed (no-python): 'python3' was not found on the node",
                "; down-01: not probed (unreachable): 127.0.0.1:",
            ],
        ),
        (
            "broken",
            "128",
            [
                "VL 128 is not safe on every node: the cluster set is unknown (no node was "
                "probed) (0 nodes probed, 2 not).",
            ],
        ),
    ],
    ids=["vl-too-large", "nodes-not-probed", "no-node-probed"],
)
def test_preflight_fails_naming_the_limiting_nodes(
    fleet: AnsibleFleet, tmp_path: Path, limit: str, required_vl: str, expected: list[str]
) -> None:
    space = workspace(fleet, tmp_path)
    run = preflight(space, fleet, "-e", f"vlcalc_limit={limit}", "-e", f"required_vl={required_vl}")
    assert run.returncode == 2, run.stdout + run.stderr  # ansible-playbook: a task failed
    assert "Assertion failed" in run.stdout or "assert" in run.stdout
    for text in expected:
        assert text in run.stdout, run.stdout


def test_preflight_fails_on_a_vlcalc_usage_error(fleet: AnsibleFleet, tmp_path: Path) -> None:
    space = workspace(fleet, tmp_path)
    run = preflight(space, fleet, "-e", "required_vl=100")  # not a multiple of 128: exit 2
    assert run.returncode == 2, run.stdout + run.stderr
    assert '"rc": 2' in run.stdout and "--require-vl" in run.stdout
    assert "Read vlcalc's report" not in run.stdout  # stopped at the scan


def test_preflight_fails_when_the_command_prints_no_report(
    fleet: AnsibleFleet, tmp_path: Path
) -> None:
    # Exit 1 is "VL not in the cluster set" for vlcalc, but a command that printed nothing (a
    # Python without vlcalc exits 1 too) must stop at the scan task with its stderr, not reach
    # the JSON parsing.
    space = workspace(fleet, tmp_path)
    missing = [sys.executable, "-c", "import sys; sys.exit('No module named vlcalc')"]
    variables = {"vlcalc_command": missing}
    run = ansible_playbook(space, "preflight.yml", "-e", json.dumps(variables))
    assert run.returncode == 2, run.stdout + run.stderr
    assert '"rc": 1' in run.stdout and "No module named vlcalc" in run.stdout, run.stdout
    assert "Read vlcalc's report" not in run.stdout
