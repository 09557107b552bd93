"""Tests for the inventory sources beyond one YAML file: INI, group_vars/host_vars, directories,
scripts, Ansible's JSON on stdin; per-host refusals, templates, ssh arguments and --limit.

Pure or on temporary files; the conformance against the real ansible is in
tests/test_inventory_conformance.py.
"""

from __future__ import annotations

import io
import json
import re
import textwrap
from pathlib import Path

import pytest

from vlcalc.errors import InventoryError
from vlcalc.inventory import load_inventory, parse_inventory, parse_ssh_args, select
from vlcalc.inventory.sources import run_script


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# ----------------------------------------------------------------------------------------------
# INI


INI = """\
# a comment
; another
ungrouped1 ansible_host=10.0.0.1

[web]
web[1:2].example ansible_port=2222 ansible_user="ops team" flag=True q="'22'" b='22' word=yes # c
db1:2200

[web:vars]
ansible_become=true
list=[1, 2]
spaced = value with spaces # not a comment here

[dc:children]
web
racks

[racks]
db1

[racks:vars]
ansible_user=rackuser
"""


def test_ini_sections_hosts_and_value_types() -> None:
    inv = parse_inventory(INI, "hosts")
    assert list(inv.hosts) == ["ungrouped1", "web1.example", "web2.example", "db1"]
    assert inv.groups["dc"] == ["web1.example", "web2.example", "db1"]
    assert inv.groups["ungrouped"] == ["ungrouped1"]
    web1 = inv.hosts["web1.example"].vars
    assert web1["ansible_port"] == 2222 and web1["flag"] is True and web1["word"] == "yes"
    assert web1["q"] == "22" and web1["b"] == 22 and web1["ansible_user"] == "ops team"
    assert web1["list"] == [1, 2] and web1["spaced"] == "value with spaces # not a comment here"
    assert inv.hosts["db1"].target.port == 2200
    # db1 is in web and racks (both depth 2): web comes later by name but sets no user
    assert inv.hosts["db1"].target.user == "rackuser"
    assert inv.hosts["web1.example"].target.become is True


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("[a:child]\nx\n", 1, "unknown type"),
        ("[a b]\n", 1, "invalid section"),
        ("[a]\nh1 novalue\n", 2, "expected key=value after host 'h1'"),
        ("[a:vars]\nx=1\n", 1, "section [a:vars] is for group 'a', which is not defined"),
        ("[a:children]\nb\n[c]\nh\n", 2, "names group 'b', which is not defined"),
        ("[a]\nh1:\n", 2, "ends in ':'"),
        ("[a]\nh1 x='unclosed\n", 2, "cannot split host line"),
        ("[a]\nh1 x={{1}}\n", 2, "cannot be read"),
    ],
)
def test_ini_errors(text: str, line: int, problem: str) -> None:
    with pytest.raises(InventoryError, match=re.escape(problem)) as caught:
        parse_inventory(text, "inventory.ini")
    assert caught.value.line == line and "\n" not in str(caught.value)


def test_format_is_found_as_ansible_finds_it() -> None:
    # no extension: YAML first, then INI; ".ini": INI only; ".yaml" with INI text: INI too
    assert list(parse_inventory("[kvm]\nn1\n", "hosts").hosts) == ["n1"]
    assert list(parse_inventory("n1\nn2\n", "hosts").hosts) == ["n1", "n2"]
    assert list(parse_inventory("kvm:\n  hosts:\n    n1:\n", "hosts").hosts) == ["n1"]
    assert list(parse_inventory("[kvm]\nn1\n", "inv.yaml").hosts) == ["n1"]
    with pytest.raises(InventoryError, match="TOML inventories are not supported"):
        parse_inventory("[kvm]\n", "inv.toml")
    with pytest.raises(InventoryError, match="ends in ':'"):
        parse_inventory("kvm:\n  hosts:\n    n1:\n", "inv.ini")


# ----------------------------------------------------------------------------------------------
# group_vars/ and host_vars/


