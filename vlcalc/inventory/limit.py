"""Ansible ``--limit`` patterns over a resolved inventory (pure, but for ``@file`` limits).

Patterns are host or group names, globs, ``~regexes``, ``all``, exclusions (``!rack2``),
intersections (``&kvm``) and subscripts (``kvm[0]``, ``kvm[1:3]``), separated by commas or
colons, and ``@file`` names a file with one pattern a line, as in ansible-core's
``InventoryManager.subset``.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Callable

from vlcalc.errors import InventoryError
from vlcalc.inventory.graph import Host, Inventory, is_address, split_port

__all__ = ["MAX_LIMIT_FILE_BYTES", "group_hosts", "match", "select"]

MAX_LIMIT_FILE_BYTES = 1024 * 1024
"""Bytes read from an ``@file`` limit."""

_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
_COLON_SEPARATED = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")


def _split_limit(limit: str) -> list[str]:
    """``"kvm:!node03"`` -> ``["kvm", "!node03"]``.  Commas always separate; colons only when the
    whole string is not a host address such as ``node01:22`` or ``node[1:3]``."""
    if "," in limit:
        parts = limit.split(",")
    elif is_address(split_port(limit)[0]):
        parts = [limit]
    else:
        parts = _COLON_SEPARATED.findall(limit)
    return [part.strip() for part in parts if part.strip()]


def select(
    inventory: Inventory, limit: str | None, warn: Callable[[str], None] | None = None
) -> list[Host]:
    """The hosts an Ansible ``--limit`` of ``limit`` picks, in inventory (file) order; ``None``
    (or an empty limit) selects every host.

    ``select(inv, "kvm:&rack1:!node03.example")``; ``select(inv, "web[0]")`` is the first host
    of ``web`` in Ansible's group order (the group's own hosts, then its children's).  A
    pattern that matches nothing is passed to ``warn`` and ignored, as Ansible does; a limit
    that selects no host raises :class:`InventoryError`, and so does a selected host that
    vlcalc refuses to connect to (:attr:`Host.refusal`), naming it and the way out.
    """
    hosts = match(inventory, limit, warn)
    refused = [host for host in hosts if host.refusal is not None]
    if refused:
        first = refused[0].refusal
        assert first is not None
        more = f" (and {len(refused) - 1} more selected hosts refused)" if len(refused) > 1 else ""
        raise InventoryError(
            f"{first.message}{more}; or leave it out: --limit '!{refused[0].name}'",
            source=first.source or inventory.source,
            line=first.line,
        )
    return hosts


def match(
    inventory: Inventory, limit: str | None, warn: Callable[[str], None] | None = None
) -> list[Host]:
    """The hosts ``limit`` selects, as :func:`select`, refused ones included."""
    patterns: list[str] = []
    for pattern in _split_limit(limit or ""):
        if pattern.startswith("@"):
            patterns.extend(_limit_file(pattern[1:], inventory.source))
        else:
            patterns.append(pattern)
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
        matched = _match_pattern(inventory, pattern, warn)
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


def _limit_file(path: str, source: str) -> list[str]:
    """The patterns of an ``@file`` limit: one a line, as Ansible reads a ``.retry`` file."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_LIMIT_FILE_BYTES + 1)
    except IsADirectoryError:
        raise InventoryError(
            f"--limit @{path}: a limit file must be a file, not a directory", source=source
        ) from None
    except OSError as exc:
        raise InventoryError(
            f"--limit @{path}: cannot read the limit file: {exc.strerror or exc}", source=source
        ) from exc
    if len(data) > MAX_LIMIT_FILE_BYTES:
        raise InventoryError(
            f"--limit @{path}: larger than {MAX_LIMIT_FILE_BYTES // 1024} KiB", source=source
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"--limit @{path}: not UTF-8 text", source=source) from exc
    return [line.strip() for line in text.split("\n") if line.strip()]


def group_hosts(inventory: Inventory, group: str) -> list[str]:
    """The hosts of ``group`` in Ansible's ``Group.get_hosts()`` order: the group's own hosts,
    then those of its children in order, then of deeper descendants level by level (Ansible
    walks those through a set, so its order there varies from run to run; vlcalc keeps the
    order in which each level was reached)."""
    if group not in inventory.tree:
        return list(inventory.groups.get(group, []))
    ordered = [group]
    seen = {group}
    level = [group]
    while level:
        following: list[str] = []
        for name in level:
            for child in inventory.tree[name][1]:
                if child not in seen:
                    seen.add(child)
                    ordered.append(child)
                    following.append(child)
        level = following
    hosts: dict[str, None] = {}
    for name in ordered:
        for host in inventory.tree[name][0]:
            hosts.setdefault(host, None)
    return list(hosts)


def _match_pattern(
    inventory: Inventory, pattern: str, warn: Callable[[str], None] | None
) -> list[str]:
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
        names.extend(group_hosts(inventory, group))
    if not groups or expression[0] == "~" or any(c in expression for c in ".?*["):
        names.extend(h for h in inventory.hosts if regex.match(h))
    if not names and not groups and expression != "all":
        if warn is not None:
            warn(f"--limit pattern {pattern!r} matches no host or group: ignored, as Ansible does")
        return []
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
    # Ansible subscripts the list with duplicates (a host in two matching groups counts twice)
    # and removes them afterwards.
    return list(dict.fromkeys(names))
