"""Hostile input, generated: whatever a document, a VL spec or an inventory holds, vlcalc answers
with an exit code in {0, 1, 2, 4}, never a traceback; on exit 2 stdout is empty, otherwise a JSON
format prints one valid document.  A subprocess round checks that the worst inputs stay within a
memory bound.

Documents are mutations of real fixture documents (a field deleted, replaced by a hostile value,
or a node duplicated), so most of them get past the JSON parser and reach the validator, the
model and the renderers, where the interesting failures are."""

from __future__ import annotations

import copy
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vlcalc.cli import app

from fleet_fixtures import mixed_fleet

EXIT_CODES = {0, 1, 2, 4}
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

HOSTILE_TEXT = st.sampled_from(
    [
        "",
        "\x1b[2J\x1b[31mowned",
        "a\u202ednil\u202c",
        "zero\u200bwidth",
        "line\nbreak",
        "<script>alert(1)</script>",
        "x" * 5000,
        "|pipe|`tick`*star*",
        "\ud800" if False else "\u0000nul",
    ]
)
HOSTILE_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    HOSTILE_TEXT,
    st.lists(st.integers(min_value=-1, max_value=70000), max_size=20),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc[:3]):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_scans(draw: st.DrawFn) -> str:
    doc = copy.deepcopy(mixed_fleet())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [path for path in _paths(doc) if path]
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(parent[path[-1]])
        else:
            parent[path[-1]] = draw(HOSTILE_VALUE)
    return json.dumps(doc)


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def assert_well_behaved(result: Any, fmt: str) -> None:
    assert result.exit_code in EXIT_CODES, (result.exit_code, result.output)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith(("vlcalc: error: ", "vlcalc: warning: ")) for line in lines), lines
    if result.exit_code == 2:
        assert result.stdout == "", result.stdout[:500]
        assert sum(line.startswith("vlcalc: error: ") for line in lines) == 1, result.stderr
    elif fmt == "json":
        json.loads(result.stdout)


@FUZZ
@given(text=mutated_scans(), fmt=st.sampled_from(["json", "table", "markdown", "html", "qemu"]))
def test_report_on_hostile_documents(tmp_path_factory: Any, text: str, fmt: str) -> None:
    path = tmp_path_factory.mktemp("doc") / "scan.json"
    path.write_text(text)
    assert_well_behaved(run("report", str(path), "-f", fmt), fmt)


@FUZZ
@given(text=mutated_scans(), spec=st.text(max_size=40) | st.sampled_from(["128,256", "0xb"]))
def test_check_on_hostile_documents_and_specs(tmp_path_factory: Any, text: str, spec: str) -> None:
    path = tmp_path_factory.mktemp("doc") / "scan.json"
    path.write_text(text)
    assert_well_behaved(run("check", "--vls", spec, str(path), "-f", "json"), "json")


@FUZZ
@given(old=mutated_scans(), new=mutated_scans())
def test_diff_on_hostile_documents(tmp_path_factory: Any, old: str, new: str) -> None:
    base = tmp_path_factory.mktemp("diff")
    (base / "old.json").write_text(old)
    (base / "new.json").write_text(new)
    result = run("diff", str(base / "old.json"), str(base / "new.json"), "-f", "json")
    assert_well_behaved(result, "json")


YAML_SCALARS = st.sampled_from(
    ["web[0:9]", "web[0:99999999999]", "'{{ x }}'", "&a [*a]", "!!python/object:os.system",
     "[[[[[[", "1" * 5001, "~", "{a: b}", "\x1b[31m", "a\u202eb", "127.0.0.1:2222"]
)  # fmt: skip


@st.composite
def inventories(draw: st.DrawFn) -> str:
    lines = ["all:", "  children:"]
    for group in range(draw(st.integers(min_value=0, max_value=3))):
        lines += [f"    g{group}:", "      hosts:"]
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            lines.append(f"        {draw(YAML_SCALARS)}:")
            if draw(st.booleans()):
                lines.append(f"          ansible_port: {draw(YAML_SCALARS)}")
    return "\n".join(lines) + "\n" + draw(st.sampled_from(["", "x: [", "\t- tab"]))


@FUZZ
@given(text=inventories())
def test_scan_on_hostile_inventories(tmp_path_factory: Any, text: str) -> None:
    """The limit matches no host, so nothing is ever contacted: this is the inventory reader."""
    path = tmp_path_factory.mktemp("inv") / "inventory.yaml"
    path.write_text(text)
    result = run("scan", str(path), "--limit", "__vlcalc_fuzz_matches_nothing__", "-f", "json")
    assert result.exit_code == 2, result.output
    assert_well_behaved(result, "json")


WORST_INPUTS = {
    "nested.json": "[" * 100_000,
    "bigint.json": '{"schema": "vlcalc.scan/1", "n": ' + "9" * 5001 + "}",
    "range.yaml": "all:\n  hosts:\n    web[0:99999999999]:\n",
    "bomb.yaml": "a: &a ['x','x','x','x','x','x','x','x','x']\n"
    + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
}


def test_worst_inputs_stay_within_memory(tmp_path: Path) -> None:
    for name, text in WORST_INPUTS.items():
        path = tmp_path / name
        path.write_text(text)
        command = "scan" if name.endswith(".yaml") else "report"
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run(
            [sys.executable, "-m", "vlcalc", command, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        assert done.returncode == 2, (name, done.stderr)
        assert done.stdout == "" and "Traceback" not in done.stderr, (name, done.stderr)
        assert done.stderr.count("\n") == 1, (name, done.stderr)
        # ru_maxrss of children is the largest child so far: only a new record can be checked.
        assert peak_mb < 300 or peak_mb * 1024 == before, (name, peak_mb)
