"""Generated Ansible inventories, and what the real ``ansible`` passes to ssh for them.

``ansible`` runs with ``ansible_ssh_executable`` pointing at a recorder script that writes its
argv to a file and exits 255 (unreachable): nothing connects anywhere.  The recorded argv is read
as ssh reads its command line (the first value of each option wins) and compared with the
:class:`~vlcalc.transport.base.Target` vlcalc resolves for the same host.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUMMARY: list[str] = []
"""Lines for the pytest terminal summary (tests/conftest.py)."""

RECORDER = """#!/bin/sh
for a in "$@"; do printf '%s\\0' "$a"; done > "$VLCALC_RECORD_DIR/$$.argv"
exit 255
"""

# Options Ansible's ssh plugin always adds itself (not from the inventory).
ANSIBLE_OWN = frozenset(
    (
        "controlmaster",
        "controlpersist",
        "controlpath",
        "kbdinteractiveauthentication",
        "preferredauthentications",
        "passwordauthentication",
        "connecttimeout",
        "numberofpasswordprompts",
    )
)
SSH_WITH_ARGUMENT = frozenset("BbcDEeFIiJLlmOoPpQRSWw")


@dataclass(frozen=True)
class Seen:
    """What one ssh command line asks for, read with ssh's first-wins rule."""

    destination: str
    port: int | None
    user: str | None
    identities: tuple[str, ...]
    options: tuple[tuple[str, str], ...]  # sorted (keyword, value), first value of each
    become_user: str | None  # None: no become


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def read_argv(argv: list[str]) -> Seen:
    """An ssh argv (without argv[0]) -> :class:`Seen`."""
    options: dict[str, str] = {}
    identities: list[str] = []
    index = 0
    while argv[index].startswith("-"):
        word = argv[index]
        index += 1
        letters = word[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter not in SSH_WITH_ARGUMENT:
                continue
            if letters:
                argument, letters = letters, ""
            else:
                argument = argv[index]
                index += 1
            if letter == "o":
                keyword, _, value = re.split(r"(\s*=\s*|\s+)", argument.strip(), maxsplit=1)
                keyword = keyword.lower()
                value = _unquote(value)
                if keyword == "identityfile":
                    identities.append(value)
                else:
                    options.setdefault(keyword, value)
            elif letter == "i":
                identities.append(argument)
            else:
                name = {"J": "proxyjump", "p": "port", "l": "user"}.get(letter, letter)
                options.setdefault(name, argument)
    destination, command = argv[index], " ".join(argv[index + 1 :])
    become = re.search(r"\bsudo -H -S -n\s+-u (\S+)", command)
    port = options.pop("port", None)
    user = options.pop("user", None)
    return Seen(
        destination=destination,
        port=int(port) if port else None,
        user=user,
        identities=tuple(identities),
        options=tuple(sorted((k, v) for k, v in options.items() if k not in ANSIBLE_OWN)),
        become_user=become.group(1) if become else None,
    )


def expected(target: Any) -> Seen:
    """What vlcalc's :class:`Target` asks ssh for, in :class:`Seen` terms."""
    options: dict[str, str] = {}
    identities = [os.path.expanduser(target.key_file)] if target.key_file else []
    for keyword, value in target.ssh_options:
        if keyword == "identityfile":
            identities.append(value)
        else:
            options.setdefault(keyword, value)
    return Seen(
        destination=target.host,
        port=target.port,
        user=target.user,
        identities=tuple(identities),
        options=tuple(sorted(options.items())),
        become_user=(target.become_user or "root") if target.become else None,
    )


# ----------------------------------------------------------------------------------------------
# The generator

FORMATS = ("yaml", "ini", "ini-noext", "dir", "yaml", "ini", "script")
COMMON_ARGS = (
    "-o ProxyJump=jump1",
    "-J j1,j2",
    "-o 'ServerAliveInterval 7'",
    "-o ProxyCommand='ssh -W %h:%p gw'",
    "-p 2022 -l common",
    "-i /keys/common -o ForwardAgent=no",
    "-oServerAliveCountMax=4 -o StrictHostKeyChecking=yes",
)
EXTRA_ARGS = ("-o ServerAliveCountMax=3", "-l extra", "-oIdentityFile=/keys/extra", "-p2099")


def _group_vars(rng: random.Random, prefix: str) -> dict[str, Any]:
    """A few connection variables for a group: templated or shared values only (a literal
    address belongs to one host, so that every host's ssh destination is its own)."""
    pool: list[tuple[str, Any]] = [
        ("ansible_host", "{{ inventory_hostname }}.lan"),
        ("ansible_host", "{{ site }}-{{ inventory_hostname_short }}"),
        ("ansible_ssh_host", "{{ inventory_hostname_short }}.mgmt"),
        ("ansible_port", rng.randint(2000, 2999)),
        ("ansible_ssh_port", str(rng.randint(3000, 3999))),
        ("ansible_port", "{{ 2200 + inventory_hostname_short | length }}"),
        ("ansible_user", rng.choice(["ops", "admin", "u{{ inventory_hostname_short | length }}"])),
        ("ansible_ssh_user", "legacy"),
        ("ansible_private_key_file", "/keys/{{ inventory_hostname_short }}"),
        ("ansible_ssh_private_key_file", "~/.ssh/id_" + prefix),
        ("ansible_ssh_common_args", rng.choice(COMMON_ARGS)),
        ("ansible_ssh_extra_args", rng.choice(EXTRA_ARGS)),
        ("ansible_become", rng.choice([True, "yes", False, "false"])),
        ("ansible_become_user", rng.choice(["root", "kvm"])),
        ("gv_marker", prefix),
    ]
    return dict(rng.sample(pool, rng.randint(1, 4)))


def _host_vars(rng: random.Random, prefix: str, number: int) -> dict[str, Any]:
    variables = _group_vars(rng, prefix) if rng.random() < 0.6 else {}
    roll = rng.random()
    if roll < 0.15:
        variables["ansible_host"] = f"127.{number % 250}.{rng.randint(0, 250)}.{number}"
    elif roll < 0.2:
        variables["ansible_ssh_host"] = f"10.9.{number % 250}.{rng.randint(1, 250)}"
    elif roll < 0.23:  # refused by vlcalc; Ansible fails too (no ssh)
        variables["ansible_host"] = rng.choice(
            ["{{ hostvars['nope'].address }}", "{{ undefined_thing }}.lan"]
        )
    elif roll < 0.25:
        variables["ansible_connection"] = "winrm"
    return variables


def _vars_file(path: Path, variables: dict[str, Any], form: str) -> None:
    """Write ``variables`` as group_vars/host_vars entry ``path`` (without extension)."""
    if form == "dir":
        path.mkdir(parents=True)
        items = list(variables.items())
        half = len(items) // 2
        (path / "10-first.yml").write_text(yaml.safe_dump(dict(items[:half])))
        (path / "sub").mkdir()
        (path / "sub" / "20-second.json").write_text(json.dumps(dict(items[half:])))
        (path / "notes.txt").write_text("ansible_user: ignored-by-both\n")  # not a vars file
        (path / ".hidden.yml").write_text("ansible_user: hidden\n")
        (path / "backup.yml~").write_text("ansible_user: backup\n")
    elif form == "json":
        path.with_suffix(".json").write_text(json.dumps(variables))
    elif form == "noext":
        path.write_text(yaml.safe_dump(variables))
    elif form == "both":  # .yml is found before .yaml, which is then not read
        path.with_name(path.name + ".yml").write_text(yaml.safe_dump(variables))
        path.with_name(path.name + ".yaml").write_text("ansible_user: shadowed\n")
    else:
        path.with_name(path.name + "." + form).write_text(yaml.safe_dump(variables))


def _ini_value(value: Any, inline: bool) -> str:
    text = str(value) if not isinstance(value, bool) else ("True" if value else "False")
    return shlex.quote(text) if inline else text


@dataclass
class Case:
    """One generated inventory: its ``ansible -i`` source, and a --limit fragment."""

    index: int
    source: Path
    limit: list[str]


def make_case(root: Path, index: int) -> Case:
    rng = random.Random(index)
    prefix = f"i{index:03d}"
    kind = FORMATS[index % len(FORMATS)]
    home = root / prefix
    home.mkdir(parents=True)
    web, db, kvm, rack = (f"{prefix}_{name}" for name in ("web", "db", "kvm", "rack"))
    groups = [web, db, kvm, rack]
    group_vars = {g: _group_vars(rng, prefix) for g in groups if rng.random() < 0.6}
    all_vars: dict[str, Any] = {"site": f"s{index}"}
    if rng.random() < 0.3:
        all_vars.update(_group_vars(rng, prefix))
    hosts: dict[str, dict[str, Any]] = {}
    membership: dict[str, list[str]] = {web: [], db: [], kvm: []}
    for number in range(1, rng.randint(3, 7)):
        name = f"{prefix}-h{number}" + (".example" if rng.random() < 0.4 else "")
        hosts[name] = _host_vars(rng, prefix, index * 10 + number)
        for group in rng.sample(list(membership), rng.randint(1, 2)):
            membership[group].append(name)
    ranged = f"{prefix}-r[1:2]"  # a range, in one group, with shared vars
    membership[kvm].append(ranged)
    hosts[ranged] = {}
    children = {rack: [kvm, web] if rng.random() < 0.5 else [web, kvm]}

    # group_vars/ and host_vars/ beside the source
    vars_home = home
    forms = ["yml", "yaml", "json", "noext", "dir", "both"]
    for group in [*groups, "all"]:
        if rng.random() < 0.5:
            (vars_home / "group_vars").mkdir(exist_ok=True)
            variables = _group_vars(rng, prefix)
            variables[f"gv_{group.split('_')[-1]}"] = group
            _vars_file(vars_home / "group_vars" / group, variables, rng.choice(forms))
    for name in list(hosts)[:-1]:
        if rng.random() < 0.3:
            (vars_home / "host_vars").mkdir(exist_ok=True)
            variables = _group_vars(rng, prefix)
            if rng.random() < 0.5:
                variables["ansible_host"] = f"127.250.{index % 250}.{len(name)}{rng.randint(0, 9)}"
            _vars_file(vars_home / "host_vars" / name, variables, rng.choice(forms))

    if kind in ("ini", "ini-noext"):
        lines = ["[all:vars]", *(f"{k}={_ini_value(v, False)}" for k, v in all_vars.items())]
        for group, members in membership.items():
            lines.append(f"[{group}]")
            for name in members:
                inline = " ".join(
                    f"{k}={_ini_value(v, True)}" for k, v in hosts[name].items() if name in members
                )
                lines.append(f"{name} {inline}".rstrip() + "  # a comment")
                hosts[name] = {}  # vars once, where the host first appears
        for group, variables in group_vars.items():
            lines.append(f"[{group}:vars]")
            lines.extend(f"{k}={_ini_value(v, False)}" for k, v in variables.items())
        lines.append(f"[{rack}:children]")
        lines.extend(children[rack])
        source = home / ("hosts" if kind == "ini-noext" else "inventory.ini")
        source.write_text("\n".join(lines) + "\n")
    elif kind == "script":
        document: dict[str, Any] = {"all": {"vars": all_vars}}
        for group, members in membership.items():
            expanded = [m.replace("[1:2]", "1") for m in members]
            document[group] = {"hosts": expanded, "vars": group_vars.get(group, {})}
        document[rack] = {"children": children[rack], "vars": group_vars.get(rack, {})}
        hostvars = {name.replace("[1:2]", "1"): v for name, v in hosts.items() if v}
        document["_meta"] = {"hostvars": hostvars}
        source = home / "inventory.sh"
        source.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps(document) + "\nEOF\n")
        source.chmod(0o755)
    else:
        document = {"all": {"vars": all_vars, "children": {}}}
        for group, members in membership.items():
            definition: dict[str, Any] = {"hosts": {}}
            if group in group_vars:
                definition["vars"] = group_vars[group]
            for name in members:
                definition["hosts"][name] = hosts[name] or None
                hosts[name] = {}
            document["all"]["children"][group] = definition
        document[rack] = {"children": {child: None for child in children[rack]}}
        if rack in group_vars:
            document[rack]["vars"] = group_vars[rack]
        text = yaml.safe_dump(document, sort_keys=False)
        if kind == "dir":
            (home / "10-inventory.yml").write_text(text)
            (home / "README.md").write_text("not an inventory\n")
            (home / "old.retry").write_text("nothing\n")
            (home / "empty.yml").write_text("")
            source = home
        else:
            source = home / "inventory.yaml"
            source.write_text(text)

    limit = rng.choice(
        [
            [f"{prefix}_*"],
            [f"{web}[0]", f"{db}"],
            [f"{rack}[1:2]", f"{prefix}-h1*"],
            [f"~{prefix}-h[1-3].*", f"{kvm}[-1]"],
            [f"{prefix}-*"],
            [f"{rack}", f"{db}[0:1]"],
        ]
    )
    return Case(index=index, source=source, limit=limit)