def test_group_vars_and_host_vars_precedence(tmp_path: Path) -> None:
    inventory = write(
        tmp_path / "inv.yaml",
        """\
        all:
          vars: {ansible_user: inv-all, level: inv-all}
          children:
            outer:
              vars: {level: inv-outer, ansible_port: 2000}
              children:
                inner:
                  vars: {level: inv-inner}
                  hosts:
                    n1: {ansible_host: inv-host}
                    n2:
        """,
    )
    write(tmp_path / "group_vars" / "all.yml", "ansible_user: gv-all\nlevel: gv-all\n")
    write(tmp_path / "group_vars" / "outer", "ansible_port: 3000\n")  # no extension
    write(tmp_path / "group_vars" / "outer.yml", "ansible_port: 9999\n")  # shadowed
    write(tmp_path / "host_vars" / "n1" / "b.json", '{"ansible_host": "gv-host-b"}')
    write(tmp_path / "host_vars" / "n1" / "a.yml", "ansible_host: gv-host-a\nextra: 1\n")
    write(tmp_path / "host_vars" / "n1" / "notes.txt", "ansible_host: ignored\n")
    inv = load_inventory(inventory)
    n1, n2 = inv.hosts["n1"], inv.hosts["n2"]
    # a group_vars file beats the inventory's vars of a deeper group (Ansible's order)
    assert n2.vars["level"] == "gv-all"
    assert (n1.target.user, n1.target.port) == ("gv-all", 3000)
    # host_vars files, sorted, beat the inventory's host vars
    assert n1.target.host == "gv-host-b" and n1.vars["extra"] == 1
    assert n2.target.host == "n2"


def test_vars_file_must_be_a_mapping(tmp_path: Path) -> None:
    inventory = write(tmp_path / "hosts", "[kvm]\nn1\n")
    write(tmp_path / "group_vars" / "kvm.yml", "- a\n- b\n")
    with pytest.raises(InventoryError, match=r"kvm\.yml: a vars file must be a mapping"):
        load_inventory(inventory)


# ----------------------------------------------------------------------------------------------
# Directories, scripts, JSON, stdin

JSON_INVENTORY = {
    "_meta": {"hostvars": {"n1": {"ansible_host": "10.0.0.1"}, "n2": {}}},
    "all": {"children": ["ungrouped", "kvm"]},
    "kvm": {"hosts": ["n1", "n2"], "vars": {"ansible_user": "ops"}},
}


def test_directory_merges_sources_and_skips_ignored_files(tmp_path: Path) -> None:
    write(tmp_path / "10-a.yml", "kvm:\n  hosts:\n    n1:\n")
    write(tmp_path / "20-b", "[kvm]\nn2 ansible_port=2222\n")
    write(tmp_path / "30-c.ini", "[gpu]\nn3\n")
    write(tmp_path / "empty.yml", "")
    for ignored in ("README.md", "x.retry", "old.bak", ".hidden", "conf.cfg", "e~"):
        write(tmp_path / ignored, "this is not an inventory: [[[\n")
    write(tmp_path / "sub" / "more.yaml", "gpu:\n  hosts:\n    n4:\n")
    write(tmp_path / "group_vars" / "kvm.yml", "ansible_user: ops\n")
    inv = load_inventory(tmp_path)
    assert list(inv.hosts) == ["n1", "n2", "n3", "n4"]
    assert inv.hosts["n2"].target.user == "ops" and inv.hosts["n2"].target.port == 2222


