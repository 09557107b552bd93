"""The inventory graph: groups, hosts, variables and ranges, as ansible-core's InventoryData.

Every source format (YAML, INI, JSON) feeds one :class:`Builder`; :meth:`Builder.resolve` then
merges variables in Ansible's order and turns each host into a :class:`Host`.  Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

from vlcalc.errors import InventoryError
from vlcalc.transport.base import Target

# Caps on hostile or mistyped input (README "Limits and bad input").  A 100,000-host inventory
# with four variables per host is about 10 MB and 900,000 YAML nodes, and takes about 6 s and
# 0.5 GB to load (measured): every cap sits well above that and well below an OOM kill.
MAX_INVENTORY_BYTES = 32 * 1024 * 1024
"""Bytes read from an inventory file; one more and it is refused unparsed."""
MAX_YAML_NODES = 2_000_000
"""Scalars, sequences and mappings written in the file (what PyYAML holds in memory)."""
MAX_YAML_EXPANDED_NODES = 10_000_000
"""Nodes counted with every alias (``*name``) as the whole subtree it stands for: the
"billion laughs" alias bomb is a few hundred bytes and 10**9 nodes once expanded."""
MAX_YAML_DEPTH = 100
"""Nesting of sequences and mappings; deeper input would overflow the parser's stack."""
MAX_INTEGER_DIGITS = 1000
"""Characters in one YAML integer; Python refuses to convert more than 4,300 digits anyway."""
MAX_HOSTS_PER_RANGE = 100_000
"""Names one host pattern such as ``node[0001:2000]`` may expand to, counted before expanding."""
MAX_HOSTS = 100_000
"""Distinct hosts in one inventory."""
MAX_GROUPS = 10_000
"""Groups in one inventory."""
MAX_GROUP_DEPTH = 100
"""Longest chain of child groups below ``all``: each host's group set is built from its
ancestors, so a 10,000-group chain would cost 50 million entries."""
MAX_HOST_ENTRIES = 1_000_000
"""Host names written or expanded under all groups together (a host listed in two groups counts
twice): a 100,000-host range repeated under many groups is refused before it fills memory."""


@dataclass(frozen=True)
class Host:
    """One inventory host, resolved.

    ``groups`` holds every group the host belongs to, directly or through child groups, sorted by
    name and without ``all`` (Ansible's ``group_names``).  ``vars`` are the merged inventory
    variables as ``ansible-inventory --list`` shows them in ``_meta.hostvars``.  ``connection``
    is where and how to reach the host, or why vlcalc refuses to (a winrm host, a template it
    cannot render...): a refused host spoils only a scan that selects it.
    Example: ``Host(name="node01", groups=("kvm", "rack1"), vars={"ansible_user": "ops"},
    connection=Target(name="node01", host="node01", user="ops"))``.
    """

    name: str
    groups: tuple[str, ...]
    vars: dict[str, Any]
    connection: Target | InventoryError = field(compare=False)

    @property
    def target(self) -> Target:
        """The host's :class:`Target`; raises the :class:`InventoryError` of a refused host."""
        if isinstance(self.connection, InventoryError):
            raise InventoryError(
                self.connection.message, source=self.connection.source, line=self.connection.line
            )
        return self.connection

    @property
    def refusal(self) -> InventoryError | None:
        """Why vlcalc will not connect to this host, or ``None``."""
        return self.connection if isinstance(self.connection, InventoryError) else None


@dataclass(frozen=True)
class Inventory:
    """A resolved inventory.

    ``hosts`` is in order of first appearance in the sources.  ``groups`` maps every group,
    including ``all`` and ``ungrouped``, to the names of all hosts in it or in its descendants, in
    the same order as ``hosts``.
    """

    source: str
    hosts: dict[str, Host]
    groups: dict[str, list[str]]
    tree: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    """Each group's own hosts and its children, in the order they were added (for ``web[0]``)."""


Where = tuple[str, "int | None"]
"""The file and 1-based line (when known) a variable was set at."""

MakeTarget = Callable[
    [str, tuple[str, ...], dict[str, Any], dict[str, Where]], "Target | InventoryError"
]
"""``(name, groups, variables, where) -> Target | InventoryError``: see ``connect.py``."""


# --------------------------------------------------------------------------------------------
# Variable values


