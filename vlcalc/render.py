"""Rendering reports, checks and diffs for people and for other programs.

Every report format formats one :class:`vlcalc.report.ReportView` and computes nothing of its own.
Node text in the view is already printable (:func:`vlcalc.report.clean_nodes`); here it is passed
to rich as :class:`rich.text.Text` (never parsed as markup) and escaped in Markdown (:func:`md`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING, Any

import msgspec

from vlcalc.model import Verdict, printable
from vlcalc.qemu import QEMU_MAX_VL, libvirt_xml, qemu_cpu
from vlcalc.report import (
    LADDER_SHOWN,
    PROFILES_SHOWN,
    CheckResult,
    Completeness,
    Drift,
    ReportView,
    check_json,
    diff_json,
    report_json,
    settings_or_none,
    shorten,
)
from vlcalc.vl import VLSet

# rich is imported where a table is drawn: it is 25 ms of start-up that `-f json`, `markdown` and
# `html` do not need.
if TYPE_CHECKING:
    from rich.console import Console, Group
    from rich.table import Table
    from rich.text import Text


class ReportFormat(str, Enum):
    """``report``/``scan --format``: the answer for people, programs, or a VM's settings."""

    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"
    HTML = "html"
    QEMU = "qemu"
    LIBVIRT = "libvirt"
    KVM = "kvm"


class CheckFormat(str, Enum):
    """``check``/``diff --format``."""

    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


FORMATS = tuple(item.value for item in ReportFormat)
SETTINGS_FORMATS = ("qemu", "libvirt", "kvm")
CHECK_FORMATS = tuple(item.value for item in CheckFormat)
_CELL = {"in": "●", "out": "●", "no": "·", "err": "?"}  # the table's matrix cells
_MD_CELL = {"in": "x", "out": "x", "no": " ", "err": "?"}


@contextmanager
def scan_progress(total: int) -> Iterator[Callable[[Any], None]]:
    """A progress bar on stderr while scanning, hidden when stderr is not a terminal; yields the
    function to call as each node finishes."""
    from rich.console import Console

    console = Console(stderr=True, markup=False, emoji=False, highlight=False)
    if not console.is_terminal:
        yield lambda entry: None
        return
    # Imported here: only a scan on a terminal draws a bar (rich.progress is ~8 ms of start-up).
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("scan", total=total, failed=0)
        failed = 0

        def advance(entry: Any) -> None:
            nonlocal failed
            failed += entry.record.status == "error"
            progress.update(task, advance=1, failed=failed)

        yield advance


def make_console(file: Any = None, *, width: int | None = None) -> Console:
    """A console that never interprets data as markup, emoji or highlights."""
    from rich.console import Console

    return Console(
        file=file, markup=False, emoji=False, highlight=False, width=width, soft_wrap=False
    )


_ENCODE = msgspec.json.Encoder().encode  # C; one call per item, like the stdlib's one-shot


def as_json(document: dict[str, Any]) -> str:
    """JSON for people and for ``jq``: each top-level field on its own line, one line per member
    of an object field and per item of a list field.  (``json.dumps(indent=...)`` takes the
    pure-Python encoder, several seconds for a 100,000-node report; msgspec encodes an item in
    about a microsecond.)  The pieces are joined once: a 100,000-node report is 27 MB, and
    each ``+`` of it would be one more copy."""
    pieces = [b"{\n"]
    for key, value in document.items():
        pieces += (b"  ", _ENCODE(key), b": ")
        if isinstance(value, list) and value:
            pieces += (b"[\n    ", b",\n    ".join(map(_ENCODE, value)), b"\n  ],\n")
        elif isinstance(value, dict) and value:
            members = (_ENCODE(k) + b": " + _ENCODE(v) for k, v in value.items())
            pieces += (b"{\n    ", b",\n    ".join(members), b"\n  },\n")
        else:
            pieces += (_ENCODE(value), b",\n")
    if len(pieces) > 1:
        pieces[-1] = pieces[-1][:-2]  # no comma after the last field
    pieces.append(b"\n}\n")
    return b"".join(pieces).decode("utf-8")


