"""The probe and scan documents: validating what nodes send, and reading saved files.

A *probe document* (``vlcalc.probe/1``) is what the probe prints for one node; a *scan document*
(``vlcalc.scan/1``) is what ``vlcalc scan --save`` writes for a fleet.  Both are untrusted input:
they are schema-checked (``vlcalc/schemas``) and cross-checked (the VL list must match the bitmap)
before anything is derived from them.

Pure functions here take parsed JSON and return :class:`NodeRecord` values; :func:`read_paths`
is the one thin wrapper that touches files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from vlcalc.errors import DocumentError
from vlcalc.model import PROBE_SCHEMA, SCAN_SCHEMA, Status
from vlcalc.schema import validator
from vlcalc.vl import VLSet

STATUS_OK, STATUS_NO_SVE, STATUS_ERROR = Status.OK, Status.NO_SVE, Status.ERROR


@dataclass(frozen=True)
class NodeRecord:
    """Everything vlcalc knows about one node, whichever document it came from.

    ``vls`` is the node's KVM set (empty: no SVE) or ``None`` when the node could not be probed,
    in which case ``error_kind``/``error_message`` say why.
    """

    name: str
    status: str
    vls: VLSet | None
    error_kind: str | None = None
    error_message: str | None = None
    groups: tuple[str, ...] = ()
    hostname: str | None = None
    kernel: str | None = None
    cpu_model: str | None = None
    source: str | None = None
    probe: dict[str, Any] | None = field(default=None, compare=False, repr=False)


def error_node(
    name: str, kind: str, message: str, *, groups: tuple[str, ...] = (), source: str | None = None
) -> NodeRecord:
    return NodeRecord(name, STATUS_ERROR, None, kind, message, groups=groups, source=source)


def parse_probe(
    doc: Any,
    *,
    source: str,
    field_path: str = "",
    name: str | None = None,
    groups: tuple[str, ...] = (),
) -> NodeRecord:
    """Validate one probe document and turn it into a :class:`NodeRecord`.

    The node is called ``name`` if given (its inventory name), else the document's hostname.
    Raises :class:`DocumentError` naming ``source`` and the bad field.
    """
    error = validator("probe-1")(doc, field_path)
    if error:
        path, _, message = error.partition(": ")
        raise DocumentError(message.strip(), source=source, field=path or None)
    prefix = f"{field_path}." if field_path else ""
    sve, problem = doc["sve"], doc["error"]
    if (sve is None) == (problem is None):
        raise DocumentError(
            "exactly one of sve and error must be null", source=source, field=f"{prefix}sve"
        )
    cpu = doc.get("cpu") or {}
    common = {
        "groups": groups,
        "hostname": doc["hostname"],
        "kernel": doc["kernel"],
        "cpu_model": cpu.get("model"),
        "source": source,
        "probe": doc,
    }
    node_name = name if name is not None else doc["hostname"]
    if not node_name:
        raise DocumentError("the probe document has an empty hostname", source=source)
    if problem is not None:
        return NodeRecord(
            node_name, STATUS_ERROR, None, problem["kind"], problem["message"], **common
        )
    vls = _checked_vls(sve, source, f"{prefix}sve")
    status = STATUS_OK if vls else STATUS_NO_SVE
    return NodeRecord(node_name, status, vls, **common)


def _checked_vls(sve: dict[str, Any], source: str, where: str) -> VLSet:
    try:
        return _vls_from(tuple(sve["vls"]), tuple(sve["words"]))
    except ValueError as exc:
        field = "vls" if "ascending" in str(exc) else "words"
        raise DocumentError(str(exc), source=source, field=f"{where}.{field}") from None


@lru_cache(maxsize=4096)
def _vls_from(listed: tuple[int, ...], words: tuple[str, ...]) -> VLSet:
    """The set, after checking the list against the bitmap; cached, since a fleet repeats a few
    sets many times."""
    if list(listed) != sorted(set(listed)):
        raise ValueError("must be ascending without repeats")
    vls = VLSet.from_vls(listed)
    bitmap = VLSet.from_words(int(word, 16) for word in words)
    if bitmap != vls:
        raise ValueError(f"the bitmap says {bitmap} but vls says {vls}")
    return vls


def parse_scan(doc: Any, *, source: str) -> list[NodeRecord]:
    """Validate a scan document and return its nodes in order, failed nodes included."""
    error = validator("scan-1")(doc, "")
    if error:
        path, _, message = error.partition(": ")
        raise DocumentError(message.strip(), source=source, field=path or None)
    nodes = []
    for index, entry in enumerate(doc["nodes"]):
        groups = tuple(entry.get("groups") or ())
        where = f"nodes[{index}]"
        if entry["outcome"] == "ok":
            if entry["probe"] is None:
                raise DocumentError("outcome ok without a probe", source=source, field=where)
            nodes.append(
                parse_probe(
                    entry["probe"],
                    source=source,
                    field_path=f"{where}.probe",
                    name=entry["name"],
                    groups=groups,
                )
            )
        else:
            if entry["error"] is None:
                raise DocumentError("outcome error without an error", source=source, field=where)
            nodes.append(
                error_node(
                    entry["name"],
                    entry["error"]["kind"],
                    entry["error"]["message"],
                    groups=groups,
                    source=source,
                )
            )
    return nodes


def parse_document(doc: Any, *, source: str, name_hint: str | None = None) -> list[NodeRecord]:
    """A probe or a scan document, told apart by its ``schema`` tag, or a file Ansible wrote
    (``vlcalc.ansible_facts``: a fact-cache file or a registered result, host ``name_hint``)."""
    from vlcalc.ansible_facts import parse_ansible  # it builds on this module

    tag = doc.get("schema") if isinstance(doc, dict) else None
    if tag == PROBE_SCHEMA:
        return [parse_probe(doc, source=source)]
    if tag == SCAN_SCHEMA:
        return parse_scan(doc, source=source)
    ansible_nodes = parse_ansible(doc, source, name_hint)
    if ansible_nodes is not None:
        return ansible_nodes
    raise DocumentError(
        f"not a vlcalc document (schema {tag!r}; expected {PROBE_SCHEMA} or {SCAN_SCHEMA})",
        source=source,
        field="schema",
    )


def check_unique(nodes: Sequence[NodeRecord]) -> None:
    """Two documents that name the same node would silently hide one of them: refuse."""
    seen: dict[str, NodeRecord] = {}
    for node in nodes:
        first = seen.setdefault(node.name, node)
        if first is not node:
            raise DocumentError(
                f"node {node.name!r} appears twice (also in {first.source}); "
                "give each document its own node",
                source=node.source,
            )


# -- files ---------------------------------------------------------------------------------------
def _expand(paths: Iterable[str]) -> list[Path]:
    files = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:  # an Ansible jsonfile fact cache: one file per host, no .json
                found = sorted(p for p in path.iterdir() if p.is_file() and p.name[0] != ".")
            if not found:
                raise DocumentError(
                    "directory holds no *.json documents (nor Ansible fact-cache files)",
                    source=text,
                )
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise DocumentError("no such file or directory", source=text)
    return files


def load_json(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise DocumentError("not UTF-8 text", source=str(path)) from None
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", source=str(path)
        ) from None


def read_paths(paths: Iterable[str]) -> list[NodeRecord]:
    """Every node in the given files and directories (a directory: each ``*.json`` in it, or
    each file of an Ansible fact cache)."""
    from vlcalc.ansible_facts import host_name_hint

    nodes: list[NodeRecord] = []
    for path in _expand(paths):
        hint = host_name_hint(path.name)
        nodes.extend(parse_document(load_json(path), source=str(path), name_hint=hint))
    check_unique(nodes)
    return nodes
