"""The ``vlcalc`` command line: parse options, call the core, render, exit.  No domain logic here.

stdout carries only the result (table, JSON, Markdown, settings); progress, warnings and errors go
to stderr, so ``vlcalc report scan.json --format json | jq`` always works.
"""

# No `from __future__ import annotations` here: typer reads the parameters' Annotated metadata at
# run time, and on Python 3.9 it cannot resolve string annotations.  Hence Optional/List below.
import functools
import gc
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, List, Optional, TypeVar  # typer reads these at run time

import typer

from vlcalc import __version__
from vlcalc.documents import check_unique
from vlcalc.errors import InputError, NodeError, SpecError, VlcalcError
from vlcalc.files import read_paths
from vlcalc.options import check_scan_options
from vlcalc.qemu import parse_guest_spec, parse_spec
from vlcalc.render import (
    CHECK_FORMATS,
    DIFF_FORMATS,
    FORMATS,
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
    GROUPS_SCHEMA,
    ExitCode,
    ReportView,
    build_check,
    build_diff,
    build_report,
    build_view,
    combined_exit_code,
    exclude,
    group_reports,
    report_json,
)
from vlcalc.scan import DEFAULT_FORKS, ScanResult
from vlcalc.vl import VQ_BITS, VQ_MAX

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="The largest SVE vector-length set that every node of an arm64 KVM cluster accepts.",
)

F = TypeVar("F", bound=Callable[..., Any])


