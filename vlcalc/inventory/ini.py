"""Ansible INI inventories (``hosts``, ``inventory.ini``), read as ansible-core's ``ini`` plugin::

    [kvm]
    node[01:04].example ansible_user=ops ansible_port=2222

    [kvm:vars]
    ansible_become=true

    [dc1:children]
    kvm

Sections ``[group]``, ``[group:vars]`` and ``[group:children]``; host lines are split like a
shell line (``#`` starts a comment) into a host pattern (ranges, ``:port``) and ``key=value``
variables; every value (inline or in ``:vars``) is typed by Python's ``ast.literal_eval`` as
Ansible does (``22`` is a number, ``True`` a bool, ``yes`` and ``'22'`` strings).  Pure: the
text comes in, the :class:`~vlcalc.inventory.graph.Builder` is filled.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from typing import Any

from vlcalc.errors import InventoryError
from vlcalc.inventory.graph import Builder, LineMapping

__all__ = ["MAX_INI_LINE_CHARS", "parse_ini"]

MAX_INI_LINE_CHARS = 64 * 1024
"""Characters in one INI line: ``literal_eval`` of a longer one costs too much to be worth it."""

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


def parse_value(text: str) -> Any:
    """An INI value as Ansible types it: ``"22"`` -> ``22``, ``"[1, 2]"`` -> ``[1, 2]``,
    ``"yes"`` -> ``"yes"``, ``"'22'"`` -> ``"22"``; tuples and sets become lists, bytes and
    complex numbers strings."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        # Ansible catches ValueError and SyntaxError; the other two need hostile input, which
        # the line cap already keeps out.
        return text
    except TypeError as exc:  # "{{ 1 }}" is a set in a set: Ansible's parser fails on it too
        raise ValueError(f"value {text!r} cannot be read ({exc}): quote it") from exc
    return _coerce(value)


def _coerce(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        return [_coerce(item) for item in value]
    if isinstance(value, dict):
        return {_coerce(key): _coerce(item) for key, item in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def parse_ini(text: str, builder: Builder) -> None:
    """Add the INI inventory ``text`` to ``builder`` (whose ``source`` names it in errors).

    Example: ``parse_ini("[kvm]\\nn1 ansible_port=2222\\n", builder)`` adds host ``n1`` to
    group ``kvm`` with ``ansible_port`` 2222.  Errors are :class:`InventoryError` with the line.
    """
    group, state = "ungrouped", "hosts"
    # Groups named in [x:children] or [x:vars] before any [x] section: Ansible requires each to
    # be defined by the end of the file.  name -> (line, state, parents)
    pending: dict[str, tuple[int, str, list[str]]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if len(line) > MAX_INI_LINE_CHARS:
            raise builder.error(f"a line longer than {MAX_INI_LINE_CHARS:,} characters", number)
        section = _SECTION.match(line)
        if section:
            group, state = section.group(1), section.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise builder.error(
                    f"section [{group}:{state}] has an unknown type: use hosts, children or vars",
                    number,
                )
            if group not in builder.groups:
                if state == "vars" and group not in pending:
                    pending[group] = (number, state, [])
                builder.add_group(group, number)
            if group in pending and state != "vars":
                if pending[group][1] == "children":
                    _add_pending_children(builder, group, pending)
                elif pending[group][1] == "vars":
                    del pending[group]
            continue
        if line.startswith("[") and line.endswith("]"):
            raise builder.error(
                f"invalid section {line!r}: no spaces or other characters are allowed in it",
                number,
            )
        if state == "hosts":
            _host_line(builder, group, line, number)
        elif state == "vars":
            if "=" not in line:
                raise builder.error(f"expected key=value in [{group}:vars], got {line!r}", number)
            key, value = (part.strip() for part in line.split("=", 1))
            variables = LineMapping({key: _value(builder, value, number)})
            variables.lines = {key: number}
            builder.set_group_vars(builder.groups[group], variables)
        else:
            match = _GROUP_NAME.match(line)
            if not match:
                raise builder.error(
                    f"expected a group name in [{group}:children], got {line!r}", number
                )
            child = match.group(1)
            if child not in builder.groups:
                if child in pending:
                    pending[child][2].append(group)
                else:
                    pending[child] = (number, "children", [group])
            else:
                builder.add_child(group, child, number)
    for name, (number, state, parents) in pending.items():
        if state == "vars":
            raise builder.error(
                f"section [{name}:vars] is for group {name!r}, which is not defined", number
            )
        raise builder.error(
            f"section [{parents[-1]}:children] names group {name!r}, which is not defined", number
        )


def _value(builder: Builder, text: str, number: int) -> Any:
    try:
        return parse_value(text)
    except ValueError as exc:
        raise builder.error(str(exc), number) from exc


def _add_pending_children(
    builder: Builder, group: str, pending: dict[str, tuple[int, str, list[str]]]
) -> None:
    line, _, parents = pending.pop(group)
    for parent in parents:
        builder.add_child(parent, group, line)
        if parent in pending and pending[parent][1] == "children":
            _add_pending_children(builder, parent, pending)


def _host_line(builder: Builder, group: str, line: str, number: int) -> None:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise InventoryError(
            f"cannot split host line {line!r}: {exc}", source=builder.source, line=number
        ) from exc
    if not tokens:
        return
    pattern = tokens[0]
    variables = LineMapping()
    variables.lines = {}
    for token in tokens[1:]:
        if "=" not in token:
            raise builder.error(f"expected key=value after host {pattern!r}, got {token!r}", number)
        key, value = token.split("=", 1)
        variables[key] = _value(builder, value, number)
        variables.lines[key] = number
    if pattern.endswith(":"):
        raise builder.error(
            f"host {pattern!r} ends in ':' (written for a port); is this a YAML file?", number
        )
    if pattern == "---":
        raise builder.error(
            "host '---' is the start of a YAML document; is this a YAML file?", number
        )
    for host in builder.add_pattern(group, pattern, number):
        builder.set_host_vars(host, variables)
