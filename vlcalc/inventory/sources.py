"""Inventory sources as Ansible reads them: files (YAML, INI, JSON), directories, executable
scripts and standard input, then ``group_vars/`` and ``host_vars/`` beside them.

This is the inventory's I/O edge: every other module of the package is pure.  What is read is
untrusted and capped: bytes per file, files per directory tree, nesting of directories, and a
script's run time and output.
"""

from __future__ import annotations

import json
import os
import selectors
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Callable

from vlcalc.errors import InventoryError
from vlcalc.inventory.connect import make_target
from vlcalc.inventory.graph import (
    MAX_INVENTORY_BYTES,
    Builder,
    Inventory,
    LineMapping,
    Unsafe,
    Vaulted,
    Where,
    line_of,
)
from vlcalc.inventory.ini import parse_ini
from vlcalc.inventory.yamlfile import load_yaml
from vlcalc.model import file_kind

__all__ = [
    "MAX_DIRECTORY_DEPTH",
    "MAX_SCRIPT_SECONDS",
    "MAX_SOURCE_FILES",
    "load_inventory",
    "parse_inventory",
]

Warn = Callable[[str], None]

MAX_SOURCE_FILES = 10_000
"""Inventory files plus ``group_vars``/``host_vars`` files read for one inventory."""
MAX_DIRECTORY_DEPTH = 20
"""Nesting of directories walked (a symlink loop ends here)."""
MAX_SCRIPT_SECONDS = 60.0
"""How long an inventory script may run (``--list``) before it is killed."""

# Ansible's yaml plugin reads these extensions, and files without one (then the ini plugin).
_YAML_EXTENSIONS = ("", ".yaml", ".yml", ".json")
# Skipped in a directory inventory, as ansible-core's IGNORED: hidden files, the vars
# directories, and INVENTORY_IGNORE_EXTS (REJECT_EXTS + .orig, .cfg, .retry).
_IGNORED_NAMES = ("host_vars", "group_vars", "vars_plugins")
_IGNORED_SUFFIXES = (
    ".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry",
)  # fmt: skip
_VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")  # in find_vars_files' order
_STDIN = "-"


def _ignore(warn: Warn | None) -> Warn:
    return warn if warn is not None else (lambda _: None)


