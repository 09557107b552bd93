"""Time ``vlcalc report`` over a synthetic scan document of many nodes.

    python bench/report_bench.py [--nodes 100000] [--runs 3] [--formats table,json]
                                 [--base-src DIR]

The document is generated into a temp dir (never committed) from the fixture probe documents of
``tests/fleet_fixtures.py``: the hardware kinds in turn, 50 groups (racks) and two domains, two
kernels, and 1 % of the nodes failed (unreachable), as ``vlcalc scan --save`` writes it.  Each
format is run ``--runs`` times as ``python -m vlcalc report DOC -f FORMAT`` with stdout to a file;
wall time, user+system CPU and peak RSS come from ``os.wait4`` (``bench/measure.py``), and the
median is printed with the 1-minute load average.

``--base-src DIR`` adds a ``base`` leg: the same commands run from another source tree (e.g. the
last release, ``git worktree add /tmp/vlcalc-base v0.1.0``), interleaved run by run with this
tree's so both see the same load, and the table gains this tree's time as a ratio of the base's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from measure import Measurement, run_measured  # noqa: E402

from fleet_fixtures import HARDWARE, error_entry, hardware_doc, ok_entry, scan_doc  # noqa: E402


def synthetic_scan(nodes: int) -> dict[str, Any]:
    kinds = list(HARDWARE)
    entries = []
    for index in range(nodes):
        name = f"node{index:06d}.dc{index % 3}.example"
        groups = [f"rack{index % 50:02d}", "domain_a" if index % 2 else "domain_b"]
        if index % 100 == 99:
            entries.append(error_entry(name, "unreachable", "connection refused", groups))
            continue
        kernel = "6.1.0-27-arm64" if index % 3 else "6.12.48+deb12-arm64"
        doc = hardware_doc(name, kinds[index % len(kinds)], kernel=kernel)
        entries.append(ok_entry(name, doc, groups))
    return scan_doc(entries, inventory="inventories/synthetic.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--formats", default="table,json")
    parser.add_argument("--base-src", type=Path, help="a source tree to compare with (base leg)")
    args = parser.parse_args(argv)
    if args.base_src and not (args.base_src / "vlcalc").is_dir():
        parser.error(f"--base-src: {args.base_src} has no vlcalc/ package")
    trees = {"vlcalc": ROOT} | ({"base": args.base_src.resolve()} if args.base_src else {})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="vlcalc-report-bench-") as temp:
        base = Path(temp)
        env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
        path = base / "scan.json"
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(synthetic_scan(args.nodes), handle, indent=1)
        size_mb = path.stat().st_size / 1e6
        print(f"{args.nodes} nodes, {size_mb:.0f} MB scan document", file=sys.stderr)
        results: dict[tuple[str, str], list[Measurement]] = {}
        formats = [fmt for fmt in args.formats.split(",") if fmt]
        argv0 = [sys.executable, "-m", "vlcalc", "report", str(path)]

        def run(leg: str, fmt: str, out: Path, err: Path) -> Measurement:
            # cwd and PYTHONPATH both name the leg's tree: `python -m vlcalc` imports from it.
            tree_env = {**env, "PYTHONPATH": str(trees[leg])}
            return run_measured(
                [*argv0, "-f", fmt], env=tree_env, stdout=out, stderr=err, cwd=trees[leg]
            )

        # Warm-up (page cache, byte-code cache); not counted.
        for leg in trees:
            run(leg, "json", base / "o", base / "e")
        for number in range(1, args.runs + 1):
            for fmt in formats:
                for leg in trees:
                    out, err = base / f"{leg}-{fmt}.out", base / f"{leg}-{fmt}.err"
                    m = run(leg, fmt, out, err)
                    if m.exit_code not in (0, 4):  # 4: the answer is incomplete (1 % failed)
                        print(err.read_text()[-2000:], file=sys.stderr)
                        return 1
                    results.setdefault((leg, fmt), []).append(m)
                    print(
                        f"   {leg:<6} {fmt:<6} run {number}: wall {m.wall_s:6.2f} s"
                        f"  cpu {m.cpu_s:6.2f} s  maxrss {m.maxrss_kb / 1024:6.0f} MB"
                        f"  load {m.load_1m:5.2f}  exit {m.exit_code}"
                        f"  stdout {out.stat().st_size / 1e3:.0f} kB",
                        file=sys.stderr,
                        flush=True,
                    )
    print(f"\nvlcalc report, {args.nodes} nodes ({size_mb:.0f} MB), medians of {args.runs} runs\n")
    print("| leg | format | wall s | CPU s | peak RSS MB | load (med/max) | wall / base |")
    print("|---|---|---|---|---|---|---|")
    for (leg, fmt), ms in results.items():
        loads = [m.load_1m for m in ms]
        wall = statistics.median(m.wall_s for m in ms)
        base_ms = results.get(("base", fmt))
        ratio = f"{wall / statistics.median(m.wall_s for m in base_ms):.2f}x" if base_ms else "-"
        print(
            f"| {leg} | {fmt} | {wall:.2f} |"
            f" {statistics.median(m.cpu_s for m in ms):.2f} |"
            f" {statistics.median(m.maxrss_kb for m in ms) / 1024:.0f} |"
            f" {statistics.median(loads):.2f}/{max(loads):.2f} | {ratio} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