class LineMapping(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the 1-based line of each of its keys."""

    lines: dict[Any, int]


class Unsafe(str):
    """A ``!unsafe`` string: Ansible never templates it, so neither do we complain about it."""


@dataclass(frozen=True)
class Vaulted:
    """A ``!vault`` value; vlcalc has no vault password, so it cannot be used."""

    line: int


# --------------------------------------------------------------------------------------------
# Host patterns: "name", "name:port", "[v6addr]:port", ranges "node[01:20:2]", "rack[a:c]"

_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE | re.UNICODE)
_IPV4_PART = r"(?:[01]?[0-9]{1,2}|2[0-4][0-9]|25[0-5]|\[[0-9]+:[0-9]+(?::[0-9]+)?\])"
_IPV4 = re.compile(rf"^(?:{_IPV4_PART}\.){{3}}{_IPV4_PART}$")
_V6_RANGE = re.compile(r"\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\]", re.IGNORECASE)


def is_address(address: str) -> bool:
    """Whether Ansible would accept ``address`` as a host name or IP address (ranges allowed)."""
    if _IPV4.match(address) or _HOSTNAME.match(address):
        return True
    if ":" not in address:
        return False
    try:
        ipaddress.IPv6Address(_V6_RANGE.sub("0", address))
    except ValueError:
        return False
    return True


def split_port(pattern: str) -> tuple[str, int | None]:
    """``"node01:2222"`` -> ``("node01", 2222)``.  Like Ansible, a string that is not a valid
    address once the port is taken off is used whole, as the name, with no port."""
    address, port = pattern, None
    for regex in (_BRACKETED_HOSTPORT, _HOSTPORT):
        match = regex.match(address)
        if match:
            address, port = match.group(1), int(match.group(2))
    if not is_address(address):
        return pattern, None
    return address, port


_MAX_BOUND_DIGITS = 20


def expand_ranges(pattern: str, fail: Callable[[str], InventoryError]) -> list[str]:
    """``"node[01:03]"`` -> ``["node01", "node02", "node03"]``; ``[a:c]``, ``[0:10:2]`` and
    several ranges in one name work as in Ansible.  A leading zero in the start pads every number
    to the start's width, so the end must be written with the same width.

    The number of names is computed from the bounds first: a pattern that would expand to more
    than :data:`MAX_HOSTS_PER_RANGE` names is refused without building any of them (Ansible
    builds the list: ``web[0:99999999999]`` took 24 GB before the OOM killer ended it).
    """
    parts: list[Any] = []  # literal strings and range objects (``range`` or letter strings)
    rest = pattern
    while True:
        start = rest.find("[")
        if start < 0:
            parts.append(rest)
            break
        stop = rest.find("]", start)
        if stop < 0:
            raise fail(f"bad host range in {pattern!r}: no closing ']'")
        parts.append(rest[:start])
        parts.append(_parse_range(rest[start + 1 : stop], pattern, fail))
        rest = rest[stop + 1 :]
    count = math.prod(len(part[0]) for part in parts if isinstance(part, tuple))
    if count > MAX_HOSTS_PER_RANGE:
        raise fail(
            f"host range {pattern!r} expands to {count:,} hosts, more than the "
            f"{MAX_HOSTS_PER_RANGE:,} vlcalc accepts in one pattern; check the bounds"
        )
    choices = [
        [str(value).zfill(part[1]) for value in part[0]] if isinstance(part, tuple) else [part]
        for part in parts
    ]
    return ["".join(name) for name in itertools.product(*choices)]


def _parse_range(
    body: str, pattern: str, fail: Callable[[str], InventoryError]
) -> tuple[range | str, int]:
    """``"01:20:2"`` -> ``(range(1, 21, 2), 2)``: the values and the zero-padding width;
    ``"a:c"`` -> ``("abc", 0)``."""
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise fail(f"bad host range [{body}] in {pattern!r}: write [begin:end] or [begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    if not end:
        raise fail(f"bad host range [{body}] in {pattern!r}: the end is missing")
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if max(len(begin), len(end), len(step_text)) > _MAX_BOUND_DIGITS:
        raise fail(
            f"bad host range [{body}] in {pattern!r}: "
            f"a bound or step longer than {_MAX_BOUND_DIGITS} digits"
        )
    if not step_text.isdigit() or not step_text.isascii() or int(step_text) == 0:
        raise fail(f"bad host range [{body}] in {pattern!r}: the step must be a positive integer")
    step = int(step_text)

    letters = string.ascii_letters
    if len(begin) == 1 and len(end) == 1 and begin in letters and end in letters:
        if letters.index(begin) > letters.index(end):
            raise fail(f"bad host range [{body}] in {pattern!r}: begin is after end")
        return letters[letters.index(begin) : letters.index(end) + 1 : step], 0
    if begin.isdigit() and end.isdigit() and begin.isascii() and end.isascii():
        width = 0
        if begin.startswith("0") and len(begin) > 1:
            if len(begin) != len(end):
                raise fail(
                    f"bad host range [{body}] in {pattern!r}: "
                    "a zero-padded begin needs an end of the same width"
                )
            width = len(begin)
        if int(begin) > int(end):
            raise fail(f"bad host range [{body}] in {pattern!r}: begin is after end, no hosts")
        return range(int(begin), int(end) + 1, step), width
    raise fail(
        f"bad host range [{body}] in {pattern!r}: use numbers or single letters, "
        "such as [01:20] or [a:f]"
    )


# --------------------------------------------------------------------------------------------
# Building the group graph, as ansible-core's yaml plugin and InventoryData do


class _Group:
    __slots__ = ("children", "hosts", "line", "name", "parents", "priority", "vars", "where")

    def __init__(self, name: str, line: int | None) -> None:
        self.name = name
        self.line = line
        self.vars: dict[str, Any] = {}
        self.where: dict[str, Where] = {}
        self.priority = 1
        self.children: dict[str, None] = {}  # ordered, with O(1) membership
        self.parents: list[str] = []
        self.hosts: list[str] = []


class _HostEntry:
    __slots__ = ("groups", "line", "name", "vars", "where")

    def __init__(self, name: str, line: int | None) -> None:
        self.name = name
        self.line = line
        self.vars: dict[str, Any] = {}
        self.where: dict[str, Where] = {}
        self.groups: list[str] = []  # direct memberships, in the order they were written


_SECTIONS = ("vars", "children", "hosts")


class Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.groups: dict[str, _Group] = {}
        self.hosts: dict[str, _HostEntry] = {}
        self.member_sets: dict[str, set[str]] = {}
        self.entries = 0  # host names listed under groups, ranges expanded
        self.edges: dict[tuple[str, str], int | None] = {}  # (parent, child) -> line, in order
        # group_vars/ and host_vars/ files, each as (vars, where), in the order Ansible loads them
        self.group_files: dict[str, list[tuple[dict[str, Any], dict[str, Where]]]] = {}
        self.host_files: dict[str, list[tuple[dict[str, Any], dict[str, Where]]]] = {}
        self.add_group("all", None)
        self.add_group("ungrouped", None)
        self.add_child("all", "ungrouped", None)

    def error(self, message: str, line: int | None) -> InventoryError:
        return InventoryError(message, source=self.source, line=line)

    def add_group(self, name: str, line: int | None) -> _Group:
        group = self.groups.get(name)
        if group is None:
            if len(self.groups) >= MAX_GROUPS + 2:  # "all" and "ungrouped" are free
                raise self.error(f"more than {MAX_GROUPS:,} groups (at {name!r})", line)
            group = self.groups[name] = _Group(name, line)
            self.member_sets[name] = set()
        return group

    def add_child(self, parent: str, child: str, line: int | None) -> None:
        # Loops are found once, in resolve(): walking the ancestors here, on every edge, was
        # quadratic in a long chain of groups.
        if parent == child:
            raise self.error(f"group {child!r} is listed as a child of itself", line)
        parent_group, child_group = self.groups[parent], self.groups[child]
        if child in parent_group.children:
            return
        parent_group.children[child] = None
        child_group.parents.append(parent)
        self.edges[(parent, child)] = line

    def _topological_order(self) -> list[str]:
        """Every group after all its parents (Kahn's algorithm, no recursion).  A loop is refused
        at the edge written last among the loop's edges: the one that closed it."""
        waiting = {name: len(group.parents) for name, group in self.groups.items()}
        ready = [name for name, count in waiting.items() if count == 0]
        order: list[str] = []
        while ready:
            name = ready.pop()
            order.append(name)
            for child in self.groups[name].children:
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        if len(order) == len(self.groups):
            return order
        # Every group left has a parent that is left too: follow parents until one repeats.
        left = {name for name, count in waiting.items() if count > 0}
        path: list[str] = [next(iter(left))]
        seen = {path[0]: 0}
        while True:
            parent = next(p for p in self.groups[path[-1]].parents if p in left)
            if parent in seen:
                loop = [*path[seen[parent] :], parent]
                break
            seen[parent] = len(path)
            path.append(parent)
        edge_index = {edge: index for index, edge in enumerate(self.edges)}
        edges = [(loop[i + 1], loop[i]) for i in range(len(loop) - 1)]  # (parent, child)
        parent, child = max(edges, key=lambda edge: edge_index[edge])
        raise self.error(
            f"group {child!r} under {parent!r} makes a loop: {child!r} is already "
            f"an ancestor of {parent!r}",
            self.edges[(parent, child)],
        )

    def add_host(self, name: str, group: str, port: int | None, line: int | None) -> _HostEntry:
        host = self.hosts.get(name)
        if host is None:
            if len(self.hosts) >= MAX_HOSTS:
                raise self.error(
                    f"more than {MAX_HOSTS:,} hosts (at {name!r}); vlcalc refuses larger "
                    "inventories, split it or scan part of it",
                    line,
                )
            host = self.hosts[name] = _HostEntry(name, line)
            # Ansible applies a ":port" only where the host first appears.
            if port is not None:
                host.vars["ansible_port"] = port
                host.where["ansible_port"] = (self.source, line)
        members = self.member_sets[group]
        if name not in members:
            members.add(name)
            self.groups[group].hosts.append(name)
            host.groups.append(group)
        return host

    def parse_document(self, data: Any) -> None:
        if not data:
            raise self.error("the inventory is empty", None)
        if not isinstance(data, dict):
            raise self.error(
                f"the top level must be a mapping of group names, not {type_name(data)}", 1
            )
        if data.get("plugin"):
            raise self.error(
                "this is an inventory plugin configuration ('plugin:'), not an inventory: pipe "
                "`ansible-inventory -i FILE --list` into `vlcalc scan -`",
                line_of(data, "plugin"),
            )
        for name, group_data in data.items():
            self._parse_group(name, group_data, line_of(data, name))

    def _parse_group(self, name: Any, data: Any, line: int | None) -> str:
        if not isinstance(name, str) or not name:
            raise self.error(f"group name {name!r} must be a non-empty string", line)
        if data is not None and not isinstance(data, dict):
            raise self.error(
                f"group {name!r} must be a mapping with vars/children/hosts, not {type_name(data)}",
                line,
            )
        self.add_group(name, line)
        if data is None:
            return name
        for key, value in data.items():
            key_line = line_of(data, key)
            if key not in _SECTIONS:
                raise self.error(
                    f"unexpected key {key!r} in group {name!r}: only vars, children and hosts "
                    "are allowed",
                    key_line,
                )
            if isinstance(value, str):  # Ansible accepts "hosts: node01" for one entry
                value = LineMapping({value: None})
                value.lines = {next(iter(value)): key_line or 0}
            if value is None:
                continue
            if not isinstance(value, dict):
                raise self.error(
                    f"{key!r} of group {name!r} must be a mapping, not {type_name(value)} "
                    f"(write 'name:' entries, not '- name')",
                    key_line,
                )
            if key == "vars":
                self.set_group_vars(self.groups[name], value)
            elif key == "children":
                for child, child_data in value.items():
                    child_line = line_of(value, child)
                    child_name = self._parse_group(child, child_data, child_line)
                    self.add_child(name, child_name, child_line)
            else:
                for pattern, host_vars in value.items():
                    self._parse_host(name, pattern, host_vars, line_of(value, pattern))
        return name

    def set_group_vars(self, group: _Group, variables: dict[Any, Any]) -> None:
        for key, value in variables.items():
            line = line_of(variables, key)
            if key == "ansible_group_priority":
                group.priority = self._priority(group.name, value, line)
                continue
            group.vars[str(key)] = value
            group.where[str(key)] = (self.source, line)

    def _priority(self, group: str, value: Any, line: int | None) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(
                f"ansible_group_priority of group {group!r} must be an integer, not {value!r}",
                line,
            )
        try:
            return int(value)
        except ValueError:
            raise self.error(
                f"ansible_group_priority of group {group!r} must be an integer, not {value!r}",
                line,
            ) from None

    def _parse_host(self, group: str, pattern: Any, variables: Any, line: int | None) -> None:
        if not isinstance(pattern, str) or not pattern:
            raise self.error(
                f"host name {pattern!r} in group {group!r} must be a string "
                "(quote numbers and addresses)",
                line,
            )
        variables = variables or {}
        if not isinstance(variables, dict):
            raise self.error(
                f"host {pattern!r} in group {group!r} must map to its variables "
                f"(or nothing), not {type_name(variables)}",
                line,
            )
        for host in self.add_pattern(group, pattern, line):
            self.set_host_vars(host, variables)

    def add_pattern(self, group: str, pattern: str, line: int | None) -> list[_HostEntry]:
        """Add the hosts of ``pattern`` (``node[01:04]:2222``) to ``group``, as Ansible's
        ``_expand_hostpattern`` does, and return them."""
        address, port = split_port(pattern)
        names = expand_ranges(address, lambda message: self.error(message, line))
        self.entries += len(names)
        if self.entries > MAX_HOST_ENTRIES:
            raise self.error(
                f"more than {MAX_HOST_ENTRIES:,} host entries under groups (at {pattern!r}); "
                "is a large range repeated under many groups?",
                line,
            )
        return [self.add_host(host_name, group, port, line) for host_name in names]

    def set_host_vars(self, host: _HostEntry, variables: dict[Any, Any]) -> None:
        for key, value in variables.items():
            host.vars[str(key)] = value
            host.where[str(key)] = (self.source, line_of(variables, key))

    # -- after parsing: what InventoryData.reconcile_inventory and the vars manager do --

    def resolve(self, make_target: MakeTarget) -> Inventory:
        """The inventory as Ansible sees it once every source is read; ``make_target`` turns
        each host's merged variables into its connection (or a refusal)."""
        self._topological_order()  # a loop is the first thing to report
        if not self.hosts:
            raise self.error("the inventory defines no hosts", None)
        for name in self.hosts:
            if name in self.groups:
                raise self.error(
                    f"{name!r} is both a host and a group; Ansible would apply the host's "
                    "variables to the group, rename one of them",
                    self.hosts[name].line,
                )
        for group in list(self.groups.values()):
            if group.name != "all" and not group.parents:
                self.add_child("all", group.name, group.line)

        # Depth is the longest path from "all"; both maps are filled parents first.
        depths: dict[str, int] = {}
        ancestors: dict[str, frozenset[str]] = {}
        for name in self._topological_order():
            parents = self.groups[name].parents
            depths[name] = 1 + max(depths[p] for p in parents) if parents else 0
            if depths[name] > MAX_GROUP_DEPTH:
                raise self.error(
                    f"group {name!r} is nested {depths[name]} levels below 'all', more than "
                    f"the {MAX_GROUP_DEPTH} vlcalc accepts",
                    self.groups[name].line,
                )
            found: set[str] = set(parents)
            for parent in parents:
                found.update(ancestors[parent])
            ancestors[name] = frozenset(found)

        # A host is in "ungrouped" exactly when it is in no other group, even if listed there.
        ungrouped = self.groups["ungrouped"]
        ungrouped.hosts = []
        for host in self.hosts.values():
            if any(g not in ("all", "ungrouped") for g in host.groups):
                if "ungrouped" in host.groups:
                    host.groups.remove("ungrouped")
            else:
                if "ungrouped" not in host.groups:
                    host.groups.append("ungrouped")
                ungrouped.hosts.append(host.name)

        members: dict[str, list[str]] = {name: [] for name in self.groups}
        merged_cache: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, Where]]] = {}
        hosts: dict[str, Host] = {}
        for host in self.hosts.values():
            all_groups: set[str] = set()
            for group_name in host.groups:
                all_groups.add(group_name)
                all_groups.update(ancestors[group_name])
            for group_name in all_groups:
                members[group_name].append(host.name)
            # Ansible merges group vars by (depth, ansible_group_priority, name), host vars last.
            order = tuple(sorted(all_groups, key=lambda g: (depths[g], self.groups[g].priority, g)))
            if order not in merged_cache:
                merged_cache[order] = self._merge_group_vars(order)
            group_vars, group_where = merged_cache[order]
            variables = {**group_vars, **host.vars}
            where = {**group_where, **host.where}
            for file_vars, file_where in self.host_files.get(host.name, ()):
                variables.update(file_vars)
                where.update(file_where)
            groups = tuple(sorted(all_groups - {"all"}))
            hosts[host.name] = Host(
                name=host.name,
                groups=groups,
                vars=variables,
                connection=make_target(host.name, groups, variables, where),
            )
        tree = {
            name: (tuple(group.hosts), tuple(group.children)) for name, group in self.groups.items()
        }
        return Inventory(
            source=self.source,
            hosts=hosts,
            groups=members,
            tree=tree,
        )

    def _merge_group_vars(self, order: Iterable[str]) -> tuple[dict[str, Any], dict[str, Where]]:
        """The vars of ``order``'s groups, merged as Ansible's VariableManager does: first every
        group's inventory vars, then every group's ``group_vars/`` files (so a file for a
        shallow group beats the inventory vars of a deeper one), each in ``order``."""
        variables: dict[str, Any] = {}
        where: dict[str, Where] = {}
        for name in order:
            variables.update(self.groups[name].vars)
            where.update(self.groups[name].where)
        for name in order:
            for file_vars, file_where in self.group_files.get(name, ()):
                variables.update(file_vars)
                where.update(file_where)
        return variables, where


def line_of(mapping: Any, key: Any) -> int | None:
    lines = getattr(mapping, "lines", None)
    return lines.get(key) if lines else None


_TYPE_NAMES = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a bool"}


def type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)
