"""Rendering reports and checks for people and for other programs.

Node names, hostnames and messages come from inventories and from nodes: they are always passed to
rich as :class:`rich.text.Text` (never parsed as markup) and escaped in Markdown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from vlcalc.documents import NodeRecord
from vlcalc.model import printable
from vlcalc.qemu import QEMU_MAX_VL, libvirt_xml, qemu_cpu
from vlcalc.report import (
    CheckResult,
    Drift,
    Report,
    check_json,
    diff_json,
    profiles,
    report_json,
    settings_or_none,
    vl_columns,
)
from vlcalc.vl import VLSet

FORMATS = ("table", "json", "markdown", "html", "qemu", "libvirt", "kvm")
CHECK_FORMATS = ("table", "json", "markdown")
DIFF_FORMATS = CHECK_FORMATS
PROFILE_THRESHOLD = 40  # above this many nodes, the matrix shows one row per distinct set
_HAVE, _LACK = "●", "·"


@contextmanager
def scan_progress(total: int) -> Iterator[Callable[[Any], None]]:
    """A progress bar on stderr while scanning, hidden when stderr is not a terminal; yields the
    function to call as each node finishes."""
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
    return Console(
        file=file, markup=False, emoji=False, highlight=False, width=width, soft_wrap=False
    )


_ENCODE = json.JSONEncoder(separators=(", ", ": "), check_circular=False).encode  # C; trees only


def as_json(document: dict[str, Any]) -> str:
    """JSON for people and for ``jq``: each top-level field on its own line, one line per member
    of an object field and per item of a list field.  (``json.dumps(indent=...)`` takes the
    pure-Python encoder, several seconds for a 100,000-node report.)"""
    fields = []
    for key, value in document.items():
        if isinstance(value, list) and value:
            body = ",\n    ".join(map(_ENCODE, value))
            fields.append(f"  {_ENCODE(key)}: [\n    {body}\n  ]")
        elif isinstance(value, dict) and value:
            body = ",\n    ".join(f"{_ENCODE(k)}: {_ENCODE(v)}" for k, v in value.items())
            fields.append(f"  {_ENCODE(key)}: {{\n    {body}\n  }}")
        else:
            fields.append(f"  {_ENCODE(key)}: {_ENCODE(value)}")
    return "{\n" + ",\n".join(fields) + "\n}\n"


def kvm_text(vls: VLSet) -> str:
    return "KVM_REG_ARM64_SVE_VLS = " + " ".join(vls.hex_words()) + "\n"


def render_report(report: Report, fmt: str) -> str | None:
    """Plain-text formats as a string; ``None`` for ``table`` (printed with rich)."""
    answer = report.answer
    if fmt == "json":
        return as_json(report_json(report))
    if fmt == "markdown":
        return report_markdown(report)
    if fmt == "html":
        from vlcalc.html import render_html

        return render_html(report_json(report))
    if fmt == "qemu":  # QemuError (exit 2) above VL 2048: QEMU has no property for it
        return f"-cpu {qemu_cpu(answer.vls)}\n"
    if fmt == "libvirt":
        return libvirt_xml(answer.vls) + "\n"
    if fmt == "kvm":
        return kvm_text(answer.vls)
    return None


# -- rich table -----------------------------------------------------------------------------------
def _names(names: Sequence[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... (+{len(names) - most})" if len(names) > most else "")


def _headline(report: Report) -> Text:
    answer = report.answer
    text = Text()
    text.append("Cluster VL set: ", style="bold")
    if answer.vls:
        text.append(str(answer.vls), style="bold green")
        text.append(f"  (max VL {answer.vls.max_vl} bits)")
    else:
        text.append("SVE off", style="bold yellow")
        text.append("  (no VL set runs on every node)")
    text.append(f"\n{answer.probed} of {len(report.nodes)} nodes probed")
    if not answer.complete:
        text.append(
            f"; {len(answer.unprobed)} not probed: the answer may be too large", style="red"
        )
    if answer.naive_differs:
        text.append(
            f"\nThe plain intersection would be {answer.naive_intersection} — wrong: KVM gives a "
            "guest only a prefix of each host's set",
            style="yellow",
        )
    if report.require_vl is not None:
        met = report.requirement_met
        text.append(
            f"\nRequired VL {report.require_vl}: {'met' if met else 'NOT met'}",
            style="green" if met else "bold red",
        )
    return text


def _matrix(report: Report) -> Table:
    columns = vl_columns(report.nodes)
    in_cluster = set(report.answer.vls.vls())
    blamed = report.limiting()
    grouped = len(report.nodes) > PROFILE_THRESHOLD
    table = Table(title="Nodes x vector lengths (● offered, · not)", title_justify="left")
    table.add_column("Nodes" if grouped else "Node", overflow="fold")
    table.add_column("Status")
    for vl in columns:
        table.add_column(str(vl), justify="center", style="green" if vl in in_cluster else None)
    table.add_column("Limits / error", overflow="fold")
    # Large fleets: one row per identical (status, set, limits, error kind), so 1,000 nodes with a
    # few hardware profiles stay a few rows.
    rows: dict[tuple[str, int, str], list[NodeRecord]] = {}
    for node in report.nodes:
        mask = -1 if node.vls is None else node.vls.mask
        detail = (
            (node.error_kind if grouped else f"{node.error_kind}: {node.error_message}")
            if node.error_kind
            else ", ".join(blamed.get(node.name, []))
        )
        key = (node.status, mask, detail) if grouped else (node.name, mask, detail)
        rows.setdefault(key, []).append(node)
    for (_, mask, detail), members in rows.items():
        names = [node.name for node in members]
        label = f"{len(names)}: {_names(names)}" if grouped else names[0]
        status = members[0].status
        cells = [_HAVE if mask >= 0 and vl in VLSet(mask) else _LACK for vl in columns]
        style = "red" if status == "error" else "yellow" if blamed.get(names[0]) else ""
        table.add_row(Text(label), Text(status, style=style), *cells, Text(detail))
    return table


def _limits(report: Report) -> Text | Group:
    if not report.answer.limits:
        return Text("Limits: none — every node offers the same set\n", style="green")
    # A grid gives each message a hanging indent, however narrow the terminal.
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for limit in report.answer.limits:
        label = f"  • {limit.kind}:" if limit.binding else f"  • then {limit.kind}:"
        grid.add_row(Text(label, style="bold"), Text(limit.message))
    return Group(Text("Why the set is not larger:", style="bold"), grid, Text(""))


def _settings(vls: VLSet) -> Text:
    settings = settings_or_none(vls)
    text = Text()
    text.append("Settings that give a guest exactly this set on every node:\n", style="bold")
    text.append("  QEMU     ", style="bold")
    text.append(f"-cpu {settings['qemu']}\n" if settings["qemu"] else _NO_QEMU)
    text.append("  KVM      ", style="bold")
    text.append(kvm_text(vls))
    text.append("  libvirt\n", style="bold")
    for line in (settings["libvirt"] or _NO_QEMU.strip()).splitlines():
        text.append(f"    {line}\n")
    return text


_NO_QEMU = f"none: the set goes above VL {QEMU_MAX_VL}, which QEMU and libvirt cannot name\n"


def _ladder(report: Report, most: int = 8) -> Table:
    total = report.answer.probed
    table = Table(
        title="Capacity ladder: each VL set and the nodes that accept it", title_justify="left"
    )
    table.add_column("Max VL", justify="right")
    table.add_column("VL set")
    table.add_column("Nodes", justify="right")
    table.add_column("Which", overflow="fold")
    for rung in report.answer.ladder[:most]:
        table.add_row(
            str(rung.vls.max_vl),
            str(rung.vls),
            f"{len(rung.nodes)}/{total}",
            Text(_names(rung.nodes)),
        )
    return table


def _profiles(report: Report, most: int = 12) -> Table:
    table = Table(
        title="Profiles: nodes with the same KVM VL set, kernel and CPU", title_justify="left"
    )
    for column in ("Nodes", "VL set", "Kernel", "CPU", "Which"):
        table.add_column(column, justify="right" if column == "Nodes" else "left", overflow="fold")
    for item in profiles(report.nodes)[:most]:
        vls = "error" if item["vls"] is None else str(VLSet.from_vls(item["vls"]))
        table.add_row(
            str(item["count"]),
            vls,
            Text(item["kernel"] or "?"),
            Text(item["cpu_model"] or "?"),
            Text(_names(item["nodes"], 4)),
        )
    return table


def plan_text(report: Report) -> str:
    """The ``--target-vl`` answer in words (for the table and Markdown)."""
    plan = report.plan
    if plan is None:
        return ""
    if not plan.keep:
        return f"No node offers VL {plan.vl}: no drain reaches it."
    text = (
        f"To reach VL {plan.vl}: keep {len(plan.keep)} nodes (set {plan.vls_after}) and drain or "
        f"move {len(plan.drain)}"
    )
    text += f": {_names(plan.drain, 12)}." if plan.drain else " — none, it is reached already."
    if plan.unknown:
        text += f" Not counted, unprobed: {_names(plan.unknown)}."
    return text


def print_report(report: Report, console: Console) -> None:
    parts: list[Any] = [_headline(report)]
    if report.excluded:
        parts.append(
            Text(
                f"What-if: without {len(report.excluded)} excluded nodes: "
                f"{_names(report.excluded)}",
                style="cyan",
            )
        )
    parts += [Text(""), _matrix(report), Text(""), _limits(report)]
    if report.plan is not None:
        parts.append(Text(plan_text(report) + "\n", style="cyan"))
    parts.append(_settings(report.answer.vls))
    if len(report.answer.ladder) > 1:
        parts.append(_ladder(report))
    if len(profiles(report.nodes)) < len(report.nodes):
        parts.append(_profiles(report))
    console.print(Group(*parts))


# -- drift ----------------------------------------------------------------------------------------
def render_diff(drift: Drift, fmt: str) -> str:
    if fmt == "json":
        return as_json(diff_json(drift))
    doc = diff_json(drift)
    cluster = doc["cluster"]
    heading = "#" if fmt == "markdown" else "=="

    def fmt_vls(vls: list[int] | None) -> str:
        return "error" if vls is None else str(VLSet.from_vls(vls))

    def esc(text: str) -> str:
        return md(text) if fmt == "markdown" else printable(text)

    lines = [
        f"{heading} Cluster VL set: {fmt_vls(cluster['old'])} -> {fmt_vls(cluster['new'])}"
        + (f" (SHRANK: lost {fmt_vls(cluster['lost'])})" if cluster["shrank"] else ""),
        "",
    ]
    for title, items in (("Added", doc["added"]), ("Removed", doc["removed"])):
        lines.append(f"{title}: {len(items)}")
        lines += [f"- {esc(item['name'])}: {fmt_vls(item['vls'])}" for item in items]
    lines.append(f"Changed: {len(doc['changed'])}")
    lines += [
        f"- {esc(item['name'])}: {fmt_vls(item['old']['vls'])} -> {fmt_vls(item['new']['vls'])}"
        + (
            f" (kernel {esc(item['old']['kernel'] or '?')} -> {esc(item['new']['kernel'] or '?')})"
            if item["old"]["kernel"] != item["new"]["kernel"]
            else ""
        )
        for item in doc["changed"]
    ]
    return "\n".join(lines) + "\n"


def _check_title(result: CheckResult) -> str:
    spec = result.spec
    if spec.syntax == "vls":
        return f"Can a guest with VL set {spec.fixed} run here?"
    return f"Can a guest started with {spec.syntax} {printable(spec.text)!r} run here?"


def check_advice(result: CheckResult) -> str:
    """The line under a check: the settings to use, or why the spec is not migration-safe."""
    divergence = result.divergence()
    if divergence is not None:
        pin = settings_or_none(result.pin)["qemu"]
        return divergence + (f"; pin one set on every node with -cpu {pin}" if pin else "")
    sets = result.guest_sets()
    if not sets:
        return "no node runs this guest"
    qemu = settings_or_none(sets[0][0])["qemu"]
    pinned = f"-cpu {qemu}" if qemu else _NO_QEMU.strip()
    if result.spec.host_dependent:
        return f"every node gives the same set today, but it depends on the host: pin it ({pinned})"
    return f"use {pinned}"


def print_check(result: CheckResult, console: Console) -> None:
    table = Table(title=_check_title(result), title_justify="left")
    table.add_column("Node", overflow="fold")
    table.add_column("Verdict")
    qemu = result.spec.props is not None
    if qemu:
        table.add_column("Guest set")
    table.add_column("Reason", overflow="fold")
    styles = {"accept": "green", "reject": "bold red", "unknown": "yellow"}
    for item in result.verdicts:
        guest = [Text("-" if item.guest is None else str(item.guest))] if qemu else []
        table.add_row(
            Text(item.node.name),
            Text(item.verdict, style=styles[item.verdict]),
            *guest,
            Text(item.reason),
        )
    summary = Text(
        f"{result.count('accept')} accept, {result.count('reject')} reject, "
        f"{result.count('unknown')} unknown; "
    )
    summary.append(check_advice(result) + "\n", style="" if result.migration_safe else "bold red")
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
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def md(text: str | None) -> str:
    """Escape text from nodes or inventories for a Markdown table cell."""
    return _MD_SPECIAL.sub(r"\\\1", text or "")


def report_markdown(report: Report) -> str:
    answer = report.answer
    settings = settings_or_none(answer.vls)
    columns = vl_columns(report.nodes)
    blamed = report.limiting()
    out = ["# vlcalc report", ""]
    if answer.vls:
        out.append(f"**Cluster VL set: {answer.vls}** (max VL {answer.vls.max_vl} bits)")
    else:
        out.append("**Cluster VL set: SVE off** (no VL set runs on every node)")
    out.append("")
    out.append(
        f"{answer.probed} of {len(report.nodes)} nodes probed"
        + ("" if answer.complete else "; the answer may be too large")
        + "."
    )
    if answer.naive_differs:
        out.append(
            f"The plain intersection would be {answer.naive_intersection}, which KVM "
            "would reject: a guest gets only a prefix of each host's set."
        )
    out += [
        "",
        "## Nodes",
        "",
        "| Node | Status | " + " | ".join(map(str, columns)) + " | Limits / error |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    for node in report.nodes:
        cells = [("x" if node.vls is not None and vl in node.vls else " ") for vl in columns]
        detail = (
            f"{node.error_kind}: {node.error_message}"
            if node.error_kind
            else ", ".join(blamed.get(node.name, []))
        )
        out.append(
            f"| {md(node.name)} | {node.status} | " + " | ".join(cells) + f" | {md(detail)} |"
        )
    out += ["", "## Limits", ""]
    out += [
        f"- {'' if limit.binding else 'then '}**{limit.kind}**: {md(limit.message)}"
        for limit in answer.limits
    ] or ["- none"]
    if report.plan is not None:
        out += ["", "## Target", "", md(plan_text(report))]
    out += [
        "",
        "## Settings",
        "",
        "```",
        f"-cpu {settings['qemu']}" if settings["qemu"] else _NO_QEMU.strip(),
        kvm_text(answer.vls).rstrip(),
        "```",
        "",
        "```xml",
        settings["libvirt"] or "",
        "```",
        "",
        "## Ladder",
        "",
        "| Max VL | VL set | Nodes |",
        "|---|---|---|",
    ]
    out += [f"| {rung.vls.max_vl} | {rung.vls} | {len(rung.nodes)} |" for rung in answer.ladder]
    return "\n".join(out) + "\n"
