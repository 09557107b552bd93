"""Collecting probe documents from a fleet: bounded parallelism, deadlines, failures as values.

:func:`scan` runs the probe on every host through a :class:`~vlcalc.transport.base.Transport`
and returns a :class:`ScanResult` that records every node's outcome — one dead node never aborts
the scan.  What a node sends back is untrusted: size-limited by the transport, parsed as exactly
one JSON document and schema-checked before it is used.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlcalc import __version__
from vlcalc.answer import MAX_PROBE_OUTPUT, record_answer
from vlcalc.documents import NodeRecord, error_node
from vlcalc.errors import InputError, NodeError
from vlcalc.model import SCAN_SCHEMA, ErrorKind, Status, printable
from vlcalc.probe import probe_args, probe_source
from vlcalc.transport.base import Target, Timeouts, Transport

if TYPE_CHECKING:  # the inventory module (and PyYAML) loads only when a scan reads one
    from vlcalc.inventory import Host

DEFAULT_FORKS = 32


@dataclass(frozen=True)
class ScanOptions:
    forks: int = DEFAULT_FORKS
    timeouts: Timeouts = field(default_factory=Timeouts)
    tries: tuple[str, ...] = ()  # acceptance trials, as the probe takes them ("128,256")
    max_output: int = MAX_PROBE_OUTPUT


@dataclass(frozen=True)
class ScanEntry:
    """One node's outcome: its probe document, or the error that stopped it."""

    host: Host
    record: NodeRecord
    probe: dict[str, Any] | None
    elapsed_ms: float

    @property
    def outcome(self) -> Status:
        return Status.OK if self.probe is not None else Status.ERROR


@dataclass(frozen=True)
class ScanResult:
    entries: tuple[ScanEntry, ...]
    started: str
    finished: str
    inventory: str | None
    limit: str | None
    interrupted: bool = False

    @property
    def records(self) -> list[NodeRecord]:
        return [entry.record for entry in self.entries]


def probe_command(target: Target, tries: Sequence[str]) -> str:
    """The shell command that runs the probe (source on stdin) on ``target``.

    >>> probe_command(Target("n", "n", become=True, become_user="kvmops"), ["128"])
    'sudo -n -u kvmops -- python3 - --try 128'
    """
    words = [target.python, "-", *probe_args(list(tries))]
    command = " ".join(shlex.quote(word) for word in words)
    if not target.become:
        return command
    # -n: never prompt (a prompt would hang the scan); a refusal becomes the node's error.
    user = f"-u {shlex.quote(target.become_user)} " if target.become_user else ""
    return f"sudo -n {user}-- {command}"


def scan_host(transport: Transport, host: Host, options: ScanOptions) -> ScanEntry:
    """Probe one host; every failure becomes a value."""
    start = time.monotonic()
    target = host.target
    try:
        result = transport.run(
            target,
            probe_command(target, options.tries),
            probe_source(),
            timeouts=options.timeouts,
            max_stdout=options.max_output,
        )
    except NodeError as exc:
        # printable: the message may quote the node (an SSH banner, ssh's log): --save keeps
        # it, and `jq -r` on that file must not replay escape sequences.
        record = error_node(host.name, exc.kind, printable(exc.message), groups=host.groups)
        return ScanEntry(host, record, None, (time.monotonic() - start) * 1000)
    record, probe = record_answer(target, result, groups=host.groups)
    return ScanEntry(host, record, probe, (time.monotonic() - start) * 1000)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def scan(
    hosts: Sequence[Host],
    transport: Transport,
    options: ScanOptions,
    *,
    inventory: str | None = None,
    limit: str | None = None,
    on_done: Callable[[ScanEntry], None] | None = None,
    stop: threading.Event | None = None,
) -> ScanResult:
    """Probe ``hosts`` with at most ``options.forks`` at once; entries come back in input order.

    If ``stop`` is set (Ctrl-C), nodes not yet started are recorded as ``interrupted`` and the scan
    returns what it has without waiting for the nodes still running.
    """
    started = _now()
    done: dict[int, ScanEntry] = {}
    interrupted = False
    finished: queue.SimpleQueue[tuple[int, ScanEntry]] = queue.SimpleQueue()

    def work(index: int, host: Host) -> None:
        try:
            entry = scan_host(transport, host, options)
        except Exception as exc:  # a bug must cost one node, not hang or abort the scan
            message = f"internal error in vlcalc ({type(exc).__name__}: {exc}); please report it"
            record = error_node(
                host.name, ErrorKind.INTERNAL, printable(message), groups=host.groups
            )
            entry = ScanEntry(host, record, None, 0.0)
        finished.put((index, entry))

    # Completions come back through a queue (O(1) each), not by re-waiting on every pending
    # future, so a 1,000-node scan costs the controller nothing per node beyond the node's work.
    pool = ThreadPoolExecutor(max_workers=max(1, min(options.forks, len(hosts) or 1)))
    try:
        for index, host in enumerate(hosts):
            pool.submit(work, index, host)
        while len(done) < len(hosts):
            if stop is not None and stop.is_set():
                interrupted = True
                break
            try:
                index, entry = finished.get(timeout=0.2)
            except queue.Empty:
                continue
            done[index] = entry
            if on_done is not None:
                on_done(entry)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    entries = [done.get(index) or _interrupted(host) for index, host in enumerate(hosts)]
    return ScanResult(tuple(entries), started, _now(), inventory, limit, interrupted)


