"""Benchmark ``vlcalc scan`` against parallel OpenSSH and Ansible on a loopback sshd fleet.

    python bench/scan_bench.py [--sizes 50,200,1000] [--forks 16] [--runs 3]
                               [--legs vlcalc,openssh-transport,ssh,ansible]
                               [--sweep-forks 4,8,16,32,64]
                               [--sweep-size 200] [--sweep-delays-ms 0,100]
                               [--json results.json]

One run starts a fleet of real OpenSSH sshd processes on 127.0.0.1 (``tests/sshfleet.py``, the
same mechanism as the scan tests): one sshd per node, each with its own host key and a forced
command that reads stdin, checks that it is exactly the probe source and prints the node's own
fixture probe document (``tests/fleet_fixtures.hardware_doc``, the hardware kinds in turn).  For
every size N (the first N nodes of the fleet) and every run, the legs are timed one after the
other at the same parallelism F, on the same inventory and known_hosts:

``vlcalc``   ``python -m vlcalc scan INV --forks F --known-hosts KH --ssh-config EMPTY -f json``
             (the whole CLI: start-up, imports, inventory, scan, report).  Checked: the report is
             complete and has N nodes.
``openssh-transport``  the ``vlcalc`` leg with ``--transport openssh``: the same CLI, with one
             system ``ssh`` client per node (plus one ``ssh -G`` to resolve it) instead of
             paramiko.  Checked like ``vlcalc``.
``ssh``      ``xargs -P F -n 1 sh -c 'exec ssh -F EMPTY -o BatchMode=yes -o
             StrictHostKeyChecking=yes -o UserKnownHostsFile=KH -o ControlMaster=no -o
             IdentitiesOnly=yes -i KEY -l USER -p PORT 127.0.0.1 python3 - < PROBE'`` -- the floor:
             one OpenSSH client per node, the probe on stdin, outputs collected on one pipe (each
             document is one short line, written atomically).  Checked: N JSON documents.
``ansible``  ``ansible all -i INV -m raw -a 'python3 -' --forks F`` with ANSIBLE_CONFIG in a temp
             dir (host_key_checking = True; ssh_args = -C -o ControlMaster=no, i.e. Ansible's
             default minus connection sharing, which would fork persistent masters outside the
             measured tree and cannot help one task per host; usetty = False, as the fleet's
             forced commands refuse a PTY) and ``ansible_ssh_common_args``
             pointing at the same known_hosts with StrictHostKeyChecking=yes.  ``raw`` cannot
             send the probe on stdin, so for this leg the nodes are switched to a forced command
             that prints the document without reading stdin (behaviour ``ok-ignore-stdin``): the
             Ansible leg moves ~27 KB less per node than the other two.  Checked: N ``CHANGED``.
``paramiko`` (optional) ``bench/bare_paramiko.py``: the least a paramiko client does per node.
``base``     (optional) the ``vlcalc`` leg run from another source tree, ``--base-src DIR`` (e.g.
             ``git archive OLD vlcalc | tar -x -C DIR``): before/after numbers under the same load.

The forks sweep (``--sweep-forks``) times the sweep legs at N = ``--sweep-size`` for every F and
every node delay in ``--sweep-delays-ms``: with a delay the nodes sleep that long after checking
stdin and before answering (behaviour ``ok-slow``), standing in for the probe's own run time on
a real node (python3 start-up plus the KVM queries), which the loopback fleet's shell script
does not have.

Each leg's controller side is accounted with ``os.wait4`` on its process tree (see
``bench/measure.py``): wall time, user+system CPU of the command and every descendant, the
largest single process RSS, and the largest sampled sum of RSS over the live tree.  The sshd side
is not counted (it shares the 2 cores, so it does slow every leg's wall time).  Medians over
``--runs`` are printed, with the 1-minute load average (median and max over the runs).  The legs
of one run are interleaved so that background load hits them alike; one untimed warm-up run of
each leg first fills the page cache and a byte-code cache in the temp dir (as ``pip install``
would have compiled it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import Measurement, become_subreaper, run_measured  # noqa: E402

from vlcalc.probe import probe_source  # noqa: E402

from fleet_fixtures import HARDWARE, hardware_doc  # noqa: E402
from sshfleet import NodeSpec, SSHFleet, sshd_version  # noqa: E402

LEGS = ("vlcalc", "openssh-transport", "ssh", "ansible", "paramiko", "base")
VLCALC_LEGS = ("vlcalc", "openssh-transport", "base")  # the vlcalc CLI, its JSON report


@dataclass(frozen=True)
class Row:
    leg: str
    size: int
    forks: int
    delay_ms: int
    run: int
    ok: int
    measurement: Measurement


class Workspace:
    """The fleet plus, per size, an inventory and a port list of its first N nodes."""

    def __init__(self, base: Path, fleet: SSHFleet, probe_path: Path, base_src: Path | None):
        self.base = base
        self.base_src = base_src
        self.fleet = fleet
        self.probe_path = probe_path
        self.home = base / "home"
        self.home.mkdir()
        self.empty_config = base / "empty_ssh_config"
        self.empty_config.write_text("")
        self.names = [spec.name for spec in fleet.specs]
        ansible_dir = base / "ansible"
        ansible_dir.mkdir()
        self.ansible_cfg = ansible_dir / "ansible.cfg"
        self.ansible_cfg.write_text(
            "[defaults]\n"
            "host_key_checking = True\n"
            "interpreter_python = /usr/bin/python3\n"
            f"local_tmp = {ansible_dir / 'tmp'}\n"
            "[ssh_connection]\n"
            "ssh_args = -C -o ControlMaster=no\n"
            "usetty = False\n"
        )

    def inventory(self, size: int) -> Path:
        path = self.base / f"inventory-{size}.yaml"
        if path.exists():
            return path
        common = (
            f"-o UserKnownHostsFile={self.fleet.known_hosts_path} -o GlobalKnownHostsFile=/dev/null"
            " -o StrictHostKeyChecking=yes"
        )
        lines = [
            "all:",
            "  vars:",
            "    ansible_host: 127.0.0.1",
            f"    ansible_user: {self.fleet.user}",
            f"    ansible_ssh_private_key_file: {self.fleet.user_key_path}",
            f"    ansible_ssh_common_args: {json.dumps(common)}",
            "  hosts:",
        ]
        for name in self.names[:size]:
            lines += [f"    {name}:", f"      ansible_port: {self.fleet.node(name).port}"]
        path.write_text("\n".join(lines) + "\n")
        return path

    def ports(self, size: int) -> Path:
        path = self.base / f"ports-{size}.txt"
        path.write_text("".join(f"{self.fleet.node(n).port}\n" for n in self.names[:size]))
        return path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        env["HOME"] = str(self.home)
        env["ANSIBLE_CONFIG"] = str(self.ansible_cfg)
        env["ANSIBLE_HOST_KEY_CHECKING"] = "True"
        # Byte-code as after `pip install` (which compiles it): with PYTHONDONTWRITEBYTECODE set,
        # an editable checkout recompiles vlcalc's sources on every start (~150 ms of CPU).  The
        # cache goes to the temp dir, never into the work tree; the warm-up run fills it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.base / "pycache")
        return env

    def set_behaviour(self, size: int, behaviour: str) -> None:
        for name in self.names[:size]:
            self.fleet.set_behaviour(name, behaviour)

    def set_delay(self, size: int, delay_ms: int) -> None:
        """Nodes answer after ``delay_ms`` (0: at once)."""
        self.delay_ms = delay_ms
        for name in self.names[:size]:
            (self.fleet.node(name).directory / "delay_s").write_text(str(delay_ms / 1000))
        self.set_behaviour(size, self.answering())

    def answering(self) -> str:
        return "ok-slow" if getattr(self, "delay_ms", 0) else "ok"


def _argv(leg: str, ws: Workspace, size: int, forks: int) -> list[str]:
    fleet = ws.fleet
    if leg in VLCALC_LEGS:
        transport = ["--transport", "openssh"] if leg == "openssh-transport" else []
        return [
            sys.executable,
            "-m",
            "vlcalc",
            "scan",
            str(ws.inventory(size)),
            "--forks",
            str(forks),
            "--known-hosts",
            str(fleet.known_hosts_path),
            "--ssh-config",
            str(ws.empty_config),
            "-f",
            "json",
            *transport,
        ]
    if leg == "ssh":
        script = (
            f"exec ssh -F {ws.empty_config} -o BatchMode=yes -o StrictHostKeyChecking=yes"
            f" -o UserKnownHostsFile={fleet.known_hosts_path} -o GlobalKnownHostsFile=/dev/null"
            f" -o ControlMaster=no -o IdentitiesOnly=yes -i {fleet.user_key_path}"
            f' -l {fleet.user} -p "$1" 127.0.0.1 python3 - < {ws.probe_path}'
        )
        xargs = ["xargs", "-P", str(forks), "-n", "1", "-a", str(ws.ports(size))]
        return [*xargs, "sh", "-c", script, "sh"]
    if leg == "ansible":
        ansible = shutil.which("ansible") or "ansible"
        return [
            ansible,
            "all",
            "-i",
            str(ws.inventory(size)),
            "-m",
            "raw",
            "-a",
            "python3 -",
            "--forks",
            str(forks),
        ]
    if leg == "paramiko":
        return [
            sys.executable,
            str(ROOT / "bench" / "bare_paramiko.py"),
            str(ws.ports(size)),
            str(fleet.known_hosts_path),
            str(fleet.user_key_path),
            str(fleet.user),
            str(ws.probe_path),
            str(forks),
        ]
    raise ValueError(leg)


def _count_ok(leg: str, stdout: str) -> int:
    """How many nodes answered with their document, by each leg's own output."""
    if leg in VLCALC_LEGS:
        try:
            report = json.loads(stdout)
        except ValueError:
            return 0
        return sum(1 for node in report.get("nodes", []) if node.get("status") != "error")
    if leg == "ssh":
        count = 0
        for line in stdout.splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                count += json.loads(line).get("schema") == "vlcalc.probe/1"
        return count
    if leg == "ansible":
        return stdout.count("| CHANGED | rc=0 >>")
    if leg == "paramiko":
        words = stdout.split()
        return int(words[1]) if len(words) == 2 and words[0] == "ok" else 0
    raise ValueError(leg)