class _Reader:
    """Reads the sources of one inventory into one :class:`Builder`, counting files."""

    def __init__(self, builder: Builder, warn: Warn) -> None:
        self.builder = builder
        self.warn = warn
        self.files = 0

    def count(self, source: str) -> None:
        self.files += 1
        if self.files > MAX_SOURCE_FILES:
            raise InventoryError(
                f"more than {MAX_SOURCE_FILES:,} inventory and vars files", source=source
            )

    # -- inventory sources --

    def text(self, text: str, source: str, suffix: str, *, in_directory: bool = False) -> None:
        """One file's text, its format found as Ansible's plugins find it: YAML (and JSON)
        first for ``.yaml/.yml/.json`` and extension-less files, then INI."""
        self.builder.source = source
        if suffix == ".toml":
            raise InventoryError(
                "TOML inventories are not supported: pipe `ansible-inventory -i FILE --list` "
                "into `vlcalc scan -`",
                source=source,
            )
        if suffix in _YAML_EXTENSIONS:
            try:
                data, warnings = load_yaml(text, source)
            except InventoryError as exc:
                yaml_error: InventoryError | None = exc
                data, warnings = None, []
            else:
                yaml_error = None
            if yaml_error is None and isinstance(data, dict):
                for warning in warnings:
                    self.warn(warning)
                if _is_script_json(data):
                    self.script_json(data, source)
                else:
                    self.builder.parse_document(data)
                return
            if yaml_error is None and data is None:
                if in_directory:
                    return  # Ansible's ini plugin reads an empty file as no hosts
                raise InventoryError("the inventory is empty", source=source)
            try:
                parse_ini(text, self.builder)
            except InventoryError:
                if yaml_error is not None and suffix != "":
                    raise yaml_error from yaml_error.__cause__
                if yaml_error is None:  # valid YAML, but no mapping: say so, as before INI
                    self.builder.parse_document(data)
                raise
            return
        parse_ini(text, self.builder)

    def script_json(self, data: dict[Any, Any], source: str) -> None:
        """Ansible's JSON inventory (an inventory script's ``--list``, ``ansible-inventory
        --list``): groups with ``hosts``/``children`` lists and ``vars``, ``_meta.hostvars``."""
        builder = self.builder
        builder.source = source
        data = _tagged(data)
        hostvars: Any = None
        listed: dict[str, None] = {}
        for group, group_data in data.items():
            if group == "_meta":
                if not isinstance(group_data, dict):
                    raise builder.error("'_meta' must be a mapping", None)
                hostvars = group_data.get("hostvars")
                if not isinstance(hostvars, dict):
                    raise builder.error(
                        "'_meta.hostvars' must be a mapping of host names to their variables "
                        "(vlcalc does not run a script once per host with --host)",
                        None,
                    )
                continue
            if not isinstance(group, str) or not group:
                raise builder.error(f"group name {group!r} must be a non-empty string", None)
            builder.add_group(group, None)
            if not isinstance(group_data, dict):
                group_data = {"hosts": group_data}
            elif not any(key in group_data for key in ("hosts", "vars", "children")):
                group_data = {"hosts": [group], "vars": group_data}
            hosts = group_data.get("hosts", [])
            if not isinstance(hosts, list):
                raise builder.error(f"'{group}.hosts' must be a list", None)
            for host in hosts:
                if not isinstance(host, str) or not host:
                    raise builder.error(f"host {host!r} in group {group!r} must be a string", None)
                builder.add_host(host, group, None, None)
                listed[host] = None
            variables = group_data.get("vars", {})
            if not isinstance(variables, dict):
                raise builder.error(f"'{group}.vars' must be a mapping", None)
            builder.set_group_vars(builder.groups[group], variables)
            children = group_data.get("children", [])
            if not isinstance(children, list):
                raise builder.error(f"'{group}.children' must be a list", None)
            for child in children:
                if not isinstance(child, str) or not child:
                    raise builder.error(
                        f"child {child!r} of group {group!r} must be a string", None
                    )
                builder.add_group(child, None)
                builder.add_child(group, child, None)
        if hostvars is None:
            raise builder.error(
                "no '_meta.hostvars': vlcalc does not run an inventory script once per host "
                "(--host); pipe `ansible-inventory -i SOURCE --list` into `vlcalc scan -`",
                None,
            )
        for host in listed:
            variables = hostvars.get(host) or {}
            if not isinstance(variables, dict):
                raise builder.error(f"'_meta.hostvars' of {host!r} must be a mapping", None)
            builder.set_host_vars(builder.hosts[host], variables)

    def path(self, path: Path, depth: int = 0, *, in_directory: bool = False) -> None:
        source = str(path)
        if depth > MAX_DIRECTORY_DEPTH:
            raise InventoryError(
                f"directories nested deeper than {MAX_DIRECTORY_DEPTH} levels", source=source
            )
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError as exc:
            raise InventoryError("inventory file not found", source=source) from exc
        except OSError as exc:
            raise InventoryError(f"cannot read: {exc.strerror or exc}", source=source) from exc
        if stat.S_ISDIR(mode):
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                raise InventoryError(f"cannot read: {exc.strerror or exc}", source=source) from exc
            for name in names:
                if (
                    name.startswith(".")
                    or name in _IGNORED_NAMES
                    or name.endswith(_IGNORED_SUFFIXES)
                ):
                    continue
                self.path(path / name, depth + 1, in_directory=True)
            return
        self.count(source)
        data = read_file(path)
        if os.access(path, os.X_OK) and data.startswith(b"#!"):
            output = run_script(path)
            self.builder.source = source
            try:
                parsed = json.loads(output)
            except ValueError as exc:
                raise InventoryError(
                    f"inventory script output is not JSON: {exc}", source=source
                ) from exc
            if not isinstance(parsed, dict):
                raise InventoryError("inventory script output is not a JSON object", source=source)
            self.script_json(parsed, source)
            return
        self.text(_decode(data, source), source, path.suffix.lower(), in_directory=in_directory)

    # -- group_vars/ and host_vars/ --

    def vars_dirs(self, base: Path) -> None:
        """Ansible's ``host_group_vars`` plugin for the inventory source at ``base`` (its
        directory for a file): ``group_vars/<group>`` and ``host_vars/<host>``, each a file
        with no extension or ``.yml/.yaml/.json`` (the first that exists), or a directory of
        such files read in sorted order, recursively."""
        base = Path(os.path.realpath(base))
        for subdir, names, files in (
            ("group_vars", list(self.builder.groups), self.builder.group_files),
            ("host_vars", list(self.builder.hosts), self.builder.host_files),
        ):
            directory = base / subdir
            if not directory.exists():
                continue
            if not directory.is_dir():
                self.warn(f"{directory}: not a directory, skipped (as Ansible does)")
                continue
            try:
                entries = set(os.listdir(directory))
            except OSError as exc:
                raise InventoryError(
                    f"cannot read: {exc.strerror or exc}", source=str(directory)
                ) from exc
            for name in names:
                if name.startswith("/") or "/" in name:
                    continue
                for extension in _VARS_EXTENSIONS:
                    candidate = name + extension
                    if candidate not in entries:
                        continue
                    found = directory / candidate
                    paths = self._vars_tree(found, 0) if found.is_dir() else [found]
                    for path in paths:
                        loaded = self._vars_file(path)
                        if loaded is not None:
                            files.setdefault(name, []).append(loaded)
                    break

    def _vars_tree(self, directory: Path, depth: int) -> list[Path]:
        if depth > MAX_DIRECTORY_DEPTH:
            raise InventoryError(
                f"directories nested deeper than {MAX_DIRECTORY_DEPTH} levels",
                source=str(directory),
            )
        found: list[Path] = []
        for name in sorted(os.listdir(directory)):
            if name.startswith(".") or name.endswith("~"):
                continue
            path = directory / name
            extension = os.path.splitext(name)[1]
            if path.is_dir() and not extension:
                found.extend(self._vars_tree(path, depth + 1))
            elif path.is_file() and extension in _VARS_EXTENSIONS:
                found.append(path)
        return found

    def _vars_file(self, path: Path) -> tuple[dict[str, Any], dict[str, Where]] | None:
        source = str(path)
        self.count(source)
        data, warnings = load_yaml(_decode(read_file(path), source), source)
        for warning in warnings:
            self.warn(warning)
        if not data:
            return None  # Ansible ignores an empty vars file
        if not isinstance(data, dict):
            raise InventoryError(
                f"a vars file must be a mapping of variable names, not {type(data).__name__}",
                source=source,
            )
        return (
            {str(key): value for key, value in data.items()},
            {str(key): (source, line_of(data, key)) for key in data},
        )


