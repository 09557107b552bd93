"""The ``vlcalc`` command line: parse options, call the core, render, exit.  No domain logic here.

stdout carries only the result (table, JSON, Markdown, settings); progress, warnings and errors go
to stderr, so ``vlcalc report scan.json --format json | jq`` always works.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, List, Optional, TypeVar  # typer reads these at run time

import typer

from vlcalc import __version__
from vlcalc.documents import read_paths
from vlcalc.errors import InputError, SpecError, VlcalcError
from vlcalc.render import (
    CHECK_FORMATS,
    FORMATS,
    make_console,
    print_check,
    print_report,
    render_check,
    render_report,
)
from vlcalc.report import ExitCode, build_check, build_report
from vlcalc.vl import VQ_BITS, VQ_MAX, parse_spec

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


def guarded(func: F) -> F:
    """Turn vlcalc's own errors into one line on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            _err(str(exc))
            raise typer.Exit(ExitCode.INVALID_INPUT) from None
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


def _check_vl(bits: int | None) -> int | None:
    if bits is not None and (bits <= 0 or bits % VQ_BITS or bits // VQ_BITS > VQ_MAX):
        raise SpecError(
            f"{bits} is not a vector length (a multiple of 128 bits)", source="--require-vl"
        )
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
    str, typer.Option("--format", "-f", help="table, json, markdown, qemu, libvirt or kvm.")
]


@app.command()
@guarded
def report(
    paths: PathsArg,
    fmt: FormatOpt = "table",
    require_vl: Annotated[
        Optional[int],
        typer.Option("--require-vl", metavar="BITS", help="Exit 1 unless BITS is in the set."),
    ] = None,
) -> None:
    """Combine saved documents into the cluster answer.

    Example: vlcalc report inventories/example-scan.json --format json
    """
    _check_format(fmt, FORMATS)
    result = build_report(read_paths(paths), _check_vl(require_vl))
    _emit_report(result, fmt)
    raise typer.Exit(result.exit_code())


def _emit_report(result: Any, fmt: str) -> None:
    text = render_report(result, fmt)
    if text is None:
        print_report(result, make_console())
    else:
        _write(text)


@app.command()
@guarded
def check(
    paths: PathsArg,
    vls: Annotated[
        str,
        typer.Option(
            "--vls",
            metavar="SPEC",
            help="The guest's VL set: 128,256 | 0xb | sve128=on,sve256=on | a libvirt <cpu>.",
        ),
    ],
    fmt: FormatOpt = "table",
) -> None:
    """Would every node accept a guest with this VL set?  Exactly KVM's rule; exit 1 if not.

    Example: vlcalc check --vls 128,256 inventories/example-scan.json
    """
    _check_format(fmt, CHECK_FORMATS)
    requested = parse_spec(vls, source="--vls")
    result = build_check(read_paths(paths), requested)
    text = render_check(result, fmt)
    if text is None:
        print_check(result, make_console())
    else:
        _write(text)
    raise typer.Exit(result.exit_code())


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


def _try_arg(spec: str) -> str:
    """The probe takes plain VL bits; accept any vlcalc syntax and convert."""
    parsed = parse_spec(spec, source="--try") if spec.strip() else None
    return "" if parsed is None else ",".join(str(vl) for vl in parsed.vls())


def main() -> None:
    app(prog_name="vlcalc")


if __name__ == "__main__":
    main()
