"""What each command does, in terms of the core and the I/O layers, without typer.

``vlcalc.cli`` parses options and calls one function here per command; each returns an
:class:`Outcome` (the exit code, and the scan when there was one) and writes only through the
:class:`Streams` it is given, so a test or another program can run a command in-process with its
own streams::

    streams = Streams(io.StringIO(), io.StringIO())
    outcome = report_command(["scan.json"], ReportOptions(fmt="json"), streams)
    outcome.code  # ExitCode.OK, NOT_MET, INCOMPLETE ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from vlcalc.documents import NodeRecord, check_unique
from vlcalc.errors import InputError, SpecError
from vlcalc.files import read_paths
from vlcalc.model import GROUPS_SCHEMA, ExitCode, Status, printable
from vlcalc.options import check_scan_options
from vlcalc.qemu import QemuError, parse_guest_spec, parse_spec
from vlcalc.render import (
    SETTINGS_FORMATS,
    as_json,
    make_console,
    md,
    print_check,
    print_report,
    render_check,
    render_diff,
    render_report,
    scan_progress,
    xml_comment,
)
from vlcalc.report import (
    ReportView,
    build_check,
    build_diff,
    build_report,
    build_view,
    combined_exit_code,
    exclude,
    group_reports,
    report_json,
    shared_hostnames,
)
from vlcalc.scan import DEFAULT_FORKS
from vlcalc.vl import VQ_BITS, VQ_MAX

if TYPE_CHECKING:  # the scan machinery (paramiko) loads only when a command scans
    from rich.console import Console

    from vlcalc.scan import ScanResult
    from vlcalc.transport.base import Transport


@dataclass(frozen=True)
class Streams:
    """Where a command writes: the payload to ``stdout``, everything else to ``stderr``."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def error(self, message: str) -> None:
        """One line, whatever the message holds (paths and names come from users and nodes)."""
        self.stderr.write(f"vlcalc: error: {printable(message)}\n")

    def warning(self, message: str) -> None:
        self.stderr.write(f"vlcalc: warning: {printable(message)}\n")


@dataclass(frozen=True)
class Outcome:
    """A command's result for the process: its exit code, and the scan if it ran one (a scan
    that was interrupted makes the CLI leave at once, without waiting for the nodes still
    running)."""

    code: ExitCode
    scanned: ScanResult | None = None


@dataclass(frozen=True)
class AnswerOptions:
    """How to print the cluster answer (``report`` and ``scan``)."""

    fmt: str = "table"
    require_vl: int | None = None
    per_group: bool = False
    target_vl: int | None = None


@dataclass(frozen=True)
class ScanSettings:
    """Where and how to scan (``scan``, and ``check`` with an inventory)."""

    limit: str | None = None
    forks: int = DEFAULT_FORKS
    timeout: float = 60.0
    connect_timeout: float = 10.0
    retries: int = 2
    accept_new: bool = False
    ssh_config: str | None = None
    known_hosts: str | None = None
    save: str | None = None
    transport: str = "paramiko"  # or "openssh": the system ssh client (see make_transport)


TRANSPORTS = ("paramiko", "openssh")