def test_script_inventory(tmp_path: Path) -> None:
    script = write(
        tmp_path / "inventory.py",
        '#!/bin/sh\n[ "$1" = --list ] || exit 3\n'
        f"cat <<'EOF'\n{json.dumps(JSON_INVENTORY)}\nEOF\n",
    )
    script.chmod(0o755)
    write(tmp_path / "host_vars" / "n2.yml", "ansible_port: 2200\n")
    inv = load_inventory(script)
    assert inv.hosts["n1"].target.host == "10.0.0.1" and inv.hosts["n1"].target.user == "ops"
    assert inv.hosts["n2"].target.port == 2200


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("echo oops >&2; exit 3", "exited with status 3: oops"),
        ("echo not json", "output is not JSON"),
        ("sleep 30", "ran longer than 0.5 s"),
        ("yes", "printed more than 32 MiB"),
        ('echo \'{"kvm": ["n1"]}\'', "no '_meta.hostvars'"),
    ],
)
def test_script_failures(tmp_path: Path, body: str, problem: str) -> None:
    script = write(tmp_path / "inv.sh", f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    with pytest.raises(InventoryError, match=re.escape(problem)):
        if "sleep" in body:
            run_script(script, timeout=0.5)
        else:
            load_inventory(script)


def test_json_tags_of_ansible_inventory_list() -> None:
    data = {
        "_meta": {
            "hostvars": {
                "n1": {"ansible_user": {"__ansible_unsafe": "x{{y}}"}},
                "n2": {"ansible_user": {"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n6132\n"}},
            },
            "profile": "inventory_legacy",
        },
        "kvm": {"hosts": ["n1", "n2"]},
    }
    inv = load_inventory("-", stdin=io.BytesIO(json.dumps(data).encode()))
    assert inv.hosts["n1"].target.user == "x{{y}}"
    refusal = inv.hosts["n2"].refusal
    assert refusal is not None and "vault-encrypted" in refusal.message


def test_json_inventory_from_stdin_and_file(tmp_path: Path) -> None:
    data = json.dumps(JSON_INVENTORY).encode()
    inv = load_inventory("-", stdin=io.BytesIO(data))
    assert list(inv.hosts) == ["n1", "n2"] and inv.hosts["n1"].target.user == "ops"
    path = tmp_path / "inventory.json"
    path.write_bytes(data)
    assert load_inventory(path).hosts["n1"].target.host == "10.0.0.1"
    with pytest.raises(InventoryError, match="no standard input"):
        load_inventory("-")


# ----------------------------------------------------------------------------------------------
# Per-host refusals, templates


def test_a_refused_host_outside_the_limit_does_not_refuse_the_inventory() -> None:
    inv = parse_inventory(
        "[kvm]\nn1\n[win]\nw1 ansible_connection=winrm\nt1 ansible_host='{{ hostvars.x.y }}'\n",
        "hosts",
    )
    assert [h.name for h in select(inv, "kvm")] == ["n1"]
    with pytest.raises(InventoryError) as caught:
        select(inv, "all")
    assert str(caught.value) == (
        "hosts:4: host 'w1': ansible_connection is 'winrm'; vlcalc connects with ssh, paramiko, "
        "smart and local only: use the Ansible collect playbook (inventories/ansible/collect.yml)"
        " (and 1 more selected hosts refused); or leave it out: --limit '!w1'"
    )


def test_templates_render_against_host_vars_and_magic_vars() -> None:
    text = (
        "all:\n"
        "  vars:\n"
        "    domain: '{{ site }}.example'\n"
        "    site: dc1\n"
        "  children:\n"
        "    kvm:\n"
        "      hosts:\n"
        "        node01.rack:\n"
        "          ansible_host: '{{ inventory_hostname_short }}.{{ domain }}'\n"
        "          ansible_user: \"{{ group_names | join('-') }}\"\n"
        "          ansible_port: '{{ 2200 + 2 }}'\n"
    )
    inv = parse_inventory(text, "inv.yaml")
    target = inv.hosts["node01.rack"].target
    assert (target.host, target.user, target.port) == ("node01.dc1.example", "kvm", 2202)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{{ hostvars['x'].y }}", "'hostvars' is undefined"),
        ("{{ lookup('env', 'HOME') }}", "'lookup' is undefined"),
        ("{{ x | regex_replace('a', 'b') }}", "No filter named 'regex_replace'"),
        ("{{ 'x' * 100000000 }}", "'*' building more than"),
        ("{{ 2 ** 1000000 }}", "'**' with an exponent above 64"),
        ("{{ a }}", "'a' refers to itself"),
        ("{{ ''.__class__ }}", "cannot be rendered"),
    ],
)
def test_templates_vlcalc_cannot_render_refuse_the_host(value: str, problem: str) -> None:
    text = (
        "kvm:\n  hosts:\n    n1:\n      x: 1\n      a: '{{ b }}'\n      b: '{{ a }}'\n"
        f'      ansible_host: "{value}"\n'
    )
    inv = parse_inventory(text, "inv.yaml")
    refusal = inv.hosts["n1"].refusal
    assert refusal is not None and problem in refusal.message, refusal
    assert "\n" not in str(refusal) and "collect.yml" in str(refusal)


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ("ansible_become: true\n      ansible_become_method: su", "becomes root with sudo only"),
        ("ansible_password: secret", "password authentication"),
        ("ansible_host_key_checking: false", "turning host key checking off"),
        ("ansible_become: true\n      ansible_become_pass: x", "a become password"),
        ("ansible_ssh_common_args: -A", "ssh option -A, which vlcalc does not honour"),
        ("ansible_ssh_extra_args: -F /etc/other", "ssh option -F"),
        (
            "ansible_connection: paramiko\n      ansible_ssh_common_args: -J b",
            "is set on a host with ansible_connection: paramiko, whose connection settings",
        ),
    ],
)
def test_settings_vlcalc_cannot_honour_refuse_the_host(variables: str, problem: str) -> None:
    inv = parse_inventory(f"kvm:\n  hosts:\n    n1:\n      {variables}\n", "inv.yaml")
    refusal = inv.hosts["n1"].refusal
    assert refusal is not None and problem in refusal.message
    assert any(way in refusal.message for way in ("collect.yml", "--transport openssh", "use "))


