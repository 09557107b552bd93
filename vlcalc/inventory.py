"""Ansible-compatible YAML inventory -> hosts with connection settings.

The inventory is the file operators already pass to ``ansible-playbook -i``.  This module reads it
the way ansible-core's ``yaml`` inventory plugin does and resolves, for every host, its groups, its
merged variables and a :class:`vlcalc.transport.base.Target`::

    all:
      vars: {ansible_user: ops}
      children:
        rack1:
          hosts:
            node[01:04].example:
    >>> inv = parse_inventory(text, "fleet.yaml")
    >>> inv.hosts["node01.example"].target
    Target(name='node01.example', host='node01.example', port=None, user='ops', ...)

Only :func:`load_inventory` touches the file system; everything else is pure.  Every problem is an
:class:`vlcalc.errors.InventoryError` that names the file and, when known, the line.

Where Ansible only *warns* about something that would make vlcalc scan the wrong set of hosts or
connect to the wrong place (a group written as a list, an unknown key such as ``host:`` inside a
group, a name used for both a host and a group, a numeric range that expands to nothing, a limit
pattern that matches nothing), vlcalc refuses with an error instead.  A duplicate mapping key is
the exception: Ansible warns and keeps the last value, and so does vlcalc (through the ``warn``
callback), so that both act on the same hosts and variables.

Input is untrusted and capped (``MAX_*`` below, README "Limits and bad input"): file size, YAML
nodes, aliases, nesting, integer digits, hosts per range and per inventory.  Each cap is checked
before the thing it limits is built, so a hostile file costs little time and memory.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import itertools
import math
import os
import re
import stat
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from yaml.composer import Composer

from vlcalc.errors import InventoryError
from vlcalc.transport.base import Target

try:
    from yaml import CSafeLoader as _SafeLoaderBase
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoaderBase  # type: ignore[assignment]

__all__ = [
    "MAX_GROUPS",
    "MAX_GROUP_DEPTH",
    "MAX_HOSTS",
    "MAX_HOSTS_PER_RANGE",
    "MAX_HOST_ENTRIES",
    "MAX_INTEGER_DIGITS",
    "MAX_INVENTORY_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_EXPANDED_NODES",
    "MAX_YAML_NODES",
    "Host",
    "Inventory",
    "load_inventory",
    "parse_inventory",
    "select",
]

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
    variables as ``ansible-inventory --list`` shows them in ``_meta.hostvars``.
    Example: ``Host(name="node01", groups=("kvm", "rack1"), vars={"ansible_user": "ops"},
    target=Target(name="node01", host="node01", user="ops"))``.
    """

    name: str
    groups: tuple[str, ...]
    vars: dict[str, Any]
    target: Target


@dataclass(frozen=True)
class Inventory:
    """A resolved inventory.

    ``hosts`` is in order of first appearance in the file.  ``groups`` maps every group, including
    ``all`` and ``ungrouped``, to the names of all hosts in it or in its descendants, in the same
    order as ``hosts``.
    """

    source: str
    hosts: dict[str, Host]
    groups: dict[str, list[str]]


# --------------------------------------------------------------------------------------------
# YAML: safe loading, with the line of every mapping key