def check_vl(bits: int | None, option: str) -> int | None:
    """``--require-vl``/``--target-vl``: a VL in bits, or nothing."""
    if bits is not None and (bits <= 0 or bits % VQ_BITS or bits // VQ_BITS > VQ_MAX):
        raise SpecError(f"{bits} is not a vector length (a multiple of 128 bits)", source=option)
    return bits


def is_inventory(path: str) -> bool:
    """``check PATH``: is the one PATH an inventory to scan rather than saved documents?  A
    ``.yaml``/``.yml``/``.ini`` file, an Ansible ``hosts`` file, ``-`` (Ansible's JSON on stdin),
    or a directory that holds inventory files (``group_vars/``, ``*.yml``, ``*.ini``, ``hosts``);
    any other directory is documents (``*.json``, or an Ansible fact cache: files named by host)."""
    candidate = Path(path)
    if path == "-" or candidate.suffix.lower() in INVENTORY_SUFFIXES:
        return True
    if not candidate.is_dir():
        return candidate.name == "hosts"
    return any((candidate / name).exists() for name in ("group_vars", "host_vars", "hosts")) or any(
        child.suffix.lower() in INVENTORY_SUFFIXES for child in candidate.iterdir()
    )


INVENTORY_SUFFIXES = (".yaml", ".yml", ".ini")


# -- report ----------------------------------------------------------------------------------------
def report_command(
    paths: Sequence[str],
    options: AnswerOptions,
    streams: Streams,
    *,
    adds: Sequence[str] = (),
    excludes: Sequence[str] = (),
) -> Outcome:
    """``vlcalc report``: saved documents, what-if additions and exclusions, the answer."""
    check_vl(options.require_vl, "--require-vl")
    check_vl(options.target_vl, "--target-vl")
    nodes = read_paths(paths)
    if adds:
        nodes += read_paths(adds)
        check_unique(nodes)
    dropped: list[str] = []
    if excludes:
        nodes, dropped = exclude(nodes, excludes)
    return Outcome(emit_answer(nodes, options, streams, excluded=dropped))


def emit_answer(
    nodes: Sequence[NodeRecord],
    options: AnswerOptions,
    streams: Streams,
    *,
    excluded: Sequence[str] = (),
) -> ExitCode:
    """Print the cluster answer (one per group with ``per_group``) and return the exit code."""
    fmt, require_vl, target_vl = options.fmt, options.require_vl, options.target_vl
    _warn_shared_hostnames(nodes, streams)
    if not options.per_group:
        result = build_report(nodes, require_vl, target_vl=target_vl, excluded=excluded)
        return _emit_report(build_view(result), fmt, streams)
    groups = group_reports(nodes, require_vl, target_vl=target_vl, excluded=excluded)
    views = [(name, build_view(result)) for name, result in groups]
    codes = [view.exit_code for _, view in views]
    if fmt == "json":
        pages = [{"group": name, "report": report_json(view)} for name, view in views]
        streams.write(as_json({"schema": GROUPS_SCHEMA, "groups": pages}))
    elif fmt == "html":
        from vlcalc.html import render_html_groups

        streams.write(render_html_groups(views))
    else:
        for name, view in views:  # names are clean: build_report sanitised every node
            if fmt == "libvirt":
                header = f"<!-- {xml_comment('group ' + name)} -->\n"
            elif fmt in SETTINGS_FORMATS:
                header = f"# group {name}\n"
            else:
                header = f"# group {md(name)}\n" if fmt == "markdown" else f"== group {name}\n"
            codes.append(_emit_report(view, fmt, streams, group=name, header=header))
    return combined_exit_code(codes)


def _warn_shared_hostnames(nodes: Sequence[NodeRecord], streams: Streams) -> None:
    warning = shared_hostnames(nodes)
    if warning is not None:
        streams.warning(warning)


def _emit_report(
    view: ReportView, fmt: str, streams: Streams, group: str | None = None, header: str = ""
) -> ExitCode:
    """Print one report (a group's after its ``header``, then a blank line); settings formats
    warn on stderr when the set comes from incomplete data, and print nothing but one error line
    when no node was probed (exit 4) or the set cannot be written in the format (exit 2: a group
    with it does not stop the others; without groups it is the command's error)."""
    where = "" if group is None else f"group {group}: "
    if fmt in SETTINGS_FORMATS:
        if not view.settings.available:
            streams.error(
                f"{where}no node was probed ({view.completeness.text}): no settings to print"
            )
            return ExitCode.INCOMPLETE
        try:
            text = render_report(view, fmt)
        except QemuError as exc:
            if group is None:
                raise
            streams.error(f"{where}{exc}")
            return ExitCode.INVALID_INPUT
        if view.settings.caveat is not None:
            streams.warning(f"{where}{view.settings.caveat}")
        streams.write(header + (text or "") + ("\n" if group is not None else ""))
        return view.exit_code
    streams.write(header)
    _show(render_report(view, fmt), lambda console: print_report(view, console), streams)
    if group is not None:
        streams.write("\n")
    return view.exit_code


def _show(text: str | None, draw: Callable[[Console], None], streams: Streams) -> None:
    """Write a plain-text format, or draw the rich table (``text is None``) on stdout."""
    if text is None:
        draw(make_console(streams.stdout))
        streams.stdout.flush()
    else:
        streams.write(text)


# -- scan ------------------------------------------------------------------------------------------
def scan_command(
    inventory: str, options: AnswerOptions, settings: ScanSettings, streams: Streams
) -> Outcome:
    """``vlcalc scan``: probe every selected host, print the answer, save if asked."""
    check_vl(options.require_vl, "--require-vl")
    scanned, saved = run_scan(inventory, settings, streams)
    code = emit_answer(scanned.records, options, streams)
    return Outcome(code if saved else ExitCode.INVALID_INPUT, scanned)


def make_transport(settings: ScanSettings) -> Transport:
    """The transports a scan uses: SSH -- paramiko, or with ``transport="openssh"`` the system
    ``ssh`` client -- and, for ``ansible_connection: local``, a subprocess; a new transport is
    wired here."""
    from vlcalc.transport.local import LocalTransport
    from vlcalc.transport.router import RoutingTransport

    ssh: Transport
    if settings.transport == "openssh":
        from vlcalc.transport.openssh import OpenSSHTransport, ssh_available

        if not ssh_available():
            raise InputError(
                "no `ssh` client on PATH (install openssh-client)", source="--transport"
            )
        ssh = OpenSSHTransport(
            ssh_config_path=settings.ssh_config,
            known_hosts_path=settings.known_hosts,
            accept_new=settings.accept_new,
        )
    elif settings.transport == "paramiko":
        from vlcalc.transport.ssh import SSHTransport

        ssh = SSHTransport(
            ssh_config_path=settings.ssh_config,
            known_hosts_path=settings.known_hosts,
            accept_new=settings.accept_new,
        )
    else:
        raise InputError(
            f"unknown transport {settings.transport!r} (one of {', '.join(TRANSPORTS)})",
            source="--transport",
        )
    return RoutingTransport(ssh, LocalTransport())


def run_scan(
    inventory_path: str,
    settings: ScanSettings,
    streams: Streams,
    tries: tuple[str, ...] = (),
    transport: Transport | None = None,
) -> tuple[ScanResult, bool]:
    """Load the inventory, probe every selected host, save if asked; progress on stderr.

    Returns the result and whether it was saved as asked.  Every option and the ``--save`` path
    are checked before any node is probed, and a failed save never discards the answer.
    """
    from vlcalc.inventory import load_inventory, select
    from vlcalc.scan import ScanOptions, check_save_path, save_atomically, scan, scan_json
    from vlcalc.transport.base import Timeouts

    if settings.save is not None:
        check_save_path(settings.save)
    check_scan_options(
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        ssh_config=settings.ssh_config,
        known_hosts=settings.known_hosts,
    )
    # "-" reads Ansible's JSON (ansible-inventory --list) or YAML from stdin.
    inventory = load_inventory(inventory_path, warn=streams.warning, stdin=sys.stdin.buffer)
    hosts = select(inventory, settings.limit, warn=streams.warning)
    phase = min(settings.connect_timeout, settings.timeout)
    options = ScanOptions(
        forks=settings.forks,
        timeouts=Timeouts(
            connect_s=phase,
            banner_s=phase,
            auth_s=phase,
            exec_s=settings.timeout,
            node_s=settings.timeout,
            retries=settings.retries,
        ),
        tries=tries,
    )
    transport = transport or make_transport(settings)
    try:
        with scan_progress(len(hosts)) as advance:
            result = scan(
                hosts,
                transport,
                options,
                inventory=inventory_path,
                limit=settings.limit,
                on_done=advance,
            )
    finally:
        transport.close()
    failed = sum(1 for entry in result.entries if entry.record.status == Status.ERROR)
    if failed:
        streams.error(f"{failed} of {len(hosts)} nodes could not be probed (see the report)")
    if settings.save is None:
        return result, True
    try:
        save_atomically(settings.save, scan_json(result))
    except InputError as exc:  # the answer is still printed: a finished scan is never lost
        streams.error(f"{exc} (the scan is not saved; its answer follows)")
        return result, False
    return result, True


# -- check -----------------------------------------------------------------------------------------
def check_command(
    paths: Sequence[str],
    spec_text: str,
    fmt: str,
    streams: Streams,
    *,
    verify: bool = False,
    settings: ScanSettings | None = None,
) -> Outcome:
    """``vlcalc check``: would every node run this guest, with the same VL set?  ``paths`` is
    saved documents, or one inventory to scan first (then ``settings`` say how)."""
    spec = parse_guest_spec(spec_text, source="--vls")
    settings = settings or ScanSettings()
    scanned: ScanResult | None = None
    saved = True
    if len(paths) == 1 and is_inventory(paths[0]):
        trial = spec.trial_set()
        tries = (",".join(map(str, trial.vls())),) if verify and trial else ()
        scanned, saved = run_scan(paths[0], settings, streams, tries)
        nodes: Sequence[NodeRecord] = scanned.records
    else:
        scan_only = {
            "--verify": verify,
            "--limit": settings.limit is not None,
            "--save": settings.save is not None,
            "--accept-new": settings.accept_new,
            "--ssh-config": settings.ssh_config is not None,
            "--known-hosts": settings.known_hosts is not None,
            "--transport": settings.transport != "paramiko",
        }
        given = [name for name, value in scan_only.items() if value]
        if given:
            raise InputError(
                "this option needs an inventory to scan (YAML, INI, hosts, a directory or -)",
                source=given[0],
            )
        nodes = read_paths(paths)
    result = build_check(nodes, spec)
    _warn_shared_hostnames(nodes, streams)
    for item in result.verdicts:
        if item.disagrees:
            streams.error(f"{item.node.name}: {item.reason}")
    _show(render_check(result, fmt), lambda console: print_check(result, console), streams)
    return Outcome(result.exit_code() if saved else ExitCode.INVALID_INPUT, scanned)


# -- diff and probe --------------------------------------------------------------------------------
def diff_command(old: str, new: str, fmt: str, streams: Streams) -> Outcome:
    """``vlcalc diff``: drift between two views of a fleet."""
    drift = build_diff(read_paths([old]), read_paths([new]))
    streams.write(render_diff(drift, fmt))
    return Outcome(drift.exit_code())


def probe_command(tries: Sequence[str], streams: Streams) -> Outcome:
    """``vlcalc probe``: run the probe here and print its document."""
    from vlcalc.probe import run_local

    specs = []
    for text in tries:  # the probe takes plain VL bits; accept any vlcalc syntax and convert
        parsed = parse_spec(text, source="--try")  # '' is refused, as for --vls: write none
        specs.append(",".join(str(vl) for vl in parsed.vls()))
    streams.write(run_local(specs))
    return Outcome(ExitCode.OK)