def settings_text(view: ReportView, fmt: str) -> str | None:
    """``-f qemu|libvirt|kvm``: the settings, with a comment line in the format's own syntax when
    the set comes from incomplete data; ``None`` when no node was probed (nothing to give)."""
    settings = view.settings
    if not settings.available:
        return None
    caveat = settings.caveat
    if fmt == "libvirt":  # QemuError (exit 2) above VL 2048: libvirt has no feature for it
        note = "" if caveat is None else f"<!-- {xml_comment('vlcalc: ' + caveat)} -->\n"
        return note + libvirt_xml(settings.vls) + "\n"
    note = "" if caveat is None else f"# vlcalc: {caveat}\n"
    if fmt == "qemu":  # QemuError (exit 2) above VL 2048: QEMU has no property for it
        return note + f"-cpu {qemu_cpu(settings.vls)}\n"
    return note + settings.kvm + "\n"


def xml_comment(text: str) -> str:
    """Text that is safe inside ``<!-- -->``: no ``--`` and no trailing ``-``."""
    while "--" in text:
        text = text.replace("--", "- -")
    return text + " " if text.endswith("-") else text


def render_report(view: ReportView, fmt: str) -> str | None:
    """Plain-text formats as a string; ``None`` for ``table`` (printed with rich) and for a
    settings format when no node was probed (the caller reports that as an error)."""
    if fmt == "json":
        return as_json(report_json(view))
    if fmt == "markdown":
        return report_markdown(view)
    if fmt == "html":
        from vlcalc.html import render_html

        return render_html(view)
    if fmt in SETTINGS_FORMATS:
        return settings_text(view, fmt)
    return None


# -- rich table -----------------------------------------------------------------------------------
def _headline(view: ReportView) -> Text:
    from rich.text import Text

    headline, completeness = view.headline, view.completeness
    text = Text()
    text.append("Cluster VL set: ", style="bold")
    style = "bold green" if headline.vls else "bold yellow" if headline.known else "bold red"
    text.append(headline.title, style=style)
    text.append(f"  ({headline.detail})")
    text.append("\n")
    text.append(completeness.text, style="" if completeness.complete else "red")
    if headline.naive_text is not None:
        text.append("\n" + headline.naive_text, style="yellow")
    if headline.requirement_text is not None:
        met = headline.requirement_met
        text.append("\n" + headline.requirement_text, style="green" if met else "bold red")
    return text


def _matrix(view: ReportView) -> Table:
    from rich.table import Table
    from rich.text import Text

    matrix = view.matrix
    table = Table(
        title="Nodes x vector lengths (● offered, · not, ? unknown)", title_justify="left"
    )
    table.add_column("Nodes" if matrix.grouped else "Node", overflow="fold")
    table.add_column("Status")
    for vl in matrix.columns:
        table.add_column(
            str(vl), justify="center", style="green" if vl in matrix.in_cluster else None
        )
    table.add_column("Limits / error", overflow="fold")
    table.caption = matrix.hidden_text
    table.caption_justify = "left"
    for row in matrix.rows:
        label = row.label if len(row.names) == 1 else f"{row.label}: {shorten(row.names)}"
        style = "red" if row.vls is None else "yellow" if row.limits else ""
        table.add_row(
            Text(label),
            Text(row.status, style=style),
            *(_CELL[cell] for cell in row.cells),
            Text(row.detail),
        )
    return table


def _limits(view: ReportView) -> Text | Group:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if not view.limits:
        return Text("Limits: none — every node offers the same set\n", style="green")
    # A grid gives each message a hanging indent, however narrow the terminal.
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for limit in view.limits:
        label = f"  • {limit.kind}:" if limit.binding else f"  • then {limit.kind}:"
        grid.add_row(Text(label, style="bold"), Text(limit.message))
    return Group(Text("Why the set is not larger:", style="bold"), grid, Text(""))


