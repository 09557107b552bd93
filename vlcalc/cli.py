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
from enum import Enum
from typing import Annotated, Any, List, Optional, TypeVar  # typer reads these at run time

import typer

from vlcalc import __version__
from vlcalc.app import (
    AnswerOptions,
    Outcome,
    ScanSettings,
    Streams,
    check_command,
    diff_command,
    is_inventory,
    probe_command,
    report_command,
    scan_command,
)
from vlcalc.errors import InputError, NodeError, VlcalcError
from vlcalc.model import ExitCode
from vlcalc.render import CheckFormat, ReportFormat
from vlcalc.scan import DEFAULT_FORKS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="The largest SVE vector-length set that every node of an arm64 KVM cluster accepts.",
)

F = TypeVar("F", bound=Callable[..., Any])


def _err(message: str) -> None:
    Streams().error(message)


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
FormatOpt = Annotated[ReportFormat, typer.Option("--format", "-f", help="The output format.")]
CheckFormatOpt = Annotated[CheckFormat, typer.Option("--format", "-f", help="The output format.")]
RequireOpt = Annotated[
    Optional[int],
    typer.Option("--require-vl", metavar="BITS", help="Exit 1 unless BITS is in the set."),
]
PerGroupOpt = Annotated[
    bool, typer.Option("--per-group", help="One answer per inventory group, then all nodes.")
]
InventoryArg = Annotated[
    str,
    typer.Argument(
        help="An Ansible inventory: YAML, INI, a directory, a script, or - for ansible-inventory"
        " --list JSON on stdin.",
        metavar="INVENTORY",
    ),
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


class TransportName(str, Enum):
    """``--transport``: how to reach nodes over SSH."""

    PARAMIKO = "paramiko"
    OPENSSH = "openssh"


TransportOpt = Annotated[
    TransportName,
    typer.Option(
        "--transport",
        help="paramiko (fast, the default) or openssh: the system ssh client, for what paramiko"
        " cannot do (FIDO/sk- keys, GSSAPI, smartcards, any ssh_config option).",
    ),
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
    fmt: FormatOpt = ReportFormat.TABLE,
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
    options = AnswerOptions(fmt.value, require_vl, per_group, target_vl)
    _finish(report_command(paths, options, Streams(), adds=adds or (), excludes=excludes or ()))


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
    fmt: CheckFormatOpt = CheckFormat.TABLE,
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
    transport: TransportOpt = TransportName.PARAMIKO,
) -> None:
    """Would every node run this guest, with the same VL set?  QEMU's and KVM's rules; exit 1 if
    some node rejects it or nodes would give it different sets.

    PATH is saved documents, or one inventory (YAML, INI, hosts, a directory, -) to scan first.
    Example: vlcalc check --vls 128,256 inventories/example-scan.json
    """
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
        transport=transport.value,
    )
    outcome = check_command(paths, vls, fmt.value, Streams(), verify=verify, settings=settings)
    _finish(outcome)


@app.command()
@guarded
def scan(
    inventory: InventoryArg,
    fmt: FormatOpt = ReportFormat.TABLE,
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
    transport: TransportOpt = TransportName.PARAMIKO,
) -> None:
    """Probe every node of an Ansible inventory over SSH and print the cluster answer.

    Example: vlcalc scan inventory.yaml --save scan.json
    """
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
        transport=transport.value,
    )
    options = AnswerOptions(fmt.value, require_vl, per_group)
    _finish(scan_command(inventory, options, settings, Streams()))


def _finish(outcome: Outcome) -> None:
    """Leave with the outcome's exit code.  After an interrupted scan, nodes still running are
    abandoned: flush what we have and leave now, without waiting for their timeouts."""
    if outcome.scanned is not None and outcome.scanned.interrupted:
        _err("interrupted: the report covers the nodes that answered")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(ExitCode.INTERRUPTED)
    raise typer.Exit(outcome.code)


@app.command()
@guarded
def diff(
    old: Annotated[str, typer.Argument(help="The earlier scan/probe document or directory.")],
    new: Annotated[str, typer.Argument(help="The later scan/probe document or directory.")],
    fmt: CheckFormatOpt = CheckFormat.TABLE,
) -> None:
    """Drift: nodes added, removed or changed, and whether the cluster set shrank (exit 1).

    Example: vlcalc diff last-week.json today.json
    """
    _finish(diff_command(old, new, fmt.value, Streams()))


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
    _finish(probe_command(tries or [], Streams()))


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
            why = why.removeprefix("Value error, ")  # pydantic's wording for a failed choice
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


def _set_gc_policy(args: Sequence[str]) -> bool:
    """The process's garbage-collection policy, by command; set here only, never by a command
    (an in-process call would leave it behind for whoever calls next, e.g. a test session).

    Reading documents builds millions of objects and no reference cycles: the cyclic collector
    would only rescan them again and again (half of `report`'s time on 100,000 nodes), and the
    process ends as soon as it has printed, so it is off.  A scan creates cycles (paramiko), so it
    keeps the collector, but start-up leaves ~50,000 long-lived objects (typer, rich, paramiko) in
    the young generations and the first full collection came mid-scan: 28-37 ms of CPU with the
    GIL held (measured, 200 nodes).  Frozen, no collection walks them again.

    Returns whether the collector is off (a command that only reads documents).
    """
    words = [arg for arg in args if not arg.startswith("-")]
    command = words[0] if words else ""
    scans = command == "scan" or (command == "check" and any(map(is_inventory, words[1:])))
    # `--transport openssh` never loads paramiko (~140 ms of CPU); a misread word costs only that.
    openssh = "openssh" in words[1:] or "--transport=openssh" in args
    if scans:
        if not openssh:
            import vlcalc.transport.ssh  # noqa: F401  (its imports are the bulk of what to freeze)

        gc.freeze()
    elif command in ("report", "diff", "check"):
        gc.disable()
        return True
    return False


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The ``vlcalc`` entry point: every usage error is one ``vlcalc: error:`` line, exit 2."""
    reads_documents = _set_gc_policy(sys.argv[1:] if argv is None else argv)
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
    if reads_documents and argv is None:
        # The process is done: tearing down the millions of objects a large report read costs
        # ~70 ms of CPU (measured, 100,000 nodes) for nothing.  Flush, then leave at once.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:  # `vlcalc report ... | head`: the reader left; not an error
            pass
        os._exit(int(code or 0))
    sys.exit(int(code or 0))


if __name__ == "__main__":
    main()
