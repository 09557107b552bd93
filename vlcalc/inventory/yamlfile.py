"""Safe YAML loading for inventories and vars files: key lines, ``!unsafe``/``!vault``, caps.

Input is untrusted and capped (``MAX_YAML_*`` in :mod:`vlcalc.inventory.graph`): nodes, aliases,
nesting and integer digits are counted before they are built.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer

from vlcalc.errors import InventoryError
from vlcalc.inventory import graph
from vlcalc.inventory.graph import (
    MAX_INTEGER_DIGITS,
    MAX_YAML_DEPTH,
    MAX_YAML_EXPANDED_NODES,
    LineMapping,
    Unsafe,
    Vaulted,
)

try:
    from yaml import CSafeLoader as _SafeLoaderBase
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoaderBase  # type: ignore[assignment]


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
        if self.nodes > graph.MAX_YAML_NODES:
            raise self._refuse(
                f"more than {graph.MAX_YAML_NODES:,} YAML nodes (scalars, lists, mappings)", event
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


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineMapping:
    # Keys written in this mapping, as opposed to those "<<" merges in: only a key written twice
    # here is a duplicate; a written key that overrides a merged one is what "<<" is for.
    own = {id(key_node) for key_node, _ in node.value if key_node.tag != _MERGE_TAG}
    loader.flatten_mapping(node)  # resolves "<<" merge keys
    data = LineMapping()
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


def _construct_unsafe(loader: _LineLoader, node: yaml.Node) -> Unsafe:
    return Unsafe(loader.construct_scalar(node))  # type: ignore[arg-type]


def _construct_vault(loader: _LineLoader, node: yaml.Node) -> Vaulted:
    return Vaulted(node.start_mark.line + 1)


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_LineLoader.add_constructor("!unsafe", _construct_unsafe)
_LineLoader.add_constructor("!vault", _construct_vault)


def load_yaml(text: str, source: str) -> tuple[Any, list[str]]:
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
        raise InventoryError(f"invalid YAML: {one_line(str(exc))}", source=source) from exc
    finally:
        loader.dispose()
    warnings = [
        f"{source}:{line}: duplicate key {key!r} (first at line {first}): "
        "using the last value, as Ansible does"
        for key, line, first in loader.duplicates
    ]
    return data, warnings


def one_line(text: str) -> str:
    return " ".join(text.split())