def _settings(view: ReportView) -> Text:
    from rich.text import Text

    settings = view.settings
    text = Text()
    if not settings.available:
        text.append("No settings: no node was probed, so the cluster set is unknown.\n", "bold red")
        return text
    text.append("Settings that give a guest exactly this set on every node:\n", style="bold")
    if settings.caveat is not None:
        text.append(f"  {settings.caveat}\n", style="bold red")
    text.append("  QEMU     ", style="bold")
    text.append(_NO_QEMU if settings.qemu is None else settings.qemu + "\n")
    text.append("  KVM      ", style="bold")
    text.append(settings.kvm + "\n")
    text.append("  libvirt\n", style="bold")
    for line in (settings.libvirt or _NO_QEMU.strip()).splitlines():
        text.append(f"    {line}\n")
    return text


_NO_QEMU = f"none: the set goes above VL {QEMU_MAX_VL}, which QEMU and libvirt cannot name\n"


def _ladder(view: ReportView) -> Table:
    from rich.table import Table
    from rich.text import Text

    total = view.completeness.total
    table = Table(
        title="Capacity ladder: each VL set and the nodes that accept it", title_justify="left"
    )
    table.add_column("Max VL", justify="right")
    table.add_column("VL set")
    table.add_column("Nodes", justify="right")
    table.add_column("Which", overflow="fold")
    for rung in view.ladder[:LADDER_SHOWN]:
        table.add_row(
            str(rung.vls.max_vl),
            str(rung.vls),
            f"{len(rung.nodes)} of {total}",
            Text(shorten(rung.nodes)),
        )
    return table


def _profiles(view: ReportView) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title="Profiles: nodes with the same KVM VL set, kernel and CPU", title_justify="left"
    )
    for column in ("Nodes", "VL set", "Kernel", "CPU", "Which"):
        table.add_column(column, justify="right" if column == "Nodes" else "left", overflow="fold")
    for profile in view.profiles[:PROFILES_SHOWN]:
        table.add_row(
            str(len(profile.names)),
            "unknown" if profile.vls is None else str(profile.vls),
            Text(profile.kernel or "?"),
            Text(profile.cpu_model or "?"),
            Text(shorten(profile.names)),
        )
    return table


def print_report(view: ReportView, console: Console) -> None:
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [_headline(view)]
    if view.excluded_text is not None:
        parts.append(Text(view.excluded_text, style="cyan"))
    parts += [Text(""), _matrix(view), Text(""), _limits(view)]
    if view.target_text is not None:
        parts.append(Text(view.target_text + "\n", style="cyan"))
    parts.append(_settings(view))
    if len(view.ladder) > 1:
        parts.append(_ladder(view))
    if view.profiles_useful:
        parts.append(_profiles(view))
    console.print(Group(*parts))


# -- drift ----------------------------------------------------------------------------------------
def _labelled(vls: VLSet, completeness: Completeness) -> str:
    """A cluster set with its basis: a set from incomplete data never looks like a known one."""
    if completeness.state == "none":
        return "unknown (no node probed)"
    shown = str(vls) if vls else "SVE off"
    if completeness.complete:
        return shown
    return f"{shown} (incomplete: {completeness.unprobed} of {completeness.total} not probed)"