class _Mapping(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the 1-based line of each of its keys."""

    lines: dict[Any, int]


class _Unsafe(str):
    """A ``!unsafe`` string: Ansible never templates it, so neither do we complain about it."""


@dataclass(frozen=True)
class _Vaulted:
    """A ``!vault`` value; vlcalc has no vault password, so it cannot be used."""

    line: int


class _LineLoader(_SafeLoaderBase, Composer):
    """``yaml.SafeLoader`` (libyaml when available) whose mappings record key lines, with caps.

    The nodes are composed by PyYAML's Python composer (libyaml still scans and parses) so that
    every node is counted and its depth known *before* it is built: libyaml's C composer recurses
    once per level and overflows the C stack (a segmentation fault) on 100,000 nested brackets.
    The price: 11.2 -> 13.7 s of CPU and 490 -> 513 MB to load a 100,000-host inventory
    (measured on a busy machine).
    """

    anchors: dict[str, yaml.Node]  # set by Composer

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        Composer.__init__(self)
        self.depth = 0
        self.nodes = 0
        self.expanded = 0
        self.anchor_sizes: dict[str, int] = {}
        self.duplicates: list[tuple[Any, int, int]] = []  # key, line, first line

    def _refuse(self, message: str, event: Any) -> yaml.MarkedYAMLError:
        return yaml.composer.ComposerError(None, None, message, event.start_mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            size = self.anchor_sizes.get(event.anchor or "")
            if size is None and event.anchor in self.anchors:
                raise self._refuse(f"alias *{event.anchor} is inside its own anchor", event)
            self.expanded += size or 0
            if self.expanded > MAX_YAML_EXPANDED_NODES:
                raise self._refuse(
                    f"aliases expand to more than {MAX_YAML_EXPANDED_NODES:,} nodes "
                    f"(at *{event.anchor})",
                    event,
                )
            return Composer.compose_node(self, parent, index)
        self.nodes += 1
        self.expanded += 1
        if self.nodes > MAX_YAML_NODES:
            raise self._refuse(
                f"more than {MAX_YAML_NODES:,} YAML nodes (scalars, lists, mappings)", event
            )
        if self.expanded > MAX_YAML_EXPANDED_NODES:
            raise self._refuse(
                f"aliases expand to more than {MAX_YAML_EXPANDED_NODES:,} nodes", event
            )
        if self.depth >= MAX_YAML_DEPTH:
            raise self._refuse(f"nested deeper than {MAX_YAML_DEPTH} levels", event)
        before = self.expanded - 1
        self.depth += 1
        node = Composer.compose_node(self, parent, index)
        self.depth -= 1
        if event.anchor is not None:
            self.anchor_sizes[event.anchor] = self.expanded - before
        return node

    # libyaml's CParser defines these in C, composing recursively: use PyYAML's Python ones.
    get_single_node = Composer.get_single_node
    compose_document = Composer.compose_document
    get_node = Composer.get_node
    check_node = Composer.check_node


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    # Keys written in this mapping, as opposed to those "<<" merges in: only a key written twice
    # here is a duplicate; a written key that overrides a merged one is what "<<" is for.
    own = {id(key_node) for key_node, _ in node.value if key_node.tag != _MERGE_TAG}
    loader.flatten_mapping(node)  # resolves "<<" merge keys
    data = _Mapping()
    lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark
            ) from exc
        line = key_node.start_mark.line + 1
        if id(key_node) in own:
            if key in lines and lines[key] > 0:
                loader.duplicates.append((key, line, lines[key]))
            lines[key] = line
        else:
            lines[key] = -line  # merged: not a duplicate of anything written later
        data[key] = loader.construct_object(value_node, deep=True)
    data.lines = {key: abs(line) for key, line in lines.items()}
    return data


def _construct_int(loader: _LineLoader, node: yaml.ScalarNode) -> int:
    if len(node.value) > MAX_INTEGER_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer longer than {MAX_INTEGER_DIGITS:,} digits", node.start_mark
        )
    return loader.construct_yaml_int(node)


def _construct_unsafe(loader: _LineLoader, node: yaml.Node) -> _Unsafe:
    return _Unsafe(loader.construct_scalar(node))  # type: ignore[arg-type]


def _construct_vault(loader: _LineLoader, node: yaml.Node) -> _Vaulted:
    return _Vaulted(node.start_mark.line + 1)


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_LineLoader.add_constructor("!unsafe", _construct_unsafe)
_LineLoader.add_constructor("!vault", _construct_vault)


def _load_yaml(text: str, source: str) -> tuple[Any, list[str]]:
    """The YAML document in ``text`` and one warning per duplicate key (Ansible's default
    ``DUPLICATE_YAML_DICT_KEY=warn``: the last value wins)."""
    loader = _LineLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        where = [f"column {mark.column + 1}"] if mark else []
        if exc.context and exc.context_mark and exc.problem_mark:
            where.append(f"{exc.context} at line {exc.context_mark.line + 1}")
        detail = f" ({'; '.join(where)})" if where else ""
        raise InventoryError(
            f"invalid YAML: {problem}{detail}", source=source, line=mark.line + 1 if mark else None
        ) from exc
    except yaml.YAMLError as exc:
        raise InventoryError(f"invalid YAML: {_one_line(str(exc))}", source=source) from exc
    finally:
        loader.dispose()
    warnings = [
        f"{source}:{line}: duplicate key {key!r} (first at line {first}): "
        "using the last value, as Ansible does"
        for key, line, first in loader.duplicates
    ]
    return data, warnings


def _one_line(text: str) -> str:
    return " ".join(text.split())


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


def _is_address(address: str) -> bool:
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


def _split_port(pattern: str) -> tuple[str, int | None]:
    """``"node01:2222"`` -> ``("node01", 2222)``.  Like Ansible, a string that is not a valid
    address once the port is taken off is used whole, as the name, with no port."""
    address, port = pattern, None
    for regex in (_BRACKETED_HOSTPORT, _HOSTPORT):
        match = regex.match(address)
        if match:
            address, port = match.group(1), int(match.group(2))
    if not _is_address(address):
        return pattern, None
    return address, port


_MAX_BOUND_DIGITS = 20


def _expand_ranges(pattern: str, fail: Callable[[str], InventoryError]) -> list[str]:
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
    __slots__ = ("children", "hosts", "line", "name", "parents", "priority", "var_lines", "vars")

    def __init__(self, name: str, line: int | None) -> None:
        self.name = name
        self.line = line
        self.vars: dict[str, Any] = {}
        self.var_lines: dict[str, int | None] = {}
        self.priority = 1
        self.children: dict[str, None] = {}  # ordered, with O(1) membership
        self.parents: list[str] = []
        self.hosts: list[str] = []


class _HostEntry:
    __slots__ = ("groups", "line", "name", "var_lines", "vars")

    def __init__(self, name: str, line: int | None) -> None:
        self.name = name
        self.line = line
        self.vars: dict[str, Any] = {}
        self.var_lines: dict[str, int | None] = {}
        self.groups: list[str] = []  # direct memberships, in the order they were written


_SECTIONS = ("vars", "children", "hosts")


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.groups: dict[str, _Group] = {}
        self.hosts: dict[str, _HostEntry] = {}
        self.member_sets: dict[str, set[str]] = {}
        self.entries = 0  # host names listed under groups, ranges expanded
        self.edges: dict[tuple[str, str], int | None] = {}  # (parent, child) -> line, in order
        self._add_group("all", None)
        self._add_group("ungrouped", None)
        self._add_child("all", "ungrouped", None)

    def error(self, message: str, line: int | None) -> InventoryError:
        return InventoryError(message, source=self.source, line=line)

    def _add_group(self, name: str, line: int | None) -> _Group:
        group = self.groups.get(name)
        if group is None:
            if len(self.groups) >= MAX_GROUPS + 2:  # "all" and "ungrouped" are free
                raise self.error(f"more than {MAX_GROUPS:,} groups (at {name!r})", line)
            group = self.groups[name] = _Group(name, line)
            self.member_sets[name] = set()
        return group

    def _add_child(self, parent: str, child: str, line: int | None) -> None:
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

    def _add_host(self, name: str, group: str, port: int | None, line: int | None) -> _HostEntry:
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
                host.var_lines["ansible_port"] = line
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
                f"the top level must be a mapping of group names, not {_type_name(data)}", 1
            )
        if data.get("plugin"):
            raise self.error(
                "this is an inventory plugin configuration ('plugin:'), not a YAML inventory",
                _line_of(data, "plugin"),
            )
        for name, group_data in data.items():
            self._parse_group(name, group_data, _line_of(data, name))

    def _parse_group(self, name: Any, data: Any, line: int | None) -> str:
        if not isinstance(name, str) or not name:
            raise self.error(f"group name {name!r} must be a non-empty string", line)
        if data is not None and not isinstance(data, dict):
            raise self.error(
                f"group {name!r} must be a mapping with vars/children/hosts, "
                f"not {_type_name(data)}",
                line,
            )
        self._add_group(name, line)
        if data is None:
            return name
        for key, value in data.items():
            key_line = _line_of(data, key)
            if key not in _SECTIONS:
                raise self.error(
                    f"unexpected key {key!r} in group {name!r}: only vars, children and hosts "
                    "are allowed",
                    key_line,
                )
            if isinstance(value, str):  # Ansible accepts "hosts: node01" for one entry
                value = _Mapping({value: None})
                value.lines = {next(iter(value)): key_line or 0}
            if value is None:
                continue
            if not isinstance(value, dict):
                raise self.error(
                    f"{key!r} of group {name!r} must be a mapping, not {_type_name(value)} "
                    f"(write 'name:' entries, not '- name')",
                    key_line,
                )
            if key == "vars":
                self._set_group_vars(self.groups[name], value)
            elif key == "children":
                for child, child_data in value.items():
                    child_line = _line_of(value, child)
                    child_name = self._parse_group(child, child_data, child_line)
                    self._add_child(name, child_name, child_line)
            else:
                for pattern, host_vars in value.items():
                    self._parse_host(name, pattern, host_vars, _line_of(value, pattern))
        return name

    def _set_group_vars(self, group: _Group, variables: dict[Any, Any]) -> None:
        for key, value in variables.items():
            line = _line_of(variables, key)
            if key == "ansible_group_priority":
                group.priority = self._priority(group.name, value, line)
                continue
            group.vars[str(key)] = value
            group.var_lines[str(key)] = line

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
                f"(or nothing), not {_type_name(variables)}",
                line,
            )
        address, port = _split_port(pattern)
        names = _expand_ranges(address, lambda message: self.error(message, line))
        self.entries += len(names)
        if self.entries > MAX_HOST_ENTRIES:
            raise self.error(
                f"more than {MAX_HOST_ENTRIES:,} host entries under groups (at {pattern!r}); "
                "is a large range repeated under many groups?",
                line,
            )
        for host_name in names:
            host = self._add_host(host_name, group, port, line)
            for key, value in variables.items():
                host.vars[str(key)] = value
                host.var_lines[str(key)] = _line_of(variables, key)

    # -- after parsing: what InventoryData.reconcile_inventory and the vars manager do --

    def resolve(self) -> Inventory:
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
                self._add_child("all", group.name, group.line)

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
        merged_cache: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, int | None]]] = {}
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
            group_vars, group_lines = merged_cache[order]
            variables = {**group_vars, **host.vars}
            lines = {**group_lines, **host.var_lines}
            hosts[host.name] = Host(
                name=host.name,
                groups=tuple(sorted(all_groups - {"all"})),
                vars=variables,
                target=_target(host.name, variables, lines, self.source),
            )
        return Inventory(source=self.source, hosts=hosts, groups=members)

    def _merge_group_vars(
        self, order: Iterable[str]
    ) -> tuple[dict[str, Any], dict[str, int | None]]:
        variables: dict[str, Any] = {}
        lines: dict[str, int | None] = {}
        for name in order:
            variables.update(self.groups[name].vars)
            lines.update(self.groups[name].var_lines)
        return variables, lines


def _line_of(mapping: Any, key: Any) -> int | None:
    lines = getattr(mapping, "lines", None)
    return lines.get(key) if lines else None


_TYPE_NAMES = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a bool"}


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------------------------
# Connection variables -> Target

_CONNECTIONS = {
    "ssh": "ssh",
    "paramiko": "ssh",
    "paramiko_ssh": "ssh",
    "smart": "ssh",
    "ansible.builtin.ssh": "ssh",
    "ansible.builtin.paramiko_ssh": "ssh",
    "local": "local",
    "ansible.builtin.local": "local",
}
_AUTO_INTERPRETERS = ("auto", "auto_silent", "auto_legacy", "auto_legacy_silent")
_TRUE = frozenset(("y", "yes", "on", "1", "true", "t"))
_FALSE = frozenset(("n", "no", "off", "0", "false", "f"))
_TEMPLATE_MARKERS = ("{{", "{%", "{#")


class _Vars:
    """Reads the connection variables of one host and reports problems with their lines."""

    def __init__(
        self, host: str, variables: dict[str, Any], lines: dict[str, int | None], source: str
    ) -> None:
        self.host = host
        self.variables = variables
        self.lines = lines
        self.source = source

    def error(self, name: str, message: str) -> InventoryError:
        return InventoryError(
            f"host {self.host!r}: {name} {message}", source=self.source, line=self.lines.get(name)
        )

    def pick(self, *names: str) -> tuple[str, Any]:
        """The variable that ansible-core's connection plugins use: the *last* of ``names`` that
        is set and not null (``ansible_ssh_host`` beats ``ansible_host`` wherever each is set)."""
        chosen: tuple[str, Any] = (names[0], None)
        for name in names:
            value = self.variables.get(name)
            if value is not None:
                chosen = (name, value)
        name, value = chosen
        if isinstance(value, _Vaulted):
            raise self.error(name, "is vault-encrypted; vault values are not supported")
        if (
            isinstance(value, str)
            and not isinstance(value, _Unsafe)
            and any(marker in value for marker in _TEMPLATE_MARKERS)
        ):
            raise self.error(
                name,
                f"is templated ({value!r}): templated values are not supported, "
                "write the literal value",
            )
        return chosen

    def text(self, *names: str) -> str | None:
        name, value = self.pick(*names)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(name, f"must be a string, not {value!r}")
        return str(value)

    def port(self) -> int | None:
        name, value = self.pick("ansible_port", "ansible_ssh_port")
        if value is None:
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.error(name, f"is not a valid TCP port (1-65535): {value!r}")
        return value

    def boolean(self, name: str) -> bool:
        _, value = self.pick(name)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        normalized = value.strip().lower() if isinstance(value, str) else value
        if normalized in _TRUE or normalized in (1, 1.0):
            return True
        if normalized in _FALSE or normalized in (0, 0.0):
            return False
        raise self.error(name, f"must be a boolean (true/false, yes/no, 1/0), not {value!r}")


def _target(
    host: str, variables: dict[str, Any], lines: dict[str, int | None], source: str
) -> Target:
    read = _Vars(host, variables, lines, source)
    connection_name, connection = read.pick("ansible_connection")
    if connection is None:
        transport = "ssh"
    elif isinstance(connection, str) and connection in _CONNECTIONS:
        transport = _CONNECTIONS[connection]
    else:
        raise read.error(
            connection_name, f"is {connection!r}; vlcalc supports ssh, paramiko, smart and local"
        )
    python = read.text("ansible_python_interpreter") or "python3"
    if python in _AUTO_INTERPRETERS:
        python = "python3"
    return Target(
        name=host,
        host=read.text("ansible_host", "ansible_ssh_host") or host,
        port=read.port(),
        user=read.text("ansible_user", "ansible_ssh_user"),
        key_file=read.text("ansible_private_key_file", "ansible_ssh_private_key_file"),
        connection=transport,
        python=python,
        become=read.boolean("ansible_become"),
        become_user=read.text("ansible_become_user"),
    )


# --------------------------------------------------------------------------------------------
# Public entry points


def parse_inventory(text: str, source: str, warn: Callable[[str], None] | None = None) -> Inventory:
    """Resolve the Ansible YAML inventory in ``text``; ``source`` names it in errors.

    Input beyond the caps above (size, YAML nodes, depth, aliases, hosts) is refused with an
    :class:`InventoryError` before it is built.  Duplicate keys are accepted as Ansible accepts
    them, the last value winning, and each is passed to ``warn`` as one line (before anything
    else in the inventory can be refused, since a duplicate is often the cause).
    Example: ``parse_inventory("kvm:\\n  hosts:\\n    node01:\\n", "inv.yaml").groups["kvm"]``
    is ``["node01"]``; with ``"a:\\n  hosts: {n1: }\\n  hosts: {n2: }\\n"``, ``warn`` gets
    ``"inv.yaml:3: duplicate key 'hosts' (first at line 2): using the last value, as Ansible
    does"``.
    """
    if len(text) > MAX_INVENTORY_BYTES:
        raise InventoryError(_too_large(), source=source)
    data, warnings = _load_yaml(text, source)
    if warn is not None:
        for warning in warnings:
            warn(warning)
    builder = _Builder(source)
    builder.parse_document(data)
    return builder.resolve()


def _too_large() -> str:
    return f"larger than {MAX_INVENTORY_BYTES // (1024 * 1024)} MiB, refused unread"


def load_inventory(path: str | Path, warn: Callable[[str], None] | None = None) -> Inventory:
    """Read and resolve the inventory file at ``path`` (UTF-8); ``warn`` as in
    :func:`parse_inventory`.

    Only a regular file is read (a FIFO would block, ``/dev/zero`` never ends), and at most
    :data:`MAX_INVENTORY_BYTES` of it.  Example: ``load_inventory("/dev/zero")`` raises
    ``InventoryError("/dev/zero: not a regular file (a character device)")``.
    """
    source = str(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one;
        # the fstat below then refuses it.  The file checked is the file opened.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise InventoryError("inventory file not found", source=source) from exc
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InventoryError("is a directory, not an inventory file", source=source)
        if not stat.S_ISREG(mode):
            raise InventoryError(f"not a regular file ({_file_kind(mode)})", source=source)
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_INVENTORY_BYTES + 1)
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    finally:
        os.close(fd)
    if len(data) > MAX_INVENTORY_BYTES:
        raise InventoryError(_too_large(), source=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"not UTF-8 text: {exc.reason}", source=source) from exc
    return parse_inventory(text, source, warn)


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


# --------------------------------------------------------------------------------------------
# --limit patterns

_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
_COLON_SEPARATED = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")


def _split_limit(limit: str) -> list[str]:
    """``"kvm:!node03"`` -> ``["kvm", "!node03"]``.  Commas always separate; colons only when the
    whole string is not a host address such as ``node01:22`` or ``node[1:3]``."""
    if "," in limit:
        parts = limit.split(",")
    elif _is_address(_split_port(limit)[0]):
        parts = [limit]
    else:
        parts = _COLON_SEPARATED.findall(limit)
    return [part.strip() for part in parts if part.strip()]


def select(inventory: Inventory, limit: str | None) -> list[Host]:
    """The hosts an Ansible ``--limit`` of ``limit`` picks, in inventory (file) order; ``None``
    (or an empty limit) selects every host.

    Patterns are host or group names, globs (``node0*``), regexes (``~node0[1-3]``), ``all``,
    exclusions (``!rack2``), intersections (``&kvm``) and subscripts (``kvm[0:2]``), separated by
    commas or colons: ``select(inv, "kvm:&rack1:!node03.example")``.  A pattern that matches no
    host or group, or a limit that selects no host, raises :class:`InventoryError`.
    """
    patterns = _split_limit(limit or "")
    for pattern in patterns:
        if pattern.startswith("@"):
            raise InventoryError(
                f"--limit {pattern!r}: limit files are not supported, list the hosts instead "
                "(--limit 'node01,node02')",
                source=inventory.source,
            )
    regular = [p for p in patterns if p[0] not in "!&"]
    ordered = (
        (regular or ["all"])
        + [p for p in patterns if p[0] == "&"]
        + [p for p in patterns if p[0] == "!"]
    )
    chosen: list[str] = []
    for pattern in ordered:
        if pattern in inventory.hosts:
            if pattern not in chosen:
                chosen.append(pattern)
            continue
        matched = _match_pattern(inventory, pattern)
        if pattern[0] == "!":
            drop = set(matched)
            chosen = [h for h in chosen if h not in drop]
        elif pattern[0] == "&":
            keep = set(matched)
            chosen = [h for h in chosen if h in keep]
        else:
            seen = set(chosen)
            chosen.extend(h for h in matched if h not in seen)
    if not chosen:
        raise InventoryError(f"--limit {limit!r} selects no hosts", source=inventory.source)
    # Ansible runs a play's hosts in the order of its "all" group, filtered by --limit; that
    # order walks child groups through Python sets, so vlcalc uses the file order instead.
    keep = set(chosen)
    return [host for name, host in inventory.hosts.items() if name in keep]


def _match_pattern(inventory: Inventory, pattern: str) -> list[str]:
    """Host names for one pattern without its ``!``/``&``, as Ansible's ``_match_one_pattern``."""
    expression = pattern[1:] if pattern[0] in "!&" else pattern
    subscript: tuple[int, int | None] | None = None
    if expression[0] != "~":
        match = _SUBSCRIPT.match(expression)
        if match:
            expression, index, start, _, end = match.groups()
            subscript = (int(index), None) if index else (int(start), int(end) if end else -1)
    try:
        source = expression[1:] if expression[0] == "~" else fnmatch.translate(expression)
        regex = re.compile(source)
    except re.error as exc:
        raise InventoryError(
            f"--limit pattern {pattern!r} is not a valid regular expression: {exc}",
            source=inventory.source,
        ) from exc

    names: list[str] = []
    groups = [g for g in inventory.groups if regex.match(g)]
    for group in groups:
        names.extend(inventory.groups[group])
    if not groups or expression[0] == "~" or any(c in expression for c in ".?*["):
        names.extend(h for h in inventory.hosts if regex.match(h))
    names = list(dict.fromkeys(names))
    if not names and not groups:
        raise InventoryError(
            f"--limit pattern {pattern!r} matches no host or group", source=inventory.source
        )
    if subscript and names:
        first, last = subscript
        try:
            if last:
                names = names[first : (len(names) - 1 if last == -1 else last) + 1]
            else:
                names = [names[first]]
        except IndexError:
            raise InventoryError(
                f"--limit pattern {pattern!r}: subscript out of range ({len(names)} hosts)",
                source=inventory.source,
            ) from None
    return names
