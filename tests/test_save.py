"""``--save``: the path is checked before any node is probed, only regular files are replaced, and
a save that fails after the scan never discards the answer.

The scans here probe ``localhost`` over ``ansible_connection: local`` (the real probe on this x86
machine: a ``not-arm64`` node, so the answer is "incomplete", exit 4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import vlcalc.scan
from vlcalc.errors import InputError
from vlcalc.scan import check_save_path

LOCAL_INVENTORY = "all:\n  hosts:\n    here:\n      ansible_connection: local\n"


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(LOCAL_INVENTORY)
    return path


def scan(inventory: Path, *args: str) -> tuple[int, str, str]:
    from vlcalc.cli import app

    result = CliRunner().invoke(app, ["scan", str(inventory), *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_regular_file_is_saved_and_replaced(inventory: Path, tmp_path: Path) -> None:
    target = tmp_path / "scan.json"
    target.write_text("old")
    code, out, _ = scan(inventory, "--save", str(target), "-f", "json")
    assert code == 4 and json.loads(out)["complete"] is False
    saved = json.loads(target.read_text())
    assert [node["name"] for node in saved["nodes"]] == ["here"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("empty", "--save: needs a file name"),
        ("symlink", "is a symbolic link"),
        ("fifo", "is not a regular file"),
        ("directory", "is not a regular file"),
        ("missing-dir", "cannot write there"),
    ],
)
def test_bad_paths_are_refused_before_scanning(
    inventory: Path, tmp_path: Path, make: str, expected: str
) -> None:
    target = tmp_path / "scan.json"
    if make == "empty":
        target = ""  # type: ignore[assignment]  # Path("") would be "."
    elif make == "symlink":
        (tmp_path / "elsewhere.json").write_text("keep me")
        target.symlink_to(tmp_path / "elsewhere.json")
    elif make == "fifo":
        os.mkfifo(target)
    elif make == "directory":
        target.mkdir()
    else:
        target = tmp_path / "no" / "such" / "scan.json"
    code, out, err = scan(inventory, "--save", str(target))
    assert code == 2
    assert out == ""  # nothing was scanned: the refusal came first
    assert err.count("\n") == 1 and err.startswith("vlcalc: error: ") and expected in err
    if make == "symlink":
        assert (tmp_path / "elsewhere.json").read_text() == "keep me"
        assert target.is_symlink()


def test_a_device_is_never_replaced() -> None:
    with pytest.raises(InputError, match="not a regular file"):
        check_save_path("/dev/null")
    assert Path("/dev/null").is_char_device()


def test_a_failed_save_after_the_scan_still_prints_the_answer(
    inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up (or the path changes) while nodes are probed: the answer is printed, the
    failure is one line, and the exit code says the command did not do all it was asked."""

    def disk_full(path: str, document: object) -> None:
        raise InputError("cannot write: No space left on device", source=path)

    monkeypatch.setattr(vlcalc.scan, "save_atomically", disk_full)
    code, out, err = scan(inventory, "--save", str(tmp_path / "scan.json"), "-f", "json")
    assert code == 2
    assert json.loads(out)["nodes"][0]["name"] == "here"
    assert "No space left on device (the scan is not saved; its answer follows)" in err