def _err(message: str) -> None:
    sys.stderr.write(f"vlcalc: error: {message}\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"vlcalc: warning: {message}\n")


def guarded(func: F) -> F:
    """Turn vlcalc's own errors into one line on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            _err(str(exc))
            raise typer.Exit(ExitCode.INVALID_INPUT) from None
        except NodeError as exc:  # `vlcalc probe`: no document, so this node's answer is unknown
            _err(str(exc))
            raise typer.Exit(ExitCode.INCOMPLETE) from None
        except VlcalcError as exc:
            _err(str(exc))
            raise typer.Exit(ExitCode.INVALID_INPUT) from None
        except KeyboardInterrupt:
            _err("interrupted")
            raise typer.Exit(ExitCode.INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def _check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    if fmt not in allowed:
        raise InputError(
            f"unknown format {fmt!r}; choose one of {', '.join(allowed)}", source="--format"
        )
    return fmt


def _check_vl(bits: Optional[int], option: str = "--require-vl") -> Optional[int]:
    if bits is not None and (bits <= 0 or bits % VQ_BITS or bits // VQ_BITS > VQ_MAX):
        raise SpecError(f"{bits} is not a vector length (a multiple of 128 bits)", source=option)
    return bits


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _version(value: bool) -> None:
    if value:
        _write(f"vlcalc {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """vlcalc: plan SVE vector lengths for live migration across arm64 KVM hosts."""


PathsArg = Annotated[
    List[str],
    typer.Argument(
        help="Probe or scan documents (JSON), or directories of them.", metavar="PATH..."
    ),
]
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="table, json, markdown, html, qemu, libvirt or kvm.")
]
RequireOpt = Annotated[
    Optional[int],
    typer.Option("--require-vl", metavar="BITS", help="Exit 1 unless BITS is in the set."),
]
PerGroupOpt = Annotated[
    bool, typer.Option("--per-group", help="One answer per inventory group, then all nodes.")
]
InventoryArg = Annotated[
    str, typer.Argument(help="An Ansible YAML inventory.", metavar="INVENTORY")
]
LimitOpt = Annotated[
    Optional[str],
    typer.Option("--limit", "-l", metavar="PATTERN", help="Ansible host pattern: web*,!web3"),
]
ForksOpt = Annotated[int, typer.Option("--forks", min=1, max=1024, help="Nodes probed at once.")]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=1.0, metavar="SECONDS", help="Overall deadline per node."),
]
ConnectTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--connect-timeout",
        min=0.5,
        metavar="SECONDS",
        help="TCP connect, SSH banner and auth timeout, each.",
    ),
]
RetriesOpt = Annotated[
    int, typer.Option("--retries", min=0, max=10, help="Extra attempts for connection failures.")
]
AcceptNewOpt = Annotated[
    bool,
    typer.Option(
        "--accept-new",
        help="Record host keys of NEW hosts in known_hosts (like StrictHostKeyChecking="
        "accept-new); a CHANGED key is always refused.",
    ),
]
SshConfigOpt = Annotated[
    Optional[str],
    typer.Option("--ssh-config", metavar="FILE", help="Default: ~/.ssh/config if it exists."),
]
KnownHostsOpt = Annotated[
    Optional[str],
    typer.Option("--known-hosts", metavar="FILE", help="Default: ~/.ssh/known_hosts."),
]
SaveOpt = Annotated[
    Optional[str],
    typer.Option(
        "--save",
        metavar="FILE",
        help="Write the scan document (all nodes, failed ones too) atomically.",
    ),
]


@app.command()
@guarded
def report(
    paths: PathsArg,
    fmt: FormatOpt = "table",
    require_vl: RequireOpt = None,
    per_group: PerGroupOpt = False,
    excludes: Annotated[
        Optional[List[str]],
        typer.Option(
            "--exclude",
            metavar="PATTERN",
            help="What-if: leave out nodes whose name or group matches (repeatable).",
        ),
    ] = None,
    adds: Annotated[
        Optional[List[str]],
        typer.Option(
            "--add",
            metavar="FILE",
            help="What-if: add planned hardware's probe documents (repeatable).",
        ),
    ] = None,
    target_vl: Annotated[
        Optional[int],
        typer.Option(
            "--target-vl",
            metavar="BITS",
            help="Name the fewest nodes to drain so the rest reach VL BITS.",
        ),
    ] = None,
) -> None:
    """Combine saved documents into the cluster answer, with what-if planning.

    Example: vlcalc report inventories/example-scan.json --format json
    """
    _check_format(fmt, FORMATS)
    _check_vl(require_vl, "--require-vl")
    _check_vl(target_vl, "--target-vl")
    nodes = read_paths(paths)
    if adds:
        nodes += read_paths(adds)
        check_unique(nodes)
    dropped: list[str] = []
    if excludes:
        nodes, dropped = exclude(nodes, excludes)
    code = _emit_answer(nodes, fmt, require_vl, per_group, target_vl=target_vl, excluded=dropped)
    raise typer.Exit(code)


def _emit_answer(
    nodes: Sequence[Any],
    fmt: str,
    require_vl: Optional[int],
    per_group: bool,
    *,
    target_vl: Optional[int] = None,
    excluded: Sequence[str] = (),
) -> int:
    """Print the cluster answer (one per group with ``per_group``) and return the exit code."""
    if not per_group:
        view = build_view(build_report(nodes, require_vl, target_vl=target_vl, excluded=excluded))
        return _emit_report(view, fmt)
    views = [
        (name, build_view(result))
        for name, result in group_reports(nodes, require_vl, target_vl=target_vl, excluded=excluded)
    ]
    codes = [view.exit_code for _, view in views]
    if fmt == "json":
        groups = [{"group": name, "report": report_json(view)} for name, view in views]
        _write(as_json({"schema": GROUPS_SCHEMA, "groups": groups}))
    elif fmt == "html":
        from vlcalc.html import render_html_groups

        _write(render_html_groups(views))
    else:
        for name, view in views:  # names are clean: build_report sanitised every node
            if fmt == "libvirt":
                _write(f"<!-- {xml_comment('group ' + name)} -->\n")
            elif fmt in SETTINGS_FORMATS:
                _write(f"# group {name}\n")
            else:
                _write(f"# group {md(name)}\n" if fmt == "markdown" else f"== group {name}\n")
            codes.append(_emit_report(view, fmt, group=name))
            _write("\n")
    return combined_exit_code(codes)


def _emit_report(view: ReportView, fmt: str, group: Optional[str] = None) -> ExitCode:
    """Print one report; settings formats warn on stderr when the set comes from incomplete data
    and print nothing (one error line, exit 4) when no node was probed."""
    where = "" if group is None else f"group {group}: "
    if fmt in SETTINGS_FORMATS:
        if not view.settings.available:
            _err(f"{where}no node was probed ({view.completeness.text}): no settings to print")
            return ExitCode.INCOMPLETE
        if view.settings.caveat is not None:
            sys.stderr.write(f"vlcalc: warning: {where}{view.settings.caveat}\n")
    text = render_report(view, fmt)
    if text is None:
        print_report(view, make_console())
    else:
        _write(text)
    return view.exit_code


@app.command()
@guarded
def check(
    paths: PathsArg,
    vls: Annotated[
        str,
        typer.Option(
            "--vls",
            metavar="SPEC",
            help="The guest's VL set (128,256 | 0xb) or how it was started: QEMU -cpu "
            "properties (host,sve=on,sve128=on) or a libvirt <cpu>, resolved per node.",
        ),
    ],
    fmt: FormatOpt = "table",
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Scanning: also ask each node's kernel (acceptance trial)."),
    ] = False,
    limit: LimitOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    timeout: TimeoutOpt = 60.0,
    connect_timeout: ConnectTimeoutOpt = 10.0,
    retries: RetriesOpt = 2,
    accept_new: AcceptNewOpt = False,
    ssh_config: SshConfigOpt = None,
    known_hosts: KnownHostsOpt = None,
    save: SaveOpt = None,
) -> None:
    """Would every node run this guest, with the same VL set?  QEMU's and KVM's rules; exit 1 if
    some node rejects it or nodes would give it different sets.

    PATH is saved documents, or one inventory (.yaml/.yml) to scan first.
    Example: vlcalc check --vls 128,256 inventories/example-scan.json
    """
    _check_format(fmt, CHECK_FORMATS)
    spec = parse_guest_spec(vls, source="--vls")
    if len(paths) == 1 and _is_inventory(paths[0]):
        settings = ScanSettings(
            limit,
            forks,
            timeout,
            connect_timeout,
            retries,
            accept_new,
            ssh_config,
            known_hosts,
            save,
        )
        trial = spec.trial_set()
        tries = (",".join(map(str, trial.vls())),) if verify and trial else ()
        scanned, saved = _scan(paths[0], settings, tries)
        nodes: Sequence[Any] = scanned.records
    else:
        scan_only = {
            "--verify": verify,
            "--limit": limit,
            "--save": save is not None,
            "--accept-new": accept_new,
            "--ssh-config": ssh_config,
            "--known-hosts": known_hosts,
        }
        given = [name for name, value in scan_only.items() if value]
        if given:
            raise InputError("this option needs an inventory (.yaml/.yml) to scan", source=given[0])
        scanned, saved = None, True
        nodes = read_paths(paths)
    result = build_check(nodes, spec)
    for item in result.verdicts:
        if item.disagrees:
            _err(f"{item.node.name}: {item.reason}")
    text = render_check(result, fmt)
    if text is None:
        print_check(result, make_console())
    else:
        _write(text)
    _finish(result.exit_code(), scanned, saved)


@dataclass(frozen=True)
class ScanSettings:
    limit: Optional[str]
    forks: int
    timeout: float
    connect_timeout: float
    retries: int
    accept_new: bool
    ssh_config: Optional[str]
    known_hosts: Optional[str]
    save: Optional[str]


def _is_inventory(path: str) -> bool:
    return Path(path).suffix.lower() in (".yaml", ".yml")


def _scan(
    inventory_path: str, settings: ScanSettings, tries: tuple[str, ...] = ()
) -> tuple[ScanResult, bool]:
    """Load the inventory, probe every selected host, save if asked; progress on stderr.
    Returns the result and whether it was saved as asked (the ``--save`` path is checked before
    any node is probed, and a failed save never discards the answer)."""
    from vlcalc.inventory import load_inventory, select
    from vlcalc.scan import ScanOptions, check_save_path, save_atomically, scan, scan_json

    if settings.save is not None:
        check_save_path(settings.save)
    from vlcalc.transport.base import Timeouts
    from vlcalc.transport.local import LocalTransport
    from vlcalc.transport.router import RoutingTransport
    from vlcalc.transport.ssh import SSHTransport

    check_scan_options(
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        ssh_config=settings.ssh_config,
        known_hosts=settings.known_hosts,
    )
    hosts = select(load_inventory(inventory_path, warn=_warn), settings.limit)
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
    ssh = SSHTransport(
        ssh_config_path=settings.ssh_config,
        known_hosts_path=settings.known_hosts,
        accept_new=settings.accept_new,
    )
    transport = RoutingTransport(ssh, LocalTransport())
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
    failed = sum(1 for entry in result.entries if entry.record.status == "error")
    if failed:
        _err(f"{failed} of {len(hosts)} nodes could not be probed (see the report)")
    saved = True
    if settings.save is not None:
        try:
            save_atomically(settings.save, scan_json(result))
        except InputError as exc:  # the answer is still printed: a finished scan is never lost
            _err(f"{exc} (the scan is not saved; its answer follows)")
            saved = False
    return result, saved


def _finish(code: int, scanned: Optional[ScanResult], saved: bool = True) -> None:
    if not saved:
        code = ExitCode.INVALID_INPUT
    if scanned is not None and scanned.interrupted:
        # Nodes still running are abandoned: flush what we have and leave now, without waiting
        # for their timeouts.
        _err("interrupted: the report covers the nodes that answered")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(ExitCode.INTERRUPTED)
    raise typer.Exit(code)


@app.command()
@guarded
def scan(
    inventory: InventoryArg,
    fmt: FormatOpt = "table",
    limit: LimitOpt = None,
    per_group: PerGroupOpt = False,
    require_vl: RequireOpt = None,
    forks: ForksOpt = DEFAULT_FORKS,
    timeout: TimeoutOpt = 60.0,
    connect_timeout: ConnectTimeoutOpt = 10.0,
    retries: RetriesOpt = 2,
    accept_new: AcceptNewOpt = False,
    ssh_config: SshConfigOpt = None,
    known_hosts: KnownHostsOpt = None,
    save: SaveOpt = None,
) -> None:
    """Probe every node of an Ansible inventory over SSH and print the cluster answer.

    Example: vlcalc scan inventory.yaml --save scan.json
    """
    _check_format(fmt, FORMATS)
    _check_vl(require_vl)
    settings = ScanSettings(
        limit, forks, timeout, connect_timeout, retries, accept_new, ssh_config, known_hosts, save
    )
    result, saved = _scan(inventory, settings)
    _finish(_emit_answer(result.records, fmt, require_vl, per_group), result, saved)


@app.command()
@guarded
def diff(
    old: Annotated[str, typer.Argument(help="The earlier scan/probe document or directory.")],
    new: Annotated[str, typer.Argument(help="The later scan/probe document or directory.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or markdown.")] = "table",
) -> None:
    """Drift: nodes added, removed or changed, and whether the cluster set shrank (exit 1).

    Example: vlcalc diff last-week.json today.json
    """
    _check_format(fmt, DIFF_FORMATS)
    drift = build_diff(read_paths([old]), read_paths([new]))
    _write(render_diff(drift, fmt))
    raise typer.Exit(drift.exit_code())


@app.command()
@guarded
def probe(
    tries: Annotated[
        Optional[List[str]],
        typer.Option(
            "--try", metavar="SPEC", help="Ask this node's KVM to judge a VL set (repeatable)."
        ),
    ] = None,
) -> None:
    """Run the probe on this machine and print its document (vlcalc.probe/1).

    Example: vlcalc probe --try 128,256 > $(hostname).json
    """
    from vlcalc.probe import run_local

    specs = [_try_arg(spec) for spec in tries or []]
    _write(run_local(specs))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def lab(ctx: typer.Context) -> None:
    """Emulated arm64 KVM nodes (QEMU TCG) to try vlcalc on: build, up, down (lab --help).

    Example: vlcalc lab up --node a=128,256,384,512 --node b=128,256,512 --dir /tmp/lab
    """
    from vlcalc.lab.cli import main as lab_main

    raise typer.Exit(lab_main(ctx.args))


def _try_arg(spec: str) -> str:
    """The probe takes plain VL bits; accept any vlcalc syntax and convert."""
    parsed = parse_spec(spec, source="--try") if spec.strip() else None
    return "" if parsed is None else ",".join(str(vl) for vl in parsed.vls())


def _usage_message(exc: Exception) -> str:
    """typer's usage errors as one plain line, without its box or pydantic's wording.

    >>> _usage_message(typer.BadParameter("Input should be a valid integer", param_hint="--forks"))
    '--forks: Input should be a valid integer'
    """
    if isinstance(exc, typer.BadParameter) and exc.message:
        names = getattr(exc.param, "opts", None) or []
        where = exc.param_hint or (names[0] if names else None)
        cause_errors = getattr(exc.__cause__, "errors", None)  # duck-typed: pydantic is typer's
        errors = cause_errors() if callable(cause_errors) else None
        if errors:  # pydantic's validation error behind typer's coercion
            first = errors[0]
            value, limits = first.get("input"), first.get("ctx") or {}
            if _is_nan(value):  # NaN fails every comparison: say what it is
                first = {**first, "type": "float_parsing"}
            why = {
                "int_parsing": f"{value!r} is not a whole number",
                "float_parsing": f"{value!r} is not a number",
                "greater_than_equal": f"{value!r} is below the minimum {limits.get('ge')}",
                "less_than_equal": f"{value!r} is above the maximum {limits.get('le')}",
            }.get(str(first.get("type")), str(first.get("msg", exc.message)))
        else:
            why = exc.message
        text = f"{where}: {why}" if where else why
    else:
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return " ".join(text.split())


def _usage_errors() -> tuple[type[Exception], ...]:
    """The root of click's usage errors: typer >= 0.22 vendors click (``typer.TyperException``);
    older typer (what pip picks on Python 3.9) raises the ``click`` package's own."""
    root = getattr(typer, "TyperException", None)
    if root is not None:
        return (root,)
    import click  # only older typer depends on it

    return (click.ClickException,)


def _is_nan(value: object) -> bool:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return number != number


def _set_gc_policy(args: Sequence[str]) -> None:
    """The process's garbage-collection policy, by command; set here only, never by a command
    (an in-process call would leave it behind for whoever calls next, e.g. a test session).

    Reading documents builds millions of objects and no reference cycles: the cyclic collector
    would only rescan them again and again (half of `report`'s time on 100,000 nodes), and the
    process ends as soon as it has printed, so it is off.  A scan creates cycles (paramiko), so it
    keeps the collector, but start-up leaves ~50,000 long-lived objects (typer, rich, paramiko) in
    the young generations and the first full collection came mid-scan: 28-37 ms of CPU with the
    GIL held (measured, 200 nodes).  Frozen, no collection walks them again.
    """
    words = [arg for arg in args if not arg.startswith("-")]
    command = words[0] if words else ""
    scans = command == "scan" or (command == "check" and any(map(_is_inventory, words[1:])))
    if scans:
        import vlcalc.transport.ssh  # noqa: F401  (its imports are the bulk of what to freeze)

        gc.freeze()
    elif command in ("report", "diff", "check"):
        gc.disable()


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The ``vlcalc`` entry point: every usage error is one ``vlcalc: error:`` line, exit 2."""
    _set_gc_policy(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="vlcalc", standalone_mode=False)
    except typer.Abort:
        code = ExitCode.INTERRUPTED
    except _usage_errors() as exc:
        context = getattr(exc, "ctx", None)
        where = context.command_path if context is not None else "vlcalc"
        _err(f"{_usage_message(exc)} (see '{where} --help')")
        code = ExitCode.INVALID_INPUT
    sys.exit(int(code or 0))


if __name__ == "__main__":
    main()
