"""Conformance on generated inventories: for every selected host, what vlcalc would connect to
(address, port, user, keys, ssh options and jump chain, become) equals what the real ``ansible``
passes to ssh, read from a recorder script that stands in for ssh (nothing connects anywhere).

Each ``ansible`` run takes a batch of inventories (repeated ``-i``, as vlcalc's
``load_inventory([...])``) with one combined ``--limit``, so that 160 inventories cost 16 runs.
"""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from inventory_conformance import (
    RECORDER,
    SUMMARY,
    Case,
    Seen,
    expected,
    make_case,
    read_argv,
    run_ansible,
)

from vlcalc.inventory import load_inventory
from vlcalc.inventory.limit import match

INVENTORIES = 160
Batch = tuple[list[Case], str, list[Seen], str, dict[str, Any]]
BATCH = 20


def test_read_argv_reads_ssh_first_wins() -> None:
    seen = read_argv(
        ["-C", "-o", "Port=22", "-p", "23", "-o", 'User="a"', "-l", "b", "-o", 'IdentityFile="/k"',
         "-i", "/j", "-o", "ProxyJump=x", "-J", "y", "-o", "ServerAliveInterval 5", "-tt", "h1",
         "sudo -H -S -n  -u kvm /bin/sh -c 'true'"]
    )  # fmt: skip
    assert seen == Seen(
        destination="h1",
        port=22,
        user="a",
        identities=("/k", "/j"),
        options=(("proxyjump", "x"), ("serveraliveinterval", "5")),
        become_user="kvm",
    )


@pytest.fixture(scope="module")
def batches(
    tmp_path_factory: pytest.TempPathFactory,
) -> list[Batch]:
    assert shutil.which("ansible"), "pip install -e .[test]"
    root = tmp_path_factory.mktemp("conformance")
    recorder = root / "ssh-recorder"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    cases = [make_case(root / "inventories", index) for index in range(INVENTORIES)]
    groups = [cases[i : i + BATCH] for i in range(0, len(cases), BATCH)]
    limits = []
    for number, group in enumerate(groups):
        parts = [part for case in group for part in case.limit]
        parts.append(f"nomatch{number}")  # a pattern that matches nothing: a warning in both
        parts.append(f"!{group[0].limit[0].split('[')[0].lstrip('~')}-h2")
        if number % 2:  # every other batch: an @file limit, one pattern a line
            limit_file = root / f"limit{number}.retry"
            limit_file.write_text("\n".join(parts) + "\n")
            limits.append(f"@{limit_file}")
        else:
            limits.append(",".join(parts))
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(
            pool.map(
                lambda item: run_ansible(
                    [case.source for case in item[1]], item[2], root / f"run{item[0]}", recorder
                ),
                [(n, group, limit) for n, (group, limit) in enumerate(zip(groups, limits))],
            )
        )
    return [(g, lim, *run) for g, lim, run in zip(groups, limits, runs)]


def test_vlcalc_reads_what_ansible_inventory_lists(
    batches: list[Batch],
) -> None:
    """Groups, members and every host's merged variables (group_vars/host_vars precedence, INI
    value types) equal ``ansible-inventory --list``'s for the same sources."""
    hosts = 0
    for cases, _, _, _, listed in batches:
        inventory = load_inventory([case.source for case in cases])
        hostvars = listed["_meta"]["hostvars"]
        assert set(inventory.hosts) == set(hostvars)
        for name, host in inventory.hosts.items():
            assert _jsonable(host.vars) == hostvars[name], name
            hosts += 1
        for group, data in listed.items():
            if group != "_meta":
                assert set(inventory.tree[group][0]) == set(data.get("hosts", [])), group
    SUMMARY.append(
        f"inventory conformance: vlcalc's variables equal ansible-inventory --list's for "
        f"{hosts}/{hosts} hosts in {INVENTORIES} inventories"
    )


def test_ansible_inventory_list_on_stdin_gives_the_same_targets(batches: list[Batch]) -> None:
    """``ansible-inventory -i SOURCES --list | vlcalc scan -``: the same hosts, groups and
    connections as vlcalc reading the sources itself."""
    hosts = 0
    for cases, _, _, _, listed in batches:
        direct = load_inventory([case.source for case in cases])
        piped = load_inventory("-", stdin=io.BytesIO(json.dumps(listed).encode()))
        assert set(piped.hosts) == set(direct.hosts)  # the listing orders hosts by group
        for name, host in direct.hosts.items():
            other = piped.hosts[name]
            assert host.groups == other.groups, name
            if host.refusal is None:
                assert other.target == host.target, name
            else:
                assert other.refusal is not None, name
            hosts += 1
    SUMMARY.append(
        f"inventory conformance: `ansible-inventory --list | vlcalc scan -` gives the same "
        f"connections for {hosts}/{hosts} hosts"
    )


def _jsonable(value: object) -> object:
    return json.loads(json.dumps(value))


def test_vlcalc_connects_where_ansible_does(
    batches: list[Batch],
) -> None:
    agree = total = refused = 0
    problems: list[str] = []
    for cases, limit, seen, output, _ in batches:
        warnings: list[str] = []
        inventory = load_inventory([case.source for case in cases], warn=warnings.append)
        hosts = match(inventory, limit, warn=warnings.append)
        assert any("nomatch" in warning for warning in warnings)
        assert "Could not match supplied host pattern, ignoring: nomatch" in output
        by_destination = {record.destination: record for record in seen}
        assert len(by_destination) == len(seen), "two hosts share an ssh destination"
        used: set[str] = set()
        for host in hosts:
            total += 1
            if host.refusal is not None:
                refused += 1
                message = str(host.refusal)
                assert "\n" not in message and ("playbook" in message or "openssh" in message)
                # Ansible fails these hosts too (an undefined variable, winrm): had it called
                # ssh for one, its destination would be left over below.
                assert f"{host.name} | FAILED" in output or f"{host.name} | UNREACHABLE" in output
                agree += 1
                continue
            want = expected(host.target)
            got = by_destination.get(want.destination)
            if got is None:
                problems.append(f"{host.name}: ansible made no ssh call to {want.destination}")
                continue
            used.add(want.destination)
            if got == want:
                agree += 1
            else:
                problems.append(f"{host.name}: vlcalc {want} != ansible {got}")
        extra = set(by_destination) - used
        for destination in sorted(extra):
            problems.append(f"ansible called ssh for {destination}, which vlcalc does not select")
            total += 1
    SUMMARY.append(
        f"inventory conformance: vlcalc and ansible agree on {agree}/{total} hosts in "
        f"{INVENTORIES} inventories ({refused} refused by vlcalc with a reason, and not "
        "reached by ansible either)"
    )
    assert not problems, "\n".join(problems[:20])