def test_settings_that_are_harmless_are_accepted() -> None:
    inv = parse_inventory(
        "kvm:\n  hosts:\n    n1:\n      ansible_become_method: su\n"
        "      ansible_host_key_checking: true\n",
        "inv.yaml",
    )
    assert inv.hosts["n1"].refusal is None  # su without become; checking keys is the default


# ----------------------------------------------------------------------------------------------
# ssh arguments


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-o ProxyJump=b1", [("proxyjump", "b1")]),
        ("-o 'ServerAliveInterval 5'", [("serveraliveinterval", "5")]),
        ("-oPort=2222 -p2223", [("port", "2222"), ("port", "2223")]),
        ("-o ProxyCommand='ssh -W %h:%p gw'", [("proxycommand", "ssh -W %h:%p gw")]),
        ('-o ProxyCommand="ssh -q gw nc %h %p"', [("proxycommand", "ssh -q gw nc %h %p")]),
        ("-J a,b -i /k -l ops", [("proxyjump", "a,b"), ("identityfile", "/k"), ("user", "ops")]),
        ("-o 'User = ops'", [("user", "ops")]),
    ],
)
def test_parse_ssh_args(text: str, expected: list[tuple[str, str]]) -> None:
    assert list(parse_ssh_args(text)) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-A", "ssh option -A"),
        ("-4", "ssh option -4"),
        ("-L 80:a:80", "ssh option -L"),
        ("bastion", "not an ssh option"),
        ("-o", "without its argument"),
        ("-o Port", "not 'Keyword=value'"),
        ("-o 'unclosed", "cannot be split"),
    ],
)
def test_parse_ssh_args_refusals(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_ssh_args(text)


def test_ssh_args_and_variables_first_wins() -> None:
    inv = parse_inventory(
        "kvm:\n  hosts:\n    n1:\n      ansible_port: 22\n      ansible_user: ops\n"
        "      ansible_ssh_common_args: -p 2222 -l other -i /k1 -J jump -o ForwardAgent=no\n"
        "      ansible_ssh_extra_args: -i /k2 -o ForwardAgent=yes\n"
        "      ansible_ssh_args: -C -o ControlMaster=auto -o ControlPersist=60s\n",
        "inv.yaml",
    )
    target = inv.hosts["n1"].target
    assert (target.port, target.user, target.key_file) == (22, "ops", "/k1")
    assert target.ssh_options == (
        ("identityfile", "/k2"),  # ssh tries every IdentityFile, in order: /k1, then /k2
        ("proxyjump", "jump"),
        ("forwardagent", "no"),
        ("forwardagent", "yes"),
    )


def test_ssh_args_come_before_the_variables() -> None:
    """Ansible's command line is ssh_args, then -o Port/IdentityFile/User from the variables:
    ssh keeps the first Port and User, so ansible_ssh_args beats ansible_port/ansible_user."""
    inv = parse_inventory(
        "kvm:\n  hosts:\n    n1:\n      ansible_port: 22\n      ansible_user: invuser\n"
        "      ansible_private_key_file: /k2\n"
        "      ansible_ssh_args: -o Port=2200 -o User=argsuser -i /k1\n",
        "inv.yaml",
    )
    target = inv.hosts["n1"].target
    assert (target.port, target.user, target.key_file) == (2200, "argsuser", "/k1")
    assert target.ssh_options == (("identityfile", "/k2"),)


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ("ansible_host: ops@10.0.0.1", "write the user in ansible_user"),
        ("ansible_host: ssh://10.0.0.1:2222", "write the user in ansible_user"),
        ("ansible_host: ''", "is empty"),
        ("ansible_become: true\n      ansible_sudo_exe: /opt/sudo", "another become executable"),
        ("ansible_become: true\n      ansible_sudo_flags: -E", "become flags"),
        (
            "ansible_connection: paramiko\n      ansible_paramiko_host: 10.9.9.9",
            "whose connection settings vlcalc does not model",
        ),
        (
            "net: {a: '{{ inventory_hostname }}.x'}\n      ansible_host: '{{ net.a }}'",
            "it gives another template",
        ),
        ("ansible_user: '{{ none }}'", "it gives no value (None)"),
        ("ansible_host: \"{{ 'a'.ljust(2**62) }}\"", "a size above 65536"),
        ("ansible_host: \"{{ 'a' | center(10**9) }}\"", "a size above 65536"),
        ("ansible_host: \"{{ '%*s' % (10**9, 'a') }}\"", "a size above 65536"),
    ],
)
def test_connection_values_vlcalc_would_misread_refuse_the_host(
    variables: str, problem: str
) -> None:
    inv = parse_inventory(f"kvm:\n  hosts:\n    n1:\n      {variables}\n", "inv.yaml")
    refusal = inv.hosts["n1"].refusal
    assert refusal is not None and problem in refusal.message, refusal