def render_diff(drift: Drift, fmt: str) -> str:
    if fmt == "json":
        return as_json(diff_json(drift))
    heading = "#" if fmt == "markdown" else "=="
    esc = md if fmt == "markdown" else printable
    old_state, new_state = drift.completeness()

    def fmt_vls(vls: VLSet | None) -> str:
        return "unknown" if vls is None else str(vls) if vls else "none"

    verdict = ""
    if drift.certain_loss or (drift.complete and drift.shrank):
        verdict = f" (SHRANK: lost {drift.lost})"
    elif not drift.known:
        sides = [
            name for name, r in (("old", drift.old), ("new", drift.new)) if not r.answer.probed
        ]
        views = " and ".join(sides) + (" views" if len(sides) > 1 else " view")
        verdict = f" (not comparable: no node was probed in the {views})"
    elif not drift.complete:
        verdict = " (not comparable: a set from incomplete data may be too large)"
    lines = [
        f"{heading} Cluster VL set: {_labelled(drift.old.answer.vls, old_state)} -> "
        f"{_labelled(drift.new.answer.vls, new_state)}{verdict}",
        "",
    ]
    if not drift.complete and not drift.common_nodes:
        lines += ["Like with like: no node was probed in both views", ""]
    elif not drift.complete:
        common_lost = VLSet(drift.common_old.mask & ~drift.common_new.mask)
        lines += [
            f"Like with like, the {drift.common_nodes} nodes probed in both: "
            f"{fmt_vls(drift.common_old)} -> {fmt_vls(drift.common_new)}"
            + (f" (lost {common_lost})" if common_lost else ""),
            "",
        ]
    for title, items in (("Added", drift.added), ("Removed", drift.removed)):
        lines.append(f"{title}: {len(items)}")
        lines += [f"- {esc(node.name)}: {fmt_vls(node.vls)}" for node in items]
    lines.append(f"Changed: {len(drift.changed)}")
    lines += [
        f"- {esc(new.name)}: {fmt_vls(old.vls)} -> {fmt_vls(new.vls)}"
        + (
            f" (kernel {esc(old.kernel or '?')} -> {esc(new.kernel or '?')})"
            if old.kernel != new.kernel
            else ""
        )
        for old, new in drift.changed
    ]
    return "\n".join(lines) + "\n"


def _check_title(result: CheckResult) -> str:
    spec = result.spec
    if spec.syntax == "vls":
        return f"Can a guest with VL set {spec.fixed} run here?"
    return f"Can a guest started with {spec.syntax} {printable(spec.text)!r} run here?"


def check_advice(result: CheckResult) -> str:
    """The line under a check: the settings to use, or why the spec is not migration-safe;
    labelled INCOMPLETE when some node was not probed (its verdict and set are unknown)."""
    unknown, total = result.count(Verdict.UNKNOWN), len(result.verdicts)
    if unknown == total:
        return f"unknown: no node was probed ({total} not probed)"
    caveat = (
        f" (INCOMPLETE: {unknown} of {total} nodes not probed; they may reject this guest or "
        "give it another set)"
        if unknown
        else ""
    )
    divergence = result.divergence()
    if divergence is not None:
        pin = settings_or_none(result.pin)["qemu"]
        return divergence + (f"; pin one set on every node with -cpu {pin}" if pin else "") + caveat
    sets = result.guest_sets()
    if not sets:
        return "no probed node runs this guest" + caveat
    qemu = settings_or_none(sets[0][0])["qemu"]
    pinned = f"-cpu {qemu}" if qemu else _NO_QEMU.strip()
    if result.spec.host_dependent:
        return (
            f"every probed node gives the same set today, but it depends on the host: pin it "
            f"({pinned}){caveat}"
        )
    return f"use {pinned}{caveat}"


def print_check(result: CheckResult, console: Console) -> None:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=_check_title(result), title_justify="left")
    table.add_column("Node", overflow="fold")
    table.add_column("Verdict")
    qemu = result.spec.props is not None
    if qemu:
        table.add_column("Guest set")
    table.add_column("Reason", overflow="fold")
    styles = {Verdict.ACCEPT: "green", Verdict.REJECT: "bold red", Verdict.UNKNOWN: "yellow"}
    for item in result.verdicts:
        guest = [Text("-" if item.guest is None else str(item.guest))] if qemu else []
        table.add_row(
            Text(item.node.name),
            Text(item.verdict, style=styles[item.verdict]),
            *guest,
            Text(item.reason),
        )
    summary = Text(
        f"{result.count(Verdict.ACCEPT)} accept, {result.count(Verdict.REJECT)} reject, "
        f"{result.count(Verdict.UNKNOWN)} unknown; "
    )
    fine = result.migration_safe and not result.count(Verdict.UNKNOWN)
    summary.append(check_advice(result) + "\n", style="" if fine else "bold red")
    console.print(Group(table, summary))


