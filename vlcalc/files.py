"""Reading saved documents from files and directories: the one module of the readers that does I/O.

``vlcalc report``, ``check``, ``plan`` and ``diff`` take files and directories of probe documents,
scan documents and what Ansible leaves (``vlcalc.ansible_facts``).  Every file is untrusted input
with hard caps, each refused with one :class:`DocumentError` line (exit 2):

* only regular files are read (a FIFO would block forever, ``/dev/zero`` never ends), opened
  without blocking and checked on the open descriptor;
* at most :data:`~vlcalc.documents.MAX_DOCUMENT_BYTES` bytes per file;
* JSON only as ``vlcalc.documents.decode`` accepts it (no NaN, no duplicate keys, bounded
  nesting and integers).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlcalc.ansible_facts import host_name_hint, parse_ansible
from vlcalc.documents import (
    MAX_DOCUMENT_BYTES,
    Document,
    NodeRecord,
    check_unique,
    decode,
    not_a_document,
    parse_document,
    scan_records,
    schema_tag,
)
from vlcalc.errors import DocumentError
from vlcalc.model import PROBE_SCHEMA, SCAN_SCHEMA, file_kind


def expand(paths: Iterable[str]) -> list[Path]:
    """The files named, a directory standing for each ``*.json`` in it (or, when it has none,
    each file of an Ansible fact cache), sorted by name."""
    files = []
    for text in paths:
        if not text:  # Path("") is ".": an unset shell variable must not read this directory
            raise DocumentError(
                "an empty path: name a file or directory ('.' for this one)", source="''"
            )
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
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            raise DocumentError("no such file or directory", source=text)
    return files


def read_capped(path: Path, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of regular file ``path``, refusing anything else and anything over ``limit``."""
    source = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DocumentError(f"cannot read: {exc.strerror}", source=source) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DocumentError(
                f"not a regular file ({file_kind(info.st_mode)}); save the document to a file",
                source=source,
            )
        if info.st_size > limit:
            raise DocumentError(_too_big(info.st_size, limit), source=source)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise DocumentError(f"cannot read: {exc.strerror}", source=source) from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise DocumentError(_too_big(len(data), limit), source=source)
    return data


def _too_big(size: int, limit: int) -> str:
    return f"{size} bytes is more than vlcalc reads from one document ({limit} bytes)"


def parse_bytes(data: bytes, *, source: str, name_hint: str | None = None) -> list[NodeRecord]:
    """The nodes of one file's bytes: a probe or scan document, validated straight into the typed
    model, or, when it is neither, a file Ansible wrote about host ``name_hint``."""
    if SCAN_SCHEMA.encode() in data[:4096]:
        nodes = scan_records(data, source=source)
        if nodes is not None:
            return nodes
    document = _typed(data, source)
    if document is not None:
        return parse_document(document, source=source)
    parsed: Any = decode(data, Any, source=source)
    ansible = parse_ansible(parsed, source, name_hint)
    if ansible is not None:
        return ansible
    tag = schema_tag(parsed)
    if tag in (PROBE_SCHEMA, SCAN_SCHEMA):  # then _typed raised already; for the type checker
        return parse_document(parsed, source=source)
    raise not_a_document(tag, source)


def _typed(data: bytes, source: str) -> Document | None:
    """The document, if ``data`` says it is a probe or scan document (its errors then stand),
    else ``None``.  The tag is peeked at cheaply, so the common case decodes once."""
    head = data[:4096]
    if PROBE_SCHEMA.encode() not in head and SCAN_SCHEMA.encode() not in head:
        return None
    try:
        document: Document = decode(data, Document, source=source)  # type: ignore[arg-type]
    except DocumentError as exc:
        if exc.field == "schema" or (exc.field is None and "`schema`" in exc.message):
            return None  # some other object that mentions a tag: judged by parse_bytes
        raise
    return document


def read_paths(paths: Iterable[str]) -> list[NodeRecord]:
    """Every node in the given files and directories (see :func:`expand`); a node named twice is
    refused."""
    nodes: list[NodeRecord] = []
    for path in expand(paths):
        data = read_capped(path)
        nodes.extend(parse_bytes(data, source=str(path), name_hint=host_name_hint(path.name)))
    check_unique(nodes)
    return nodes
