"""The benchmark scripts run end to end in a tiny configuration (no timing is asserted)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.ssh
def test_scan_bench_tiny(tmp_path: Path) -> None:
    legs = "vlcalc,openssh-transport,ssh,paramiko" + (",ansible" if shutil.which("ansible") else "")
    results = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "scan_bench.py"),
            "--sizes",
            "5",
            "--runs",
            "1",
            "--forks",
            "2",
            "--legs",
            legs,
            "--sweep-forks",
            "1,2",
            "--sweep-size",
            "3",
            "--sweep-delays-ms",
            "0,20",
            "--json",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    medians = json.loads(results.read_text())["medians"]
    measured = {(m["leg"], m["size"], m["forks"], m["delay_ms"]) for m in medians}
    assert {(leg, 5, 2, 0) for leg in legs.split(",")} <= measured
    assert {("vlcalc", 3, f, d) for f in (1, 2) for d in (0, 20)} <= measured
    for median in medians:
        assert median["ok_all"], median
        assert median["cpu_s"] > 0 and median["maxrss_mb"] > 0
    assert "vlcalc/ssh wall" in done.stdout and "| vlcalc   |     5 |" in done.stdout
    assert "openssh-transport/vlcalc wall" in done.stdout


def test_report_bench_tiny() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "report_bench.py"),
            "--nodes",
            "300",
            "--runs",
            "1",
            "--base-src",
            str(ROOT),  # the base leg's code path, compared with itself
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for leg in ("vlcalc", "base"):
        assert f"| {leg} | table |" in done.stdout and f"| {leg} | json |" in done.stdout
    assert "| base | json |" in done.stdout and "| 1.00x |" in done.stdout