def _interrupted(host: Host) -> ScanEntry:
    message = "the scan was interrupted before this node answered"
    return ScanEntry(
        host, error_node(host.name, ErrorKind.INTERRUPTED, message, groups=host.groups), None, 0.0
    )


# -- the scan document ----------------------------------------------------------------------------
def _target_json(target: Target) -> dict[str, Any]:
    return {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "connection": target.connection,
        "become": target.become,
    }


def scan_json(result: ScanResult) -> dict[str, Any]:
    """The ``vlcalc.scan/1`` document: every node, failed ones included."""
    nodes = []
    for entry in result.entries:
        record = entry.record
        nodes.append(
            {
                "name": entry.host.name,
                "groups": list(entry.host.groups),
                "target": _target_json(entry.host.target),
                "outcome": entry.outcome,
                "probe": entry.probe,
                "error": None
                if entry.probe is not None
                else {"kind": record.error_kind, "message": record.error_message},
                "elapsed_ms": round(entry.elapsed_ms, 1),
            }
        )
    return {
        "schema": SCAN_SCHEMA,
        "vlcalc_version": __version__,
        "started": result.started,
        "finished": result.finished,
        "inventory": result.inventory,
        "limit": result.limit,
        "interrupted": result.interrupted,
        "nodes": nodes,
    }


def check_save_path(path: str) -> None:
    """Refuse, before any node is probed, a ``--save`` path that the finished scan could not be
    written to: empty, in a missing or read-only directory, or naming something other than a
    regular file (a symlink, FIFO, device or directory is never replaced: as root, a rename over
    ``/dev/full`` would succeed).

    >>> check_save_path("")
    Traceback (most recent call last):
    vlcalc.errors.InputError: --save: needs a file name
    """
    if not path.strip():
        raise InputError("needs a file name", source="--save")
    target = Path(path)
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise InputError(f"cannot use: {exc.strerror}", source=path) from exc
    if mode is not None and not stat.S_ISREG(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise InputError(
            f"is {what}; --save replaces only regular files (name another file)", source=path
        )
    directory = target.parent if str(target.parent) else Path(".")
    try:  # the real test: root passes os.access() everywhere, a read-only mount does not
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InputError(f"cannot write there: {exc.strerror}", source=path) from exc
    os.close(fd)
    os.unlink(temp)


def save_atomically(path: str, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` through a temporary file and a rename: a reader never sees a
    half-written scan, and an old scan is replaced only by a complete new one."""
    check_save_path(path)  # again: the path may have changed while the scan ran
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", source=path) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise InputError(f"cannot write: {exc.strerror}", source=path) from exc
