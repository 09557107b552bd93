"""Usage errors through the real entry point: one ``vlcalc: error:`` line, exit 2, no box, no
pydantic wording; and the process-wide GC policy is set by ``main()`` only."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlcalc.cli import app

EXAMPLE_SCAN = Path(__file__).resolve().parents[1] / "inventories" / "example-scan.json"


def vlcalc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlcalc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["scan", "--forks", "abc", "inv.yaml"], "--forks: 'abc' is not a whole number"),
        (["scan", "--forks", "0", "inv.yaml"], "--forks: '0' is below the minimum 1"),
        (["scan", "--forks", "5000", "inv.yaml"], "--forks: '5000' is above the maximum 1024"),
        (["scan", "--timeout", "nan", "inv.yaml"], "--timeout: 'nan' is not a number"),
        (["scan", "--timeout", "soon", "inv.yaml"], "--timeout: 'soon' is not a number"),
        (["report", "--bogus", "x.json"], "No such option: --bogus"),
        (["report"], "Missing argument 'PATH...'."),
        (["check", "x.json"], "Missing option '--vls'."),
        (["report", "x.json", "-f"], "Option '-f' requires an argument."),
        (["scan", "a.yaml", "b.yaml"], "unexpected extra argument"),
        (["nosuch"], "No such command 'nosuch'."),
        (["report", "x.json", "-f", "yaml"], "'yaml' is not one of 'table', 'json', 'markdown'"),
        (["check", "--vls", "128", "x.json", "-f", "qemu"], "'qemu' is not one of 'table'"),
        (["lab", "bogus"], "invalid choice: 'bogus'"),
        (["lab"], "the following arguments are required: command"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], expected: str) -> None:
    done = vlcalc(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("vlcalc: error: ")
    assert expected in lines[0]
    assert "Input should be" not in lines[0] and "Traceback" not in done.stderr
    assert lines[0].endswith("--help')")


def test_help_and_version_still_exit_0() -> None:
    assert vlcalc("--version").stdout.startswith("vlcalc ")
    done = vlcalc("report", "--help")
    assert done.returncode == 0 and "Usage: vlcalc report" in done.stdout


def test_an_in_process_call_leaves_the_collector_alone() -> None:
    """Commands never touch the GC: only ``main()`` sets the process's policy."""
    assert gc.isenabled()
    result = CliRunner().invoke(app, ["report", str(EXAMPLE_SCAN), "-f", "json"])
    assert result.exit_code in (0, 1, 4), result.output
    assert gc.isenabled()
    assert not gc.get_freeze_count()


def test_the_lab_uses_the_same_exit_codes() -> None:
    """1 means "the answer falls short" everywhere; a lab that cannot do its job exits 2."""
    bad_node = vlcalc("lab", "up", "--node", "a=12x", "--dir", "/nonexistent/lab")
    assert bad_node.returncode == 2, bad_node.stderr
    assert "'12x' is not a VL" in bad_node.stderr
    assert vlcalc("lab", "nosuch").returncode == 2


def test_an_empty_try_is_refused_like_an_empty_vls() -> None:
    done = vlcalc("probe", "--try", "")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "vlcalc: error: --try: empty VL set: write e.g. 128,256 or none\n"
