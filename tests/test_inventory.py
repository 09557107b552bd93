"""Tests for vlcalc.inventory: unit tests (pure, no Ansible) and conformance tests against the real
ansible-core tools (``-m ansible``) on the tricky inventories in ``tests/inventories/``."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from vlcalc import inventory as inventory_module
from vlcalc.errors import InventoryError
from vlcalc.inventory import (
    MAX_GROUP_DEPTH,
    MAX_GROUPS,
    MAX_HOSTS_PER_RANGE,
    MAX_INTEGER_DIGITS,
    MAX_INVENTORY_BYTES,
    MAX_YAML_DEPTH,
    Inventory,
    load_inventory,
    parse_inventory,
    select,
)
from vlcalc.transport.base import Target

HERE = Path(__file__).parent
CASES = sorted((HERE / "inventories").glob("*.yaml"))
EXAMPLE = HERE.parent / "inventories" / "example.yaml"


def parse(text: str) -> Inventory:
    return parse_inventory(textwrap.dedent(text), "inv.yaml")


def names(inventory: Inventory, limit: str | None) -> list[str]:
    return [host.name for host in select(inventory, limit)]


# ----------------------------------------------------------------------------------------------
# Structure: groups, hosts, ranges


def test_nested_groups_diamond_and_membership() -> None:
    inv = load_inventory(HERE / "inventories" / "nested.yaml")
    assert list(inv.hosts) == [f"node0{i}.example" for i in range(1, 8)]
    assert inv.groups["shared"] == ["node04.example", "node05.example"]
    assert inv.groups["kvm_a"] == ["node03.example", "node04.example", "node05.example"]
    assert inv.groups["kvm_b"] == ["node04.example", "node05.example"]
    assert inv.groups["all"] == list(inv.hosts)
    assert inv.groups["ungrouped"] == []
    assert inv.hosts["node05.example"].groups == (
        "dc1", "gpu", "kvm_a", "kvm_b", "rack1", "shared", "zone_a",
    )  # fmt: skip
    # rack1 sits under all and under dc1 > zone_a: Ansible ranks it by the longest path (depth 3),
    # so its vars beat zone_a's and dc1's; kvm_b beats kvm_a by name at the same depth.
    assert inv.hosts["node01.example"].vars["level"] == "rack1"
    assert inv.hosts["node04.example"].vars["level"] == "kvm_b"
    assert inv.hosts["node04.example"].vars["side"] == "b"
    assert inv.hosts["node02.example"].vars["level"] == "host"
    # dicts are replaced, not merged (Ansible's default hash_behaviour)
    assert inv.hosts["node04.example"].vars["nested_map"] == {"c": 3}
    assert inv.hosts["node01.example"].vars["nested_map"] == {"a": 1, "b": 2}
    # gpu and dc1 both have depth 1 and priority 1: the later name wins, whatever the file order
    assert inv.hosts["node05.example"].target.user == "gpuadmin"
    assert inv.hosts["node04.example"].target.user == "dcadmin"
    assert inv.hosts["node07.example"].target.user == "gpuadmin"


def test_group_priority_orders_groups_of_equal_depth_only() -> None:
    inv = load_inventory(HERE / "inventories" / "priority.yaml")
    colours = {name: host.vars["colour"] for name, host in inv.hosts.items()}
    assert colours == {
        "h1.example": "alpha",  # alpha priority 10 beats beta 1
        "h2.example": "alpha",
        "h3.example": "alpha",  # beats gamma "5"
        "h4.example": "inner",  # depth 2 beats outer's priority 100 and gamma
        "h5.example": "inner",
    }
    assert inv.hosts["h4.example"].target.port == 2203
    assert "ansible_group_priority" not in inv.hosts["h1.example"].vars
    assert inv.hosts["h5.example"].vars["ansible_group_priority"] == 99  # a host's is a plain var


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("node[01:03]", ["node01", "node02", "node03"]),
        ("node[8:11]", ["node8", "node9", "node10", "node11"]),
        ("node[0:10:5]", ["node0", "node5", "node10"]),
        ("node[001:010:4]", ["node001", "node005", "node009"]),
        ("node[:2]", ["node0", "node1", "node2"]),
        ("r[a:c]", ["ra", "rb", "rc"]),
        ("r[y:B]", ["ry", "rz", "rA", "rB"]),
        ("r[a:e:2]", ["ra", "rc", "re"]),
        ("r[a:b]n[1:2]", ["ran1", "ran2", "rbn1", "rbn2"]),
        ("10.0.0.[1:3]", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        ("node[1:1]", ["node1"]),
    ],
)
def test_ranges(pattern: str, expected: list[str]) -> None:
    inv = parse(f"kvm:\n  hosts:\n    {pattern}:\n")
    assert list(inv.hosts) == expected


def test_range_at_the_cap_is_expanded_one_more_is_refused() -> None:
    inv = parse_inventory(f"kvm:\n  hosts:\n    n[1:{MAX_HOSTS_PER_RANGE}]:\n", "inv.yaml")
    assert len(inv.hosts) == MAX_HOSTS_PER_RANGE
    assert list(inv.hosts)[-1] == f"n{MAX_HOSTS_PER_RANGE}"
    with pytest.raises(InventoryError, match=r"^inv.yaml:3: host range .* 100,001 hosts"):
        parse_inventory(f"kvm:\n  hosts:\n    n[0:{MAX_HOSTS_PER_RANGE}]:\n", "inv.yaml")
    # counted with the step: 0, 2, ..., 200,000 is 100,001 names
    with pytest.raises(InventoryError, match="100,001 hosts"):
        parse_inventory(f"kvm:\n  hosts:\n    n[0:{2 * MAX_HOSTS_PER_RANGE}:2]:\n", "inv.yaml")
    # a huge step makes a huge range small, as in Ansible
    inv = parse_inventory("kvm:\n  hosts:\n    n[0:99999999999:50000000000]:\n", "inv.yaml")
    assert list(inv.hosts) == ["n0", "n50000000000"]


def chain(levels: int, *, reverse: bool) -> str:
    """``g1 > g2 > ... > g<levels>`` with a host at the bottom; ``reverse`` writes the deepest
    group first, which made the old recursive depth computation recurse ``levels`` deep."""
    parts = [f"g{i}:\n  children:\n    g{i + 1}:\n" for i in range(1, levels)]
    parts.append(f"g{levels}:\n  hosts:\n    h1:\n")
    return "".join(reversed(parts) if reverse else parts)


@pytest.mark.parametrize("reverse", [False, True])
def test_group_nesting_cap(reverse: bool) -> None:
    inv = parse_inventory(chain(MAX_GROUP_DEPTH, reverse=reverse), "inv.yaml")
    assert len(inv.hosts["h1"].groups) == MAX_GROUP_DEPTH
    with pytest.raises(InventoryError, match=r"group 'g101' is nested 101 levels below 'all'"):
        parse_inventory(chain(MAX_GROUP_DEPTH + 1, reverse=reverse), "inv.yaml")
    with pytest.raises(InventoryError, match="is nested 101 levels"):  # no RecursionError
        parse_inventory(chain(5000, reverse=reverse), "inv.yaml")


def test_loop_at_the_end_of_a_long_chain_names_the_closing_edge() -> None:
    text = chain(3000, reverse=False) + "g3000:\n  children:\n    g1:\n"
    with pytest.raises(
        InventoryError, match=r"^inv.yaml:9003: group 'g1' under 'g3000' makes a loop"
    ):
        parse_inventory(text, "inv.yaml")


def test_group_count_cap() -> None:
    groups = "".join(f"g{i}:\n" for i in range(MAX_GROUPS)) + "all:\n  hosts:\n    h1:\n"
    assert len(parse_inventory(groups, "inv.yaml").groups) == MAX_GROUPS + 2
    with pytest.raises(InventoryError, match=r"^inv.yaml:10004: more than 10,000 groups"):
        parse_inventory(groups + "one_more:\n", "inv.yaml")


def collect_warnings(text: str) -> tuple[Inventory, list[str]]:
    warnings: list[str] = []
    inventory = parse_inventory(textwrap.dedent(text), "inv.yaml", warn=warnings.append)
    return inventory, warnings


def test_duplicate_keys_warn_and_the_last_value_wins() -> None:
    inv, warnings = collect_warnings(
        """
        kvm:
          vars:
            ansible_user: first
            ansible_user: second
          hosts:
            n1:
          hosts:
            n2:
        """
    )
    assert list(inv.hosts) == ["n2"]
    assert inv.hosts["n2"].target.user == "second"
    assert warnings == [
        "inv.yaml:5: duplicate key 'ansible_user' (first at line 4): "
        "using the last value, as Ansible does",
        "inv.yaml:8: duplicate key 'hosts' (first at line 6): "
        "using the last value, as Ansible does",
    ]


def test_a_key_overriding_a_merge_is_no_duplicate() -> None:
    inv, warnings = collect_warnings(
        """
        kvm:
          vars:
            base: &base {ansible_user: ops, ansible_port: 22}
          hosts:
            n1:
              <<: *base
              ansible_port: 2222
        """
    )
    assert warnings == []
    assert (inv.hosts["n1"].target.user, inv.hosts["n1"].target.port) == ("ops", 2222)


def test_warnings_come_before_a_refusal() -> None:
    """A duplicate key is often why the inventory is then refused: the warning is not lost."""
    warnings: list[str] = []
    text = "kvm:\n  hosts:\n    n1:\n      ansible_port: 22\n      ansible_port: 0\n"
    with pytest.raises(InventoryError, match="ansible_port is not a valid TCP port"):
        select(parse_inventory(text, "inv.yaml", warn=warnings.append), None)
    assert len(warnings) == 1 and "duplicate key 'ansible_port'" in warnings[0]


def laughs(levels: int) -> str:
    """A billion-laughs document: each level lists the previous one twice."""
    lines = ["l0: &l0 [lol, lol]"]
    lines += [f"l{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


DEEP = MAX_YAML_DEPTH + 1
YAML_CAP_CASES = [
    ("alias-bomb", laughs(30), "aliases expand to more than 10,000,000 nodes"),
    ("depth", "a: " + "[" * DEEP + "]" * DEEP + "\n", "nested deeper than 100 levels"),
    ("recursive-alias", "a: &x [*x]\n", "alias *x is inside its own anchor"),
    ("long-integer", "a: 1" + "0" * MAX_INTEGER_DIGITS + "\n", "longer than 1,000 digits"),
    ("sexagesimal", "a: " + ":".join(["59"] * 400) + "\n", "longer than 1,000 digits"),
]


@pytest.mark.parametrize(
    ("text", "message"),
    [case[1:] for case in YAML_CAP_CASES],
    ids=[case[0] for case in YAML_CAP_CASES],
)
def test_yaml_caps(text: str, message: str) -> None:
    with pytest.raises(InventoryError, match=re.escape(message)):
        parse_inventory(text, "inv.yaml")


def test_yaml_node_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Reaching the real cap (2,000,000 nodes) takes 20-40 s; the count is the same at 1,000.
    monkeypatch.setattr(inventory_module.graph, "MAX_YAML_NODES", 1000)
    parse_inventory("kvm:\n  vars:\n    a: [" + "1," * 980 + "1]\n  hosts: {n1: }\n", "inv.yaml")
    with pytest.raises(InventoryError, match=r"^inv.yaml:3: invalid YAML: more than 1,000 YAML"):
        parse_inventory("kvm:\n  vars:\n    a: [" + "1," * 1000 + "1]\n", "inv.yaml")


def test_yaml_under_the_caps_is_read() -> None:
    # 99 levels of nesting (the value sits at depth 4), a 1,000-digit integer, shared aliases
    text = (
        "kvm:\n  vars:\n    base: &b {deep: " + "[" * 95 + "]" * 95 + "}\n"
        "    again: *b\n    big: 1" + "0" * (MAX_INTEGER_DIGITS - 1) + "\n  hosts:\n    n1:\n"
    )
    inv = parse_inventory(text, "inv.yaml")
    assert inv.hosts["n1"].vars["big"] == 10 ** (MAX_INTEGER_DIGITS - 1)
    assert inv.hosts["n1"].vars["again"] is inv.hosts["n1"].vars["base"]


def test_text_beyond_the_byte_cap_is_refused_unparsed() -> None:
    with pytest.raises(InventoryError, match="larger than 32 MiB"):
        parse_inventory("#" * (MAX_INVENTORY_BYTES + 1), "inv.yaml")


def test_host_port_suffix_applies_where_the_host_first_appears() -> None:
    inv = parse(
        """
        a:
          hosts:
            n[1:2]:2222:
            "[2001:db8::1]:2200":
        b:
          hosts:
            n1:3333:
            plain:
        """
    )
    assert inv.hosts["n1"].target.port == 2222
    assert inv.hosts["n2"].vars == {"ansible_port": 2222}
    assert inv.hosts["2001:db8::1"].target.port == 2200
    assert inv.hosts["plain"].target.port is None


def test_ungrouped_hosts_and_string_forms() -> None:
    inv = load_inventory(HERE / "inventories" / "ungrouped.yaml")
    assert inv.groups["ungrouped"] == ["lonely.example", "solo.example"]
    assert inv.hosts["lonely.example"].groups == ("ungrouped",)
    assert inv.hosts["moved.example"].groups == ("hypervisors",)
    assert inv.hosts["both.example"].groups == ("storage",)
    assert inv.hosts["solo.example"].vars == {"region": "eu", "where": "ungrouped"}
    assert inv.groups["empty_group"] == [] and inv.groups["also_empty"] == []


def test_top_level_groups_redefinition_and_merge_keys() -> None:
    inv = load_inventory(HERE / "inventories" / "toplevel.yaml")
    assert list(inv.hosts) == ["web1.example", "web2.example", "web3.example", "web4.example"]
    web1 = inv.hosts["web1.example"]
    assert web1.vars["tier"] == "web-redefined" and web1.vars["note"] == "second mention"
    assert web1.target.python == "python3"  # auto_silent
    assert inv.hosts["web2.example"].target.user == "canary-ops"  # canary is deeper than web
    assert inv.hosts["web3.example"].vars["tier"] == "host"


# ----------------------------------------------------------------------------------------------
# Connection variables -> Target


def test_targets_of_connection_inventory() -> None:
    inv = load_inventory(HERE / "inventories" / "connection.yaml")
    targets = {name: host.target for name, host in inv.hosts.items()}
    assert targets["legacy2.example"] == Target(
        name="legacy2.example",
        host="127.0.0.12",
        port=2,
        user="legacyuser",
        key_file="/keys/legacy",
    )
    assert targets["modern1.example"] == Target(
        name="modern1.example",
        host="127.0.0.21",
        port=3,
        user="ops",
        key_file="/keys/ops",
        python="/usr/libexec/platform-python",
        become=True,
        become_user="root",
    )
    assert targets["modern2.example"].become is False
    assert targets["modern3.example"].python == "python3"
    assert targets["modern3.example"].become is True
    assert (targets["modern4.example"].host, targets["modern4.example"].port) == ("127.0.0.24", 1)
    assert targets["modern4.example"].become is True
    assert targets["localhost"].connection == "local"
    assert targets["control.example"] == Target(
        name="control.example",
        host="127.0.0.99",
        port=1,
        connection="local",
        python="/usr/bin/python3.11",
        become=True,
        become_user="kvm",
    )


def test_target_defaults_to_inventory_name() -> None:
    inv = parse("kvm:\n  hosts:\n    node01.example:\n")
    assert inv.hosts["node01.example"].target == Target(
        name="node01.example", host="node01.example"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("yes", True), ("On", True), ("'1'", True), ("'t'", True), ("1", True), ("TRUE", True),
        ("no", False), ("'off'", False), ("0", False), ("'False'", False), ("null", False),
    ],
)  # fmt: skip
def test_become_accepts_ansible_booleans(value: str, expected: bool) -> None:
    inv = parse(f"kvm:\n  hosts:\n    n1:\n      ansible_become: {value}\n")
    assert inv.hosts["n1"].target.become is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ssh", "ssh"),
        ("paramiko", "ssh"),
        ("smart", "ssh"),
        ("ansible.builtin.ssh", "ssh"),
        ("local", "local"),
        ("ansible.builtin.local", "local"),
    ],
)
def test_connection_plugins(value: str, expected: str) -> None:
    inv = parse(f"kvm:\n  hosts:\n    n1:\n      ansible_connection: {value}\n")
    assert inv.hosts["n1"].target.connection == expected


def test_unsafe_values_are_literal_not_templates() -> None:
    inv = parse("kvm:\n  hosts:\n    n1:\n      ansible_user: !unsafe 'x{{y}}'\n")
    assert inv.hosts["n1"].target.user == "x{{y}}"


def test_templated_values_outside_connection_vars_are_ignored() -> None:
    inv = parse('kvm:\n  vars:\n    motd: \'{{ lookup("env", "X") }}\'\n  hosts:\n    n1:\n')
    assert inv.hosts["n1"].vars["motd"].startswith("{{")


# ----------------------------------------------------------------------------------------------
# Errors: one line, naming the file, the line and the problem

ERROR_CASES = [
    ("yaml-syntax", "kvm:\n  hosts:\n    n1: [\n", 4, "invalid YAML"),
    ("yaml-indent", "kvm:\n  hosts:\n   n1:\n  - x\n", 4, "invalid YAML"),
    ("yaml-tag", "kvm:\n  hosts:\n    n1: !python/object foo\n", 3, "invalid YAML"),
    ("top-list", "- kvm\n- n1\n", 1, "top level must be a mapping"),
    ("top-string", "just text\n", 1, "top level must be a mapping"),
    ("plugin", "plugin: aws_ec2\nregions: [x]\n", 1, "inventory plugin configuration"),
    ("hosts-list", "kvm:\n  hosts:\n    - n1\n    - n2\n", 2, "'hosts' of group 'kvm' must be a"),
    ("children-list", "kvm:\n  children: [a]\n", 2, "'children' of group 'kvm' must be a"),
    ("group-list", "all:\n  children:\n    kvm: [n1]\n", 3, "group 'kvm' must be a mapping"),
    ("unknown-key", "kvm:\n  host:\n    n1:\n", 2, "unexpected key 'host' in group 'kvm'"),
    ("host-vars-string", "kvm:\n  hosts:\n    n1: hello\n", 3, "must map to its variables"),
    ("host-int", "kvm:\n  hosts:\n    42:\n", 3, "host name 42 in group 'kvm' must be a string"),
    ("group-int", "all:\n  children:\n    7:\n", 3, "group name 7 must be a non-empty string"),
    ("range-width", "kvm:\n  hosts:\n    n[01:100]:\n", 3, "same width"),
    ("range-reversed", "kvm:\n  hosts:\n    n[9:1]:\n", 3, "begin is after end"),
    ("range-letters-reversed", "kvm:\n  hosts:\n    n[c:a]:\n", 3, "begin is after end"),
    ("range-step-zero", "kvm:\n  hosts:\n    n[1:9:0]:\n", 3, "step must be a positive"),
    ("range-no-end", "kvm:\n  hosts:\n    n[1:]:\n", 3, "the end is missing"),
    ("range-shape", "kvm:\n  hosts:\n    n[1]:\n", 3, "write [begin:end]"),
    ("range-mixed", "kvm:\n  hosts:\n    n[a:9]:\n", 3, "use numbers or single letters"),
    ("range-unclosed", "kvm:\n  hosts:\n    n[1:3:\n", 3, "no closing"),
    ("port-text", "kvm:\n  hosts:\n    n1:\n      ansible_port: ssh\n", 4, "valid TCP port"),
    ("port-range", "kvm:\n  vars:\n    ansible_port: 70000\n  hosts:\n    n1:\n", 3, "'n1'"),
    ("port-bool", "kvm:\n  hosts:\n    n1:\n      ansible_ssh_port: true\n", 4, "ansible_ssh_port"),
    ("clash", "kvm:\n  hosts:\n    kvm:\n", 3, "'kvm' is both a host and a group"),
    ("loop", "a:\n  children:\n    b:\n      children:\n        a:\n", 3, "makes a loop"),
    ("self-child", "a:\n  children:\n    a:\n", 3, "child of itself"),
    (
        "connection",
        "kvm:\n  hosts:\n    n1:\n      ansible_connection: winrm\n",
        4,
        "host 'n1': ansible_connection is 'winrm'",
    ),
    (
        "template",
        'all:\n  vars:\n    ansible_user: \'{{ lookup("env", "USER") }}\'\n  hosts:\n    n1:\n',
        3,
        "host 'n1': ansible_user is templated",
    ),
    (
        "template-statement",
        "kvm:\n  hosts:\n    n1:\n      ansible_host: '{% if x %}a{% endif %}'\n",
        4,
        "is templated ('{% if x %}a{% endif %}') and cannot be rendered: 'x' is undefined",
    ),
    (
        "vault",
        "kvm:\n  hosts:\n    n1:\n      ansible_user: !vault |\n        $ANSIBLE_VAULT;1.1\n",
        4,
        "vault-encrypted",
    ),
    ("become", "kvm:\n  hosts:\n    n1:\n      ansible_become: maybe\n", 4, "must be a boolean"),
    ("user-list", "kvm:\n  hosts:\n    n1:\n      ansible_user: [a]\n", 4, "must be a string"),
    (
        "priority",
        "kvm:\n  vars:\n    ansible_group_priority: high\n  hosts:\n    n1:\n",
        3,
        "ansible_group_priority of group 'kvm' must be an integer",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors_name_file_line_and_problem(text: str, line: int, problem: str) -> None:
    # A host's connection settings are refused when the host is selected (select(), below).
    with pytest.raises(InventoryError) as caught:
        select(parse_inventory(text, "inv.yaml"), None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"inv.yaml:{line}: "), message
    assert problem in message
    assert caught.value.line == line and caught.value.source == "inv.yaml"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the inventory is empty"),
        ("# only a comment\n", "the inventory is empty"),
        ("all:\n  vars:\n    x: 1\n", "the inventory defines no hosts"),
        ("kvm:\n  hosts:\n", "the inventory defines no hosts"),
    ],
)
def test_empty_inventories(text: str, problem: str) -> None:
    with pytest.raises(InventoryError, match=problem) as caught:
        parse_inventory(text, "inv.yaml")
    assert str(caught.value) == f"inv.yaml: {problem}"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="inventory file not found") as caught:
        load_inventory(tmp_path / "missing.yaml")
    assert str(caught.value).startswith(str(tmp_path / "missing.yaml"))
    with pytest.raises(InventoryError, match="the inventory defines no hosts"):
        load_inventory(tmp_path)  # a directory is an inventory: this one is empty
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(b"kvm:\n  hosts:\n    caf\xe9:\n")
    with pytest.raises(InventoryError, match="not UTF-8"):
        load_inventory(binary)
    with pytest.raises(InventoryError, match="cannot read: File name too long"):
        load_inventory(tmp_path / ("x" * 5000))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("kvm:\n  hosts:\n    n1:\n")
    path.chmod(0)
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(path)


def test_errors_chain_their_cause() -> None:
    with pytest.raises(InventoryError) as caught:
        parse_inventory("a: [\n", "inv.yaml")
    assert caught.value.__cause__ is not None


# ----------------------------------------------------------------------------------------------
# select(): Ansible --limit patterns

NESTED = HERE / "inventories" / "nested.yaml"
SELECT_CASES = [
    ("all", [f"node0{i}.example" for i in range(1, 8)]),
    ("shared", ["node04.example", "node05.example"]),
    ("gpu,shared", ["node04.example", "node05.example", "node06.example", "node07.example"]),
    ("gpu:shared", ["node04.example", "node05.example", "node06.example", "node07.example"]),
    ("node01.example", ["node01.example"]),
    ("node0[1-2]*", ["node01.example", "node02.example"]),
    ("node0?.example:!rack1", ["node06.example", "node07.example"]),
    ("~node0[67]", ["node06.example", "node07.example"]),
    ("~kvm_.*", ["node03.example", "node04.example", "node05.example"]),
    ("rack1:&gpu", ["node05.example"]),
    ("&gpu:!node06.example", ["node05.example", "node07.example"]),
    ("!dc1", ["node07.example"]),
    ("zone_*", [f"node0{i}.example" for i in range(1, 7)]),
    ("kvm_a[0]", ["node03.example"]),
    ("kvm_a[1:]", ["node04.example", "node05.example"]),
    ("kvm_a[-1]", ["node05.example"]),
    (" gpu , !node07.example ", ["node05.example", "node06.example"]),
]


@pytest.mark.parametrize(("limit", "expected"), SELECT_CASES)
def test_select(limit: str, expected: list[str]) -> None:
    assert names(load_inventory(NESTED), limit) == expected


def test_select_without_limit_is_every_host() -> None:
    inv = load_inventory(NESTED)
    assert names(inv, None) == list(inv.hosts) == names(inv, "")


@pytest.mark.parametrize(
    ("limit", "problem"),
    [
        ("nosuch", "--limit 'nosuch' selects no hosts"),
        ("gpu:!gpu", "selects no hosts"),
        ("gpu,~node[", "not a valid regular expression"),
        ("kvm_a[9]", "subscript out of range"),
        ("localhost", "selects no hosts"),  # no implicit localhost in vlcalc
        ("@/nonexistent/retry.txt", "cannot read the limit file: No such file or directory"),
    ],
)
def test_select_errors(limit: str, problem: str) -> None:
    with pytest.raises(InventoryError, match=re.escape(problem)) as caught:
        select(load_inventory(NESTED), limit)
    assert str(caught.value).startswith(f"{NESTED}: ")


# ----------------------------------------------------------------------------------------------
# Scale


def test_ten_thousand_hosts_load_fast() -> None:
    lines = ["all:", "  vars:", "    ansible_user: ops", "  children:"]
    for rack in range(100):
        lines += [
            f"    rack{rack:03d}:",
            f"      vars: {{rack: {rack}}}",
            "      hosts:",
            f"        r{rack:03d}n[000:099].example:",
        ]
    lines += ["    everything:", "      children:"]
    lines += [f"        rack{rack:03d}:" for rack in range(100)]
    started = time.perf_counter()
    inv = parse_inventory("\n".join(lines) + "\n", "big.yaml")
    elapsed = time.perf_counter() - started
    assert len(inv.hosts) == 10_000 and len(inv.groups["everything"]) == 10_000
    assert inv.hosts["r042n007.example"].vars == {"ansible_user": "ops", "rack": 42}
    assert len(select(inv, "rack00*:!r000n0[0-4]*")) == 950
    assert elapsed < 2.0, f"10,000 hosts took {elapsed:.2f}s"


# ----------------------------------------------------------------------------------------------
# Conformance with the real ansible-core (ansible-inventory, ansible)

CONFORMANCE_FILES = [*CASES, EXAMPLE]


class Ansible:
    """Runs the real ansible tools in a clean environment, many at a time: every command the
    tests need is started when the session fixture is created, and each test waits for its own."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        self.env.update(
            ANSIBLE_CONFIG=str(home / "none.cfg"),
            ANSIBLE_HOME=str(home),
            ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(home / "cp"),
            ANSIBLE_INVENTORY_ENABLED="yaml",  # only the YAML plugin, as vlcalc reads it
            ANSIBLE_INVENTORY_UNPARSED_FAILED="True",
            ANSIBLE_HOST_KEY_CHECKING="False",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_DEPRECATION_WARNINGS="False",
        )
        self.pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
        self.runs: dict[tuple[str, ...], Future[subprocess.CompletedProcess[str]]] = {}

    def start(self, *args: str) -> None:
        if args not in self.runs:
            self.runs[args] = self.pool.submit(
                subprocess.run,
                args,
                env=self.env,
                cwd=self.home,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.start(*args)
        return self.runs[args].result()

    def error_case(self, case: str) -> Path:
        return self.home / "errors" / f"{case}.yaml"

    def random_case(self, seed: int) -> Path:
        return self.home / "random" / f"seed{seed}.yaml"


def list_command(path: Path) -> tuple[str, ...]:
    return ("ansible-inventory", "-i", str(path), "--list")


def limit_command(path: Path, limit: str) -> tuple[str, ...]:
    return ("ansible", "all", "-i", str(path), "--list-hosts", "--limit", limit)


CONNECTION = HERE / "inventories" / "connection.yaml"
PING_COMMAND = ("ansible", "legacy:modern", "-i", str(CONNECTION), "-m", "ping", "-vvv", "-f", "10")


@pytest.fixture(scope="session")
def ansible(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ansible]:
    # ansible-core is a test dependency (pyproject's test extras): missing, it is a failure.
    assert shutil.which("ansible-inventory") and shutil.which("ansible"), "pip install -e .[test]"
    runner = Ansible(tmp_path_factory.mktemp("ansible-home"))
    (runner.home / "errors").mkdir()
    for case, text, _, _ in ERROR_CASES:
        runner.error_case(case).write_text(text)
    (runner.home / "random").mkdir()
    for seed in RANDOM_SEEDS:
        runner.random_case(seed).write_text(random_inventory(seed))
        runner.start(*list_command(runner.random_case(seed)))
    runner.start(*PING_COMMAND)
    for path in CONFORMANCE_FILES:
        runner.start(*list_command(path))
    for path, limit in LIMIT_CASES:
        runner.start(*limit_command(path, limit))
    for case, _, _, _ in ERROR_CASES:
        runner.start(*list_command(runner.error_case(case)))
    yield runner
    runner.pool.shutdown(wait=True)


def transitive_groups(data: dict[str, Any]) -> dict[str, set[str]]:
    def members(group: str) -> set[str]:
        entry = data.get(group, {})
        found = set(entry.get("hosts", []))
        for child in entry.get("children", []):
            found |= members(child)
        return found

    return {group: members(group) for group in data if group != "_meta"}


def assert_same_as_ansible(ansible: Ansible, path: Path) -> None:
    result = ansible.run(*list_command(path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    theirs = transitive_groups(data)
    inv = load_inventory(path)

    assert set(inv.hosts) == theirs["all"]
    # every group Ansible lists, with the same hosts; groups Ansible omits are empty here
    assert {g: set(inv.groups[g]) for g in theirs} == theirs
    assert all(not inv.groups[g] for g in set(inv.groups) - set(theirs))
    for name, host in inv.hosts.items():
        assert set(host.groups) == {g for g, hs in theirs.items() if name in hs} - {"all"}
        assert host.vars == data["_meta"]["hostvars"].get(name, {}), name


@pytest.mark.ansible
@pytest.mark.parametrize("path", CONFORMANCE_FILES, ids=[p.name for p in CONFORMANCE_FILES])
def test_conformance_with_ansible_inventory(path: Path, ansible: Ansible) -> None:
    assert_same_as_ansible(ansible, path)


RANDOM_SEEDS = range(8)


def random_inventory(seed: int) -> str:
    """A random group DAG (edges only from lower to higher numbers, so no loops) with variables,
    priorities and hosts scattered over several definitions of the same groups."""
    rng = random.Random(seed)
    groups = [f"g{i}" for i in range(rng.randint(6, 14))]
    pool = ["colour", "size", "ansible_user", "ansible_port", "ansible_host", "ansible_ssh_user"]
    document: dict[str, Any] = {"all": {"vars": {"colour": "all"}, "hosts": {}, "children": {}}}
    for index, group in enumerate(groups):
        definition: dict[str, Any] = {
            "vars": {key: f"{group}-{key}" for key in rng.sample(pool, rng.randint(0, 3))},
            "hosts": {},
            "children": {child: None for child in groups[index + 1 :] if rng.random() < 0.2},
        }
        if "ansible_port" in definition["vars"]:
            definition["vars"]["ansible_port"] = 2000 + index
        if rng.random() < 0.4:
            definition["vars"]["ansible_group_priority"] = rng.randint(1, 3)
        parents = [g for g in groups[:index] if group in document.get(g, {}).get("children", {})]
        if parents and rng.random() < 0.5:  # define it where a parent lists it
            document[rng.choice(parents)]["children"][group] = definition
        elif rng.random() < 0.3:
            document["all"]["children"][group] = definition
        else:
            document[group] = definition
    for number in range(rng.randint(5, 25)):
        host = f"h{number:02d}.example"
        homes = rng.sample(groups, rng.randint(0, 3))
        for home in homes or ["all"]:
            entry = document.get(home) or _find_definition(document, home)
            entry["hosts"][host] = {"size": host} if rng.random() < 0.2 else None
    return yaml.safe_dump(document, sort_keys=False)


def _find_definition(document: dict[str, Any], group: str) -> dict[str, Any]:
    for definition in document.values():
        children = definition.get("children") or {}
        if isinstance(children.get(group), dict):
            found: dict[str, Any] = children[group]
            return found
        for child in children.values():
            if isinstance(child, dict):
                nested = _find_definition({"x": child}, group)
                if nested:
                    return nested
    return {}


@pytest.mark.ansible
@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_inventories_match_ansible(seed: int, ansible: Ansible) -> None:
    assert_same_as_ansible(ansible, ansible.random_case(seed))


# Error cases that ansible-inventory rejects as well.  The others are vlcalc's own checks: values
# Ansible reads only when it connects (ports, connection plugin, templates, vault, become), and
# inventories Ansible accepts with a warning or silently but that would make vlcalc scan the wrong
# hosts (an unknown key such as "host:", a reversed numeric range that expands to no host, a name
# that is both a host and a group, whose host variables Ansible applies to the group).
ANSIBLE_REJECTS = {
    "yaml-syntax", "yaml-indent", "yaml-tag", "top-list", "top-string", "plugin", "hosts-list",
    "children-list", "group-list", "host-vars-string", "host-int", "group-int", "range-width",
    "range-letters-reversed", "range-step-zero", "range-no-end", "range-shape", "range-mixed",
    "range-unclosed", "loop", "self-child", "priority",
}  # fmt: skip
VLCALC_ONLY = {case[0] for case in ERROR_CASES} - ANSIBLE_REJECTS


@pytest.mark.ansible
@pytest.mark.parametrize("case", sorted(ANSIBLE_REJECTS | VLCALC_ONLY))
def test_errors_against_ansible(case: str, ansible: Ansible) -> None:
    result = ansible.run(*list_command(ansible.error_case(case)))
    assert (result.returncode != 0) == (case in ANSIBLE_REJECTS), result.stderr


LIMIT_CASES = [(NESTED, limit) for limit, _ in SELECT_CASES if not limit.startswith("kvm_a[")] + [
    (NESTED, "kvm_a[0]"),
    (NESTED, "kvm_a[1:]"),
    (EXAMPLE, "domain_prod_a:!maintenance"),
    (EXAMPLE, "migration_domains:&cpu_neoverse_v2"),
    (EXAMPLE, "*.lab.example"),
    (EXAMPLE, "kvm-a0[1:3].dc1.example"),
    (EXAMPLE, "site_*,control"),
    (HERE / "inventories" / "ranges.yaml", "~^10\\.0\\.1"),
    (HERE / "inventories" / "ungrouped.yaml", "ungrouped"),
    (HERE / "inventories" / "ungrouped.yaml", "all:!ungrouped"),
]


@pytest.mark.ansible
@pytest.mark.parametrize(
    ("path", "limit"), LIMIT_CASES, ids=[f"{p.stem}:{lim}" for p, lim in LIMIT_CASES]
)
def test_select_matches_ansible_limit(path: Path, limit: str, ansible: Ansible) -> None:
    result = ansible.run(*limit_command(path, limit))
    assert result.returncode == 0, result.stderr
    listed = [line.strip() for line in result.stdout.splitlines()[1:] if line.strip()]
    # same hosts; Ansible's order is its "all" group walk, ours is the file order
    assert names(load_inventory(path), limit) == [
        h for h in load_inventory(path).hosts if h in listed
    ]
    assert sorted(names(load_inventory(path), limit)) == sorted(listed)


_SSH_USER = re.compile(r"^<(\S+)> ESTABLISH SSH CONNECTION FOR USER: (\S+)", re.M)
_SSH_EXEC = re.compile(r"^<(\S+)> SSH: EXEC ssh (.*)$", re.M)
_PARAMIKO = re.compile(
    r"^<(\S+)> ESTABLISH PARAMIKO SSH CONNECTION FOR USER: (\S+) on PORT (\d+)", re.M
)


@pytest.mark.ansible
def test_targets_match_what_ansible_connects_to(ansible: Ansible) -> None:
    """Run ``ansible -m ping -vvv`` against closed loopback ports and read the address, port, user
    and key that the real ssh and paramiko connection plugins use for every ssh host."""
    inv = load_inventory(CONNECTION)
    ssh_hosts = [h for h in inv.hosts.values() if h.target.connection == "ssh"]
    result = ansible.run(*PING_COMMAND)
    seen: dict[str, tuple[str | None, int | None, str | None]] = {}
    for address, user in _SSH_USER.findall(result.stdout):
        seen[address] = (None if user == "None" else user, None, None)
    for address, command in _SSH_EXEC.findall(result.stdout):
        port_option = re.search(r"-o Port=(\d+)", command)
        key_option = re.search(r"-o 'IdentityFile=\"([^\"]+)\"'", command)
        seen[address] = (
            seen[address][0],
            int(port_option.group(1)) if port_option else None,
            key_option.group(1) if key_option else None,
        )
    for address, user, port in _PARAMIKO.findall(result.stdout):
        seen[address] = (None if user == "None" else user, int(port), "(paramiko)")

    assert set(seen) == {h.target.host for h in ssh_hosts}, result.stdout[-2000:]
    for host in ssh_hosts:
        user, port, key = seen[host.target.host]
        assert (user, port) == (host.target.user, host.target.port), host.name
        if key != "(paramiko)":
            assert key == host.target.key_file, host.name
