"""Hostile or mistyped input through the real command line (``python -m vlcalc`` in a subprocess):
each case must end with one ``vlcalc: error:`` line on stderr, exit 2, nothing on stdout, no
traceback, and a bounded peak memory (README "Limits and bad input").

Each run goes through a small wrapper process so that ``RUSAGE_CHILDREN`` holds vlcalc's peak RSS
alone, not the largest child this test session ever had.  A crash (a segmentation fault from a
too-deep parser stack), a hang (a FIFO) or an OOM-sized allocation fails the test instead of
passing unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vlcalc.inventory import (
    MAX_GROUP_DEPTH,
    MAX_HOST_ENTRIES,
    MAX_HOSTS,
    MAX_HOSTS_PER_RANGE,
    MAX_INVENTORY_BYTES,
    MAX_YAML_DEPTH,
)

ROOT = Path(__file__).resolve().parents[1]
# vlcalc imports typer, rich and paramiko: about 50 MB before it reads anything (measured).  The
# inputs below would take from 1 GB to hundreds of GB if built.
PEAK_RSS_LIMIT_KB = 256 * 1024
# The wrapper also caps vlcalc's address space, so that a regression fails with a MemoryError
# instead of taking the machine's memory (or the OOM killer) with it.
ADDRESS_SPACE_LIMIT = 2 * 1024**3
WRAPPER = """
import json, resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, (BYTES, BYTES))
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": proc.returncode, "out": proc.stdout, "err": proc.stderr, "kb": peak}))
""".replace("BYTES", str(ADDRESS_SPACE_LIMIT))


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    peak_kb: int


def vlcalc(*args: str, cwd: Path) -> Run:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    wrapper = subprocess.run(
        [sys.executable, "-c", WRAPPER, sys.executable, "-m", "vlcalc", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=180,
        check=True,
    )
    result = json.loads(wrapper.stdout)
    return Run(result["code"], result["out"], result["err"], result["kb"])


def assert_refused(run: Run, *fragments: str) -> None:
    """Exit 2, empty stdout, one ``vlcalc: error:`` line holding every fragment, bounded RSS."""
    assert run.code == 2, run
    assert run.out == ""
    assert "Traceback" not in run.err
    lines = run.err.splitlines()
    errors = [line for line in lines if line.startswith("vlcalc: error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], run.err
    for fragment in fragments:
        assert fragment in errors[0], run.err
    assert run.peak_kb < PEAK_RSS_LIMIT_KB, f"peak RSS {run.peak_kb} KB"


def scan(tmp_path: Path, inventory: str | bytes, *options: str) -> Run:
    path = tmp_path / "inv.yaml"
    if isinstance(inventory, bytes):
        path.write_bytes(inventory)
    else:
        path.write_text(inventory)
    return vlcalc("scan", str(path), *options, cwd=tmp_path)


# ----------------------------------------------------------------------------------------------
# Host ranges and host counts: refused from the bounds, before any name is built


def test_huge_host_range(tmp_path: Path) -> None:
    run = scan(tmp_path, "all:\n  hosts:\n    web[0:99999999999]:\n")
    assert_refused(run, "inv.yaml:3:", "100,000,000,000 hosts", f"{MAX_HOSTS_PER_RANGE:,}")


def test_several_ranges_in_one_name_multiply(tmp_path: Path) -> None:
    run = scan(tmp_path, "all:\n  hosts:\n    rack[0:999]-node[0:999]:\n")
    assert_refused(run, "1,000,000 hosts")


def test_range_bound_with_thousands_of_digits(tmp_path: Path) -> None:
    # an explicit key ("? "): YAML allows at most 1,024 characters in an implicit one
    run = scan(tmp_path, f"all:\n  hosts:\n    ? web[0:{'9' * 5001}]\n")
    assert_refused(run, "longer than 20 digits")


def test_too_many_hosts_in_one_inventory(tmp_path: Path) -> None:
    half = MAX_HOSTS // 2 + 1
    run = scan(tmp_path, f"a:\n  hosts:\n    a[1:{half}]:\nb:\n  hosts:\n    b[1:{half}]:\n")
    assert_refused(run, "inv.yaml:6:", f"more than {MAX_HOSTS:,} hosts")


def test_one_range_repeated_under_many_groups(tmp_path: Path) -> None:
    repeats = MAX_HOST_ENTRIES // MAX_HOSTS_PER_RANGE + 1
    groups = "".join(
        f"g{i}:\n  hosts:\n    web[1:{MAX_HOSTS_PER_RANGE}]:\n" for i in range(repeats)
    )
    run = scan(tmp_path, groups)
    assert_refused(run, f"more than {MAX_HOST_ENTRIES:,} host entries")


def test_long_chain_of_child_groups(tmp_path: Path) -> None:
    # deepest group first: the old recursive depth computation raised RecursionError here
    parts = [f"g{i}:\n  children:\n    g{i + 1}:\n" for i in range(1, 5000)]
    run = scan(tmp_path, f"g5000:\n  hosts:\n    h1:\n{''.join(reversed(parts))}")
    assert_refused(run, f"is nested {MAX_GROUP_DEPTH + 1} levels below 'all'")


# ----------------------------------------------------------------------------------------------
# YAML: aliases, nesting, integers, size


def billion_laughs(levels: int) -> str:
    lines = [
        "all:",
        "  vars:",
        '    l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    ]
    for level in range(1, levels):
        refs = ",".join([f"*l{level - 1}"] * 9)
        lines.append(f"    l{level}: &l{level} [{refs}]")
    lines += ["  hosts:", "    node01:"]
    return "\n".join(lines) + "\n"


def test_alias_bomb(tmp_path: Path) -> None:
    run = scan(tmp_path, billion_laughs(10))  # 9**10 = 3.5 billion strings once expanded
    assert_refused(run, "aliases expand to more than 10,000,000 nodes")


def test_recursive_alias(tmp_path: Path) -> None:
    run = scan(tmp_path, "all:\n  vars:\n    loop: &loop [1, *loop]\n  hosts:\n    n1:\n")
    assert_refused(run, "inv.yaml:3:", "alias *loop is inside its own anchor")


@pytest.mark.parametrize(("opening", "closing"), [("[", "]"), ("{a: ", "}")])
def test_deep_nesting(tmp_path: Path, opening: str, closing: str) -> None:
    deep = opening * 100_000 + closing * 100_000
    run = scan(tmp_path, f"all:\n  hosts:\n    n1:\n      x: {deep}\n")
    assert_refused(run, "inv.yaml:4:", f"nested deeper than {MAX_YAML_DEPTH} levels")


def test_nesting_at_the_limit_is_read(tmp_path: Path) -> None:
    # all > hosts > n1 > x is 4 levels: the value may nest 96 more.  An unknown key is refused
    # after the YAML is read, so the error shows the nesting itself was accepted.
    deep = "[" * (MAX_YAML_DEPTH - 4) + "]" * (MAX_YAML_DEPTH - 4)
    run = scan(tmp_path, f"all:\n  hosts:\n    n1:\n      ansible_port: {deep}\n")
    assert_refused(run, "ansible_port is not a valid TCP port")


def test_integer_with_5001_digits(tmp_path: Path) -> None:
    run = scan(tmp_path, f"all:\n  hosts:\n    n1:\n      ansible_port: {'9' * 5001}\n")
    assert_refused(run, "inv.yaml:4:", "an integer longer than 1,000 digits")


def test_inventory_larger_than_the_cap(tmp_path: Path) -> None:
    comment = b"# " + b"x" * 1021 + b"\n"
    body = b"all:\n  hosts:\n    n1:\n" + comment * (MAX_INVENTORY_BYTES // len(comment) + 1)
    run = scan(tmp_path, body)
    assert_refused(run, "larger than 32 MiB")


# ----------------------------------------------------------------------------------------------
# Files that are not regular files


def test_dev_zero(tmp_path: Path) -> None:
    assert_refused(vlcalc("scan", "/dev/zero", cwd=tmp_path), "not a regular file")


def test_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "inv.yaml"
    os.mkfifo(fifo)
    assert_refused(vlcalc("scan", str(fifo), cwd=tmp_path), "not a regular file (a FIFO)")


def test_directory(tmp_path: Path) -> None:
    # A directory is an inventory, as in Ansible (-i inventory/); this one holds no host.
    (tmp_path / "dir.yaml").mkdir()
    assert_refused(vlcalc("scan", "dir.yaml", cwd=tmp_path), "the inventory defines no hosts")


# ----------------------------------------------------------------------------------------------
# Duplicate keys: a warning, the last value wins (as ansible-core's default)


def test_duplicate_key_warns_and_takes_the_last_value(tmp_path: Path) -> None:
    inventory = "all:\n  hosts:\n    n1:\n      ansible_port: 22\n      ansible_port: 70000\n"
    run = scan(tmp_path, inventory)
    # the last value (70000) is the one used, and refused as a port: proof it was taken
    assert_refused(run, "inv.yaml:5:", "70000")
    warnings = [line for line in run.err.splitlines() if line.startswith("vlcalc: warning: ")]
    assert warnings == [
        f"vlcalc: warning: {tmp_path / 'inv.yaml'}:5: duplicate key 'ansible_port' "
        "(first at line 4): using the last value, as Ansible does"
    ]


# ----------------------------------------------------------------------------------------------
# Scan options, refused before the inventory is even read (it does not exist here)


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (("--ssh-config", "/nonexistent"), ("--ssh-config: /nonexistent: no such file",)),
        (("--known-hosts", "."), ("--known-hosts: .: is a directory",)),
        (("--known-hosts", "/nonexistent/dir/known_hosts"), ("no directory '/nonexistent/dir'",)),
        (("--timeout", "inf"), ("--timeout: inf is not a number of seconds",)),
        (("--timeout", "1e300"), ("--timeout: 1e+300 seconds is more than the 86,400",)),
        (("--connect-timeout", "inf"), ("--connect-timeout: inf",)),
        (("--connect-timeout", "100000"), ("--connect-timeout: 100000 seconds",)),
    ],
    ids=["ssh-config-missing", "known-hosts-dir", "known-hosts-no-parent", "timeout-inf",
         "timeout-1e300", "connect-timeout-inf", "connect-timeout-huge"],
)  # fmt: skip
def test_bad_scan_options_refused_up_front(
    tmp_path: Path, options: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    assert_refused(vlcalc("scan", "missing.yaml", *options, cwd=tmp_path), *fragments)
    assert_refused(
        vlcalc("check", "--vls", "128", "missing.yaml", *options, cwd=tmp_path), *fragments
    )


def test_ssh_config_fifo_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "config")
    run = vlcalc("scan", "missing.yaml", "--ssh-config", "config", cwd=tmp_path)
    assert_refused(run, "--ssh-config: config: not a regular file")


def test_good_options_reach_the_inventory(tmp_path: Path) -> None:
    """The same options with sound values pass the checks: the error is the missing inventory."""
    (tmp_path / "config").write_text("")
    run = vlcalc(
        "scan", "missing.yaml", "--ssh-config", "config", "--known-hosts", "new_known_hosts",
        "--timeout", "86400", "--connect-timeout", "0.5", cwd=tmp_path,
    )  # fmt: skip
    assert_refused(run, "missing.yaml: inventory file not found")
    run = vlcalc("scan", "missing.yaml", "--ssh-config", "/dev/null", cwd=tmp_path)
    assert_refused(run, "missing.yaml: inventory file not found")


# ----------------------------------------------------------------------------------------------
# Documents and paths


def test_a_path_with_a_newline_is_still_one_error_line(tmp_path: Path) -> None:
    """Paths come from users and from nodes (a collected directory names files by host): a
    newline in one must not split the error into a second, fake ``vlcalc: error:`` line."""
    assert_refused(vlcalc("report", "/nonexistent\nvlcalc: error: fake", cwd=tmp_path), "?")
    run = vlcalc("report", str(tmp_path / "x\x1b[31m.json"), cwd=tmp_path)
    assert_refused(run, "x?[31m.json")


@pytest.mark.parametrize(
    "args", [["report", ""], ["check", "--vls", "128", ""], ["diff", "", ""], ["scan", ""]]
)
def test_an_empty_path_is_not_this_directory(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "some.json").write_text("{}")  # would be read if '' meant '.'
    assert_refused(vlcalc(*args, cwd=tmp_path), "an empty path")


def test_a_duplicate_key_after_deep_nesting_is_not_taken(tmp_path: Path) -> None:
    """msgspec reads the document; Python's json then hits its recursion limit while looking
    for repeated keys: refused as too deep, never read as if no key were repeated."""
    from fleet_fixtures import hardware_doc

    text = json.dumps(hardware_doc("n1", "a64fx"))
    deep = "[" * 980 + "]" * 980
    doc = text[:-1] + f', "zz": {deep}, "kernel": "EVIL-DUP"}}'
    (tmp_path / "deep.json").write_text(doc)
    assert_refused(vlcalc("report", "deep.json", cwd=tmp_path), "deep.json")


def test_a_directory_named_like_a_document(tmp_path: Path) -> None:
    (tmp_path / "docs" / "x.json").mkdir(parents=True)
    assert_refused(vlcalc("report", "docs", cwd=tmp_path), "not a regular file (a directory)")