def _tagged(value: Any) -> Any:
    """Ansible's JSON tags (profile ``inventory_legacy``) as vlcalc's values: ``{"__ansible_unsafe":
    "x{{y}}"}`` is an :class:`Unsafe` string, ``{"__ansible_vault": ...}`` a :class:`Vaulted`."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("__ansible_unsafe"), str):
            return Unsafe(value["__ansible_unsafe"])
        if len(value) == 1 and "__ansible_vault" in value:
            return Vaulted(line_of(value, "__ansible_vault") or 0)
        converted = LineMapping({key: _tagged(item) for key, item in value.items()})
        converted.lines = getattr(value, "lines", {})
        return converted
    if isinstance(value, list):
        return [_tagged(item) for item in value]
    return value


def _is_script_json(data: dict[Any, Any]) -> bool:
    """Whether ``data`` is Ansible's JSON inventory (what a script or ``ansible-inventory
    --list`` prints, always with ``_meta``) rather than a YAML inventory."""
    return "_meta" in data


def parse_inventory(text: str, source: str, warn: Warn | None = None) -> Inventory:
    """Resolve the inventory in ``text`` (YAML, INI or Ansible's JSON, found as Ansible finds
    it; ``source`` names it in errors, and its extension counts as a file's would).

    Input beyond the caps (size, YAML nodes, depth, aliases, hosts) is refused with an
    :class:`InventoryError` before it is built.  Duplicate YAML keys are accepted as Ansible
    accepts them, the last value winning, and each is passed to ``warn`` as one line (before
    anything else in the inventory can be refused, since a duplicate is often the cause).
    Example: ``parse_inventory("kvm:\\n  hosts:\\n    node01:\\n", "inv.yaml").groups["kvm"]``
    is ``["node01"]``; so is ``parse_inventory("[kvm]\\nnode01\\n", "hosts")``'s.
    """
    if len(text) > MAX_INVENTORY_BYTES:
        raise InventoryError(_too_large(), source=source)
    builder = Builder(source)
    suffix = "" if source == _STDIN else Path(source).suffix.lower()
    _Reader(builder, _ignore(warn)).text(text, source, suffix)
    builder.source = source
    return builder.resolve(make_target)


def _too_large() -> str:
    return f"larger than {MAX_INVENTORY_BYTES // (1024 * 1024)} MiB, refused unread"


def load_inventory(
    path: str | Path | Sequence[str | Path],
    warn: Warn | None = None,
    stdin: IO[bytes] | None = None,
) -> Inventory:
    """Read and resolve the inventory at ``path`` as ``ansible -i path`` would: a file (YAML,
    INI, Ansible's JSON, or an executable script run with ``--list``), a directory of them
    (merged in sorted order), or ``-`` for Ansible's JSON or YAML on ``stdin``; then the
    ``group_vars/`` and ``host_vars/`` beside it.  ``warn`` as in :func:`parse_inventory`.

    Only regular files are read (a FIFO would block, ``/dev/zero`` never ends), and at most
    :data:`MAX_INVENTORY_BYTES` of each.  Example: ``load_inventory("/dev/zero")`` raises
    ``InventoryError("/dev/zero: not a regular file (a character device)")``.  A sequence of
    paths is Ansible's repeated ``-i``: every source read in order, then every source's
    ``group_vars/`` and ``host_vars/`` applied to every group and host.
    """
    if not isinstance(path, (str, Path)):
        paths = [Path(one) for one in path]
        builder = Builder(str(paths[0]) if paths else "")
        reader = _Reader(builder, _ignore(warn))
        for one in paths:
            reader.path(one)
        for one in paths:
            reader.vars_dirs(one if one.is_dir() else one.parent)
        builder.source = ",".join(map(str, paths))
        return builder.resolve(make_target)
    source = str(path)
    if not source:  # Path("") is ".": an unset shell variable must not read this directory
        raise InventoryError(
            "an empty path: name the inventory ('.' for this directory)", source="''"
        )
    if source == _STDIN:
        if stdin is None:
            raise InventoryError("no standard input to read the inventory from", source=source)
        data = stdin.read(MAX_INVENTORY_BYTES + 1)
        if len(data) > MAX_INVENTORY_BYTES:
            raise InventoryError(_too_large(), source="<stdin>")
        return parse_inventory(_decode(data, "<stdin>"), "<stdin>", warn)
    builder = Builder(source)
    reader = _Reader(builder, _ignore(warn))
    top = Path(path)
    reader.path(top)
    builder.source = source
    reader.vars_dirs(top if top.is_dir() else top.parent)
    return builder.resolve(make_target)


def read_file(path: Path) -> bytes:
    """At most :data:`MAX_INVENTORY_BYTES` (+1) of the regular file at ``path``."""
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
            raise InventoryError(f"not a regular file ({file_kind(mode)})", source=source)
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_INVENTORY_BYTES + 1)
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    finally:
        os.close(fd)
    if len(data) > MAX_INVENTORY_BYTES:
        raise InventoryError(_too_large(), source=source)
    return data


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"not UTF-8 text: {exc.reason}", source=source) from exc


def run_script(path: Path, timeout: float = MAX_SCRIPT_SECONDS) -> str:
    """Run the inventory script at ``path`` with ``--list`` (no stdin) and return its output,
    as Ansible's script plugin does, but killed after ``timeout`` seconds or
    :data:`MAX_INVENTORY_BYTES` of output.  Example: a script that prints
    ``{"kvm": ["n1"], "_meta": {"hostvars": {}}}`` returns that text."""
    source = str(path)
    try:
        process = subprocess.Popen(
            [str(path), "--list"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise InventoryError(
            f"cannot run the inventory script: {exc.strerror or exc}", source=source
        ) from exc
    assert process.stdout is not None and process.stderr is not None
    chunks: list[bytes] = []
    size = 0
    stderr_tail = b""
    deadline = time.monotonic() + timeout
    problem = None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)
        open_streams = 2
        while open_streams and problem is None:
            left = deadline - time.monotonic()
            if left <= 0:
                problem = f"ran longer than {timeout:g} s"
                break
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                elif key.fileobj is process.stdout:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_INVENTORY_BYTES:
                        problem = f"printed more than {MAX_INVENTORY_BYTES // (1024 * 1024)} MiB"
                else:
                    stderr_tail = (stderr_tail + chunk)[-4096:]
    if problem is not None:
        process.kill()
    try:
        status = process.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        status = process.wait()
        problem = problem or f"ran longer than {timeout:g} s"
    process.stdout.close()
    process.stderr.close()
    if problem is not None:
        raise InventoryError(f"inventory script {problem}: killed", source=source)
    if status != 0:
        tail = " ".join(stderr_tail.decode("utf-8", "replace").split())[-300:]
        raise InventoryError(
            f"inventory script exited with status {status}" + (f": {tail}" if tail else ""),
            source=source,
        )
    return _decode(b"".join(chunks), source)