def run_leg(ws: Workspace, leg: str, size: int, forks: int, run: int, sample_s: float) -> Row:
    if leg == "ansible":
        ws.set_behaviour(size, "ok-ignore-stdin")
    try:
        out, err = ws.base / f"{leg}.out", ws.base / f"{leg}.err"
        measured = run_measured(
            _argv(leg, ws, size, forks),
            env=ws.env(),
            cwd=ws.base_src if leg == "base" else ROOT,
            stdout=out,
            stderr=err,
            sample_s=sample_s,
        )
    finally:
        if leg == "ansible":
            ws.set_behaviour(size, ws.answering())
    stdout = out.read_text(errors="replace")
    ok = _count_ok(leg, stdout)
    if ok != size:
        tail = stdout[-1000:] + err.read_text(errors="replace")[-1000:]
        print(
            f"!! {leg} N={size} F={forks}: {ok} of {size} nodes answered"
            f" (exit {measured.exit_code}); output tail:\n{tail}",
            file=sys.stderr,
        )
    row = Row(leg, size, forks, getattr(ws, "delay_ms", 0), run, ok, measured)
    m = measured
    print(
        f"   {leg:<8} N={size:<5} F={forks:<3} delay {row.delay_ms:<4} run {run}:"
        f" wall {m.wall_s:7.2f} s  cpu"
        f" {m.cpu_s:7.2f} s ({m.cpu_s * 1000 / size:6.1f} ms/node)"
        f"  maxrss {m.maxrss_kb / 1024:6.1f} MB  tree {m.tree_rss_kb / 1024:7.1f} MB"
        f"  load {m.load_1m:5.2f}  ok {ok}/{size}",
        file=sys.stderr,
        flush=True,
    )
    return row


