"""vlcalc promises Python >= 3.9 on the machine that runs it: install it into a real Python 3.9
virtual environment (when this machine has one, as pyenv provides) and run the commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def find_python39() -> str | None:
    """A working python3.9: on PATH, or one pyenv installed (its shim may not be active)."""
    candidates = [
        shutil.which("python3.9"),
        *map(str, Path.home().glob(".pyenv/versions/3.9*/bin/python3.9")),
    ]
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "--version"], capture_output=True, check=False)
        if done.returncode == 0:
            return candidate
    return None


PYTHON39 = find_python39()


@pytest.mark.skipif(PYTHON39 is None, reason="no python3.9 on this machine")
def test_commands_run_on_python_3_9(tmp_path: Path) -> None:
    assert PYTHON39 is not None
    venv = tmp_path / "venv"
    subprocess.run([PYTHON39, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    # A failed install is a failure: vlcalc promises 3.9, so its dependencies must install there.
    assert pip.returncode == 0, f"cannot install vlcalc on Python 3.9: {pip.stderr[-600:]}"
    vlcalc = str(venv / "bin" / "vlcalc")
    example = str(ROOT / "inventories" / "example-scan.json")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([vlcalc, *args], capture_output=True, text=True, check=False)

    assert run("report", example, "-f", "qemu").stdout == "-cpu host,sve=on,sve128=on,sve256=on\n"
    usage = run("scan", "--forks", "abc", "inventory.yaml")
    assert usage.returncode == 2 and usage.stderr.startswith("vlcalc: error: --forks")
    assert usage.stderr.count("\n") == 1, usage.stderr
    assert run("check", "--vls", "128,256,512", example, "-f", "json").returncode == 1
    assert "To reach VL 512" in run("report", example, "--target-vl", "512").stdout
    assert run("report", example, "-f", "bogus").returncode == 2
    probe = run("probe")
    assert probe.returncode == 0 and '"schema":"vlcalc.probe/1"' in probe.stdout