def test_ansible_sudo_user_is_the_become_user() -> None:
    inv = parse_inventory(
        "kvm:\n  hosts:\n    n1:\n      ansible_become: true\n      ansible_sudo_user: bob\n",
        "inv.yaml",
    )
    assert inv.hosts["n1"].target.become_user == "bob"


# ----------------------------------------------------------------------------------------------
# --limit


def test_limit_warns_about_unmatched_patterns_and_reads_limit_files(tmp_path: Path) -> None:
    inv = parse_inventory("[web]\nw1\nw2\nw3\n[db]\nd1\n", "hosts")
    warnings: list[str] = []
    assert [h.name for h in select(inv, "web:nosuch", warnings.append)] == ["w1", "w2", "w3"]
    assert warnings == [
        "--limit pattern 'nosuch' matches no host or group: ignored, as Ansible does"
    ]
    retry = write(tmp_path / "site.retry", "w2\nd1\n\n")
    assert [h.name for h in select(inv, f"@{retry}")] == ["w2", "d1"]
    with pytest.raises(InventoryError, match="must be a file, not a directory"):
        select(inv, f"@{tmp_path}")


def test_subscripts_follow_the_groups_own_order() -> None:
    # web's own hosts first (w9 was added to web before w1), then its children's
    inv = parse_inventory("[web]\nw9\nw1\n[web:children]\napp\n[app]\na1\n[other]\nw1\n", "hosts")
    assert [h.name for h in select(inv, "web[0]")] == ["w9"]
    # the selection itself is listed in file order, as every selection is
    assert [h.name for h in select(inv, "web[1:2]")] == ["w1", "a1"]
    assert [h.name for h in select(inv, "web[-1]")] == ["a1"]