@dataclass(frozen=True)
class Summary:
    leg: str
    size: int
    forks: int
    delay_ms: int
    runs: int
    ok_all: bool
    wall_s: float
    cpu_s: float
    cpu_ms_per_node: float
    maxrss_mb: float
    tree_rss_mb: float
    load_median: float
    load_max: float


def summarise(rows: Sequence[Row]) -> list[Summary]:
    groups: dict[tuple[str, int, int, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.leg, row.size, row.forks, row.delay_ms), []).append(row)
    result = []
    for (leg, size, forks, delay_ms), items in groups.items():
        ms = [r.measurement for r in items]
        cpu = statistics.median(m.cpu_s for m in ms)
        result.append(
            Summary(
                leg=leg,
                size=size,
                forks=forks,
                delay_ms=delay_ms,
                runs=len(items),
                ok_all=all(r.ok == size for r in items),
                wall_s=statistics.median(m.wall_s for m in ms),
                cpu_s=cpu,
                cpu_ms_per_node=cpu * 1000 / size,
                maxrss_mb=statistics.median(m.maxrss_kb for m in ms) / 1024,
                tree_rss_mb=statistics.median(m.tree_rss_kb for m in ms) / 1024,
                load_median=statistics.median(m.load_1m for m in ms),
                load_max=max(m.load_1m for m in ms),
            )
        )
    return result