def run_ansible(
    sources: list[Path], limit: str, home: Path, recorder: Path
) -> tuple[list[Seen], str, dict[str, Any]]:
    """Run ``ansible all -m raw`` over ``sources`` with the recorder as ssh: every ssh command
    line it would have run, its output, and ``ansible-inventory --list`` for the same sources."""
    records = home / "records"
    records.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(home / "none.cfg"),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(home / "cp"),
        ANSIBLE_SSH_EXECUTABLE=str(recorder),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="False",
        VLCALC_RECORD_DIR=str(records),
    )
    command = ["ansible", "all", "-m", "raw", "-a", "true", "-f", "16", "--limit", limit]
    listing = ["ansible-inventory", "--list"]
    for source in sources:
        command += ["-i", str(source)]
        listing += ["-i", str(source)]
    result = subprocess.run(
        command, env=env, cwd=home, capture_output=True, text=True, timeout=300, check=False
    )
    listed = subprocess.run(
        listing, env=env, cwd=home, capture_output=True, text=True, timeout=300, check=True
    )

    seen = []
    for path in sorted(records.iterdir()):
        argv = path.read_bytes().split(b"\0")[:-1]
        seen.append(read_argv([part.decode() for part in argv]))
    return seen, result.stdout + result.stderr, json.loads(listed.stdout)