def render_check(result: CheckResult, fmt: str) -> str | None:
    if fmt == "json":
        return as_json(check_json(result))
    if fmt == "markdown":
        lines = [
            f"# Migration check: {md(_check_title(result))}",
            "",
            "| Node | Verdict | Guest set | Reason |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {md(i.node.name)} | {i.verdict} | {'-' if i.guest is None else i.guest} "
            f"| {md(i.reason)} |"
            for i in result.verdicts
        ]
        lines += ["", md(check_advice(result))]
        return "\n".join(lines) + "\n"
    return None


# -- markdown -------------------------------------------------------------------------------------
# Every ASCII punctuation character that starts or ends Markdown syntax in CommonMark or GFM
# (emphasis, code, links, images, HTML, entities, tables, strikethrough, math, mentions, emoji
# shortcodes, autolinks); CommonMark lets a backslash escape any of them.  Left alone, because
# they mean nothing inside a line of text: - . , / ' ; = ? %
_MD_SPECIAL = re.compile(r"""([\\`*_{}\[\]<>()#+!|~&$@:^"])""")


def md(text: str | None) -> str:
    """Text from nodes or inventories for Markdown (a table cell or a line): made printable (no
    newline can end the cell or the line), then every syntax character backslash-escaped.

    >>> md("evil|name*<b>")
    'evil\\\\|name\\\\*\\\\<b\\\\>'
    """
    return _MD_SPECIAL.sub(r"\\\1", printable(text or ""))


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def report_markdown(view: ReportView) -> str:
    headline, matrix, settings = view.headline, view.matrix, view.settings
    out = ["# vlcalc report", ""]
    out.append(f"**{view.title}** ({headline.detail})")
    out += ["", view.completeness.text + "."]
    if headline.naive_text is not None:
        out.append(headline.naive_text + ".")
    if headline.requirement_text is not None:
        out.append(headline.requirement_text + ".")
    if view.excluded_text is not None:
        out += ["", md(view.excluded_text)]
    header = ["Nodes" if matrix.grouped else "Node", "Status", *map(str, matrix.columns)]
    header.append("Limits / error")
    out += ["", "## Nodes", "", _md_row(header), _md_row(["---"] * len(header))]
    for row in matrix.rows:
        label = row.label if len(row.names) == 1 else f"{row.label}: {shorten(row.names)}"
        cells = [md(label), md(row.status), *(_MD_CELL[cell] for cell in row.cells)]
        out.append(_md_row([*cells, md(row.detail)]))
    if matrix.hidden_text is not None:
        out += ["", md(matrix.hidden_text)]
    out += ["", "## Limits", ""]
    out += [
        f"- {'' if limit.binding else 'then '}**{limit.kind}**: {md(limit.message)}"
        for limit in view.limits
    ] or ["- none"]
    if view.target_text is not None:
        out += ["", "## Target", "", md(view.target_text)]
    out += ["", "## Settings", ""]
    if not settings.available:
        out.append("No settings: no node was probed, so the cluster set is unknown.")
    else:
        if settings.caveat is not None:
            out += [f"> **{settings.caveat}**", ""]
        qemu = _NO_QEMU.strip() if settings.qemu is None else settings.qemu
        out += ["```", qemu, settings.kvm, "```", "", "```xml", settings.libvirt or "", "```"]
    total = view.completeness.total
    out += ["", "## Ladder", ""]
    if not view.ladder:
        out.append("No probed node offers SVE: there is no VL set to choose.")
    else:
        out += [_md_row(["Max VL", "VL set", "Nodes"]), _md_row(["---"] * 3)]
        out += [
            _md_row([str(rung.vls.max_vl), str(rung.vls), f"{len(rung.nodes)} of {total}"])
            for rung in view.ladder[:LADDER_SHOWN]
        ]
    if len(view.ladder) > LADDER_SHOWN:
        out += ["", f"… and {len(view.ladder) - LADDER_SHOWN} smaller sets (see the JSON report)."]
    return "\n".join(out) + "\n"