def _table(summaries: Sequence[Summary]) -> str:
    head = (
        f"| {'leg':<8} | {'N':>5} | {'F':>3} | {'delay':>5} | {'wall s':>7} | {'CPU s':>7} |"
        f" {'CPU ms/node':>11} |"
        f" {'max RSS MB':>10} | {'tree RSS MB':>11} | {'load (med/max)':>14} | ok |"
    )
    lines = [head, "|" + "|".join("-" * (len(cell)) for cell in head.split("|")[1:-1]) + "|"]
    for s in summaries:
        lines.append(
            f"| {s.leg:<8} | {s.size:>5} | {s.forks:>3} | {s.delay_ms:>5} | {s.wall_s:>7.2f} |"
            f" {s.cpu_s:>7.2f} |"
            f" {s.cpu_ms_per_node:>11.1f} | {s.maxrss_mb:>10.1f} | {s.tree_rss_mb:>11.1f} |"
            f" {s.load_median:>6.2f}/{s.load_max:<7.2f} | {'y' if s.ok_all else 'NO'} |"
        )
    return "\n".join(lines)


def _ratios(summaries: Sequence[Summary]) -> str:
    by = {(s.leg, s.size, s.forks, s.delay_ms): s for s in summaries}
    lines = []
    for (leg, size, forks, delay), s in sorted(by.items(), key=lambda kv: kv[0][1:][::-1]):
        if leg != "vlcalc":
            continue
        parts = [f"N={size:<5} F={forks:<3} delay {delay:<4}"]
        ssh = by.get(("ssh", size, forks, delay))
        ansible = by.get(("ansible", size, forks, delay))
        if ssh:
            parts.append(
                f"vlcalc/ssh wall {s.wall_s / ssh.wall_s:4.2f}x cpu {s.cpu_s / ssh.cpu_s:4.2f}x"
            )
        if ansible:
            parts.append(
                f"ansible/vlcalc wall {ansible.wall_s / s.wall_s:4.2f}x"
                f" cpu {ansible.cpu_s / s.cpu_s:4.2f}x"
            )
        openssh = by.get(("openssh-transport", size, forks, delay))
        if openssh:
            parts.append(
                f"openssh-transport/vlcalc wall {openssh.wall_s / s.wall_s:4.2f}x"
                f" cpu {openssh.cpu_s / s.cpu_s:4.2f}x"
            )
            if ssh:
                parts.append(
                    f"openssh-transport/ssh wall {openssh.wall_s / ssh.wall_s:4.2f}x"
                    f" cpu {openssh.cpu_s / ssh.cpu_s:4.2f}x"
                )
        before = by.get(("base", size, forks, delay))
        if before:
            parts.append(
                f"vlcalc/base wall {s.wall_s / before.wall_s:4.2f}x"
                f" cpu {s.cpu_s / before.cpu_s:4.2f}x"
            )
        if len(parts) > 1:
            lines.append("  ".join(parts))
    return "\n".join(lines)


def _growth(summaries: Sequence[Summary], leg: str = "vlcalc") -> str:
    rows = sorted(
        (s for s in summaries if s.leg == leg), key=lambda s: (s.delay_ms, s.forks, s.size)
    )
    lines = []
    for s in rows:
        lines.append(
            f"{leg} N={s.size:<5} F={s.forks:<3} delay {s.delay_ms:<4}"
            f" wall {s.wall_s * 1000 / s.size:6.2f} ms/node"
            f"  cpu {s.cpu_ms_per_node:5.2f} ms/node  nodes/s {s.size / s.wall_s:7.1f}"
        )
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,200,1000", help="fleet sizes N (%(default)s)")
    parser.add_argument("--forks", type=int, default=16, help="parallelism F of every leg")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    parser.add_argument("--legs", default="vlcalc,ssh,ansible", help=f"any of {','.join(LEGS)}")
    parser.add_argument("--sweep-forks", default="", help="also time vlcalc at these F values")
    parser.add_argument("--sweep-size", type=int, default=200, help="N of the forks sweep")
    parser.add_argument("--sweep-legs", default="vlcalc", help="legs of the forks sweep")
    parser.add_argument(
        "--sweep-delays-ms", default="0", help="node answer delays of the forks sweep (ms)"
    )
    parser.add_argument("--sample-s", type=float, default=0.25, help="tree RSS sampling (0: off)")
    parser.add_argument("--base-src", type=Path, help="the base leg's vlcalc source tree")
    parser.add_argument("--json", help="also write every run and the medians to this file")
    args = parser.parse_args(argv)

    sizes = _int_list(args.sizes)
    sweep = _int_list(args.sweep_forks)
    delays = _int_list(args.sweep_delays_ms) or [0]
    legs = [leg for leg in args.legs.split(",") if leg]
    sweep_legs = [leg for leg in args.sweep_legs.split(",") if leg]
    for leg in legs + sweep_legs:
        if leg not in LEGS:
            parser.error(f"unknown leg {leg!r}")
    if "base" in legs + sweep_legs and not (args.base_src and (args.base_src / "vlcalc").is_dir()):
        parser.error("the base leg needs --base-src DIR with DIR/vlcalc")
    if "ansible" in legs and shutil.which("ansible") is None:
        print("ansible not found: skipping the ansible leg (pip install ansible-core)")
        legs.remove("ansible")
    become_subreaper()
    fleet_size = max(sizes + ([args.sweep_size] if sweep else []))
    kinds = list(HARDWARE)
    probe = probe_source()
    specs = []
    for index in range(fleet_size):
        name = f"node{index:04d}"
        document = json.dumps(hardware_doc(name, kinds[index % len(kinds)])).encode() + b"\n"
        specs.append(NodeSpec(name, document))
    flags = ("-r",) if sshd_version() < (9, 8) else ()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="vlcalc-bench-") as temp:
        base = Path(temp)
        probe_path = base / "probe.py"
        probe_path.write_bytes(probe)
        fleet = SSHFleet(base / "fleet", specs, expected_stdin=probe, sshd_flags=flags)
        with fleet:
            print(
                f"fleet: {fleet_size} sshd on 127.0.0.1 started in {fleet.startup_s:.1f} s"
                f" (sshd flags {' '.join(flags) or 'none'}); cpus {os.cpu_count()}",
                file=sys.stderr,
            )
            ws = Workspace(base, fleet, probe_path, args.base_src)
            warm = min(sizes + ([args.sweep_size] if sweep else []))
            for leg in dict.fromkeys(legs + (sweep_legs if sweep else [])):
                run_leg(ws, leg, warm, args.forks, 0, 0.0)  # warm-up: page and byte-code caches
            for size in sizes:
                for run in range(1, args.runs + 1):
                    for leg in legs:
                        rows.append(run_leg(ws, leg, size, args.forks, run, args.sample_s))
            for delay in delays if sweep else []:
                ws.set_delay(args.sweep_size, delay)
                for run in range(1, args.runs + 1):
                    for forks in sweep:
                        for leg in sweep_legs:
                            if (
                                not delay
                                and forks == args.forks
                                and args.sweep_size in sizes
                                and leg in legs
                            ):
                                continue  # measured above
                            rows.append(
                                run_leg(ws, leg, args.sweep_size, forks, run, args.sample_s)
                            )
    summaries = summarise(rows)
    print(f"\nmedians of {args.runs} run(s); load = 1-minute load average before each run\n")
    print(_table(summaries))
    print()
    print(_ratios(summaries))
    print()
    print(_growth(summaries))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": [{**asdict(r), "measurement": asdict(r.measurement)} for r in rows],
                    "medians": [asdict(s) for s in summaries],
                },
                indent=1,
            )
        )
    failed = any(not s.ok_all for s in summaries)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
