"""The self-contained HTML capacity-planning report.

:func:`render_html` formats a :class:`vlcalc.report.ReportView`
(``build_view(build_report(nodes))``) as one HTML page that needs nothing else: inline CSS,
inline SVG, no JavaScript, no network, and a Content-Security-Policy that forbids everything but
inline styles and ``data:`` images.
:func:`render_html_groups` puts several views (``--per-group``) on one such page, a section each.

Every string from an inventory or a node (names, groups, kernels, CPU models, error messages) is
untrusted: each one goes through :func:`_text` (:func:`vlcalc.model.printable`, then
``html.escape(..., quote=True)``) before it reaches the page, in element text, in attributes and
in SVG alike.

Example::

    page = render_html(build_view(build_report(nodes)))
    Path("sve-report.html").write_text(page, encoding="utf-8")
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from vlcalc.model import Status, printable
from vlcalc.qemu import QEMU_MAX_VL
from vlcalc.report import (
    ERRORS_SHOWN,
    LADDER_SHOWN,
    PROFILES_SHOWN,
    ReportView,
    plural,
    shorten,
)
from vlcalc.vl import VLSet

__all__ = ["CSP", "render_html", "render_html_groups"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#d9dee5;--bg:#f5f7fa;--card:#fff;
--green:#2f9e44;--green-soft:#e6f4ea;--grey:#aab4c0;--red:#c92a2a;--red-soft:#fdecec;
--amber:#b7791f;--amber-soft:#fff4e0;--blue:#51627a}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans","DejaVu Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 48px}
h1{font-size:22px;margin:0 0 4px;font-weight:650}
h2{font-size:16px;margin:0 0 12px;font-weight:650}
p{margin:6px 0}
.sub{color:var(--muted);margin:0 0 20px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:18px 22px;margin:0 0 18px}
.headline{display:flex;flex-wrap:wrap;gap:18px 40px;align-items:flex-start}
.answer .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.06em}
.answer .set{font-size:30px;font-weight:700;color:var(--green);line-height:1.2}
.answer .set.off{color:var(--amber)}
.stats{display:flex;gap:10px;flex-wrap:wrap}
.stat{border:1px solid var(--line);border-radius:6px;padding:6px 12px;min-width:84px}
.stat b{display:block;font-size:18px}
.stat span{color:var(--muted);font-size:12px}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;
white-space:nowrap}
.ok{background:var(--green-soft);color:#1e6b2f}
.bad{background:var(--red-soft);color:var(--red)}
.warn{background:var(--amber-soft);color:#8a5a12}
.info{background:#eef1f5;color:var(--blue)}
.note{margin-top:12px;padding:8px 12px;border-left:3px solid var(--amber);
background:var(--amber-soft);border-radius:0 6px 6px 0}
.note.bad{border-color:var(--red);background:var(--red-soft);color:var(--ink)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600}
th.vl{text-align:center;width:46px}
th.vl.in{color:var(--green)}
td.vl{text-align:center;padding:4px 3px}
.cell{display:inline-block;width:30px;height:18px;border-radius:4px;vertical-align:middle}
.c-in{background:var(--green)}
.c-out{background:var(--grey)}
.c-no{border:1px dashed var(--line)}
.c-err{background:repeating-linear-gradient(45deg,#f3c1c1 0 4px,#fbe3e3 4px 8px)}
tr.err td{background:var(--red-soft)}
tr.err td.name{color:var(--red)}
td.name{font-weight:600;word-break:break-word;width:32%}
.meta{display:block;color:var(--muted);font-weight:400;font-size:12px}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:0 0 12px;color:var(--muted);font-size:12px}
.legend .cell{width:18px;height:12px;margin-right:5px}
pre{background:#f0f3f7;border:1px solid var(--line);border-radius:6px;padding:10px 12px;
margin:4px 0 14px;font:12.5px/1.45 ui-monospace,"DejaVu Sans Mono","Liberation Mono",monospace;
white-space:pre-wrap;word-break:break-all}
h3{font-size:13px;margin:8px 0 0;color:var(--muted);font-weight:600}
ul.limits{list-style:none;padding:0;margin:0}
ul.limits li{padding:8px 0;border-bottom:1px solid var(--line)}
ul.limits li:last-child{border-bottom:0}
.kind{font-weight:650;margin:0 6px}
.muted{color:var(--muted)}
footer{color:var(--muted);font-size:12px;text-align:center}
nav ul{margin:4px 0 0;padding-left:18px}
h2.group{font-size:19px;margin:26px 0 10px}
"""


def _text(value: object) -> str:
    """Untrusted text for HTML text or a quoted attribute: control and format characters (escape
    sequences, newlines, bidi overrides, zero-width characters) become ``?``, then
    ``html.escape``."""
    raw = "" if value is None else str(value)
    return html.escape(printable(raw), quote=True)


def _vl_set(vls: VLSet | None) -> str:
    """``128,256`` (as the CLI writes it); the empty set is ``none``, an unknown one ``unknown``."""
    if vls is None:
        return "unknown"
    return str(vls) if vls else "none"


# -- headline ------------------------------------------------------------------------------------
def _headline(view: ReportView, p: str) -> str:
    headline, completeness = view.headline, view.completeness
    css = "set" if headline.vls else "set off"
    answer = (
        f'<div class="{css}" id="{p}cluster-set">{_text(headline.title)}</div>'
        f'<div class="muted">{_text(headline.detail)}</div>'
    )
    badge = "ok" if completeness.complete else "bad"
    state = "complete" if completeness.complete else "incomplete"
    statuses = [node.status for node in view.nodes]
    stats = [
        (completeness.total, "nodes"),
        (statuses.count(Status.OK), "with SVE"),
        (statuses.count(Status.NO_SVE), "no SVE"),
        (completeness.unprobed, "not probed"),
    ]
    cards = "".join(
        f'<div class="stat"><b>{count}</b><span>{_text(label)}</span></div>'
        for count, label in stats
    )
    out = (
        f'<section id="{p}headline"><div class="headline">'
        f'<div class="answer"><div class="label">Cluster VL set</div>{answer}'
        f'<p id="{p}completeness"><span class="badge {badge}">{state} · '
        f"{_text(completeness.text)}</span></p></div>"
        f'<div class="stats">{cards}</div></div>'
    )
    notes = []
    if completeness.caveat is not None:
        notes.append(f'<p class="note bad" id="{p}caveat">{_text(completeness.caveat)}</p>')
    if headline.naive_text is not None:
        notes.append(f'<p class="note" id="{p}naive">{_text(headline.naive_text)}.</p>')
    if view.excluded_text is not None:
        notes.append(f'<p class="note" id="{p}excluded">{_text(view.excluded_text)}.</p>')
    if headline.requirement_text is not None:
        bad = "" if headline.requirement_met else " bad"
        notes.append(
            f'<p class="note{bad}" id="{p}requirement">{_text(headline.requirement_text)}</p>'
        )
    return out + "".join(notes) + "</section>"


# -- node x VL matrix ----------------------------------------------------------------------------
_CELL_TITLES = {
    "err": "unknown (not probed)",
    "no": "not offered",
    "in": "offered, in the cluster set",
    "out": "offered, not usable cluster-wide",
}
_STATUS_CSS = {"ok": "ok", "no-sve": "warn", "error": "bad"}


def _matrix(view: ReportView, p: str) -> str:
    matrix = view.matrix
    head = "".join(
        f'<th class="vl{" in" if vl in matrix.in_cluster else ""}">{vl}</th>'
        for vl in matrix.columns
    )
    body = []
    for row in matrix.rows:
        meta = (
            f'<span class="meta">{_text(shorten(row.names))}</span>' if len(row.names) > 1 else ""
        )
        if row.hardware:
            meta += f'<span class="meta">{_text(row.hardware)}</span>'
        cells = "".join(
            f'<td class="vl"><span class="cell c-{cell}" title="VL {vl}: {_CELL_TITLES[cell]}">'
            "</span></td>"
            for vl, cell in zip(matrix.columns, row.cells)
        )
        if row.error_kind is not None:
            detail = f'<span class="badge bad">{_text(row.error_kind)}</span>'
            if row.error_message is not None:
                detail += f" {_text(row.error_message)}"
        else:
            detail = " ".join(
                f'<span class="badge warn">{_text(kind)}</span>' for kind in row.limits
            )
        status_css = _STATUS_CSS.get(str(row.status), "info")
        body.append(
            f'<tr class="{"err" if row.vls is None else "node"}">'
            f'<td class="name"><span class="who">{_text(row.label)}</span>{meta}</td>'
            f'<td><span class="badge {status_css}">{_text(row.status)}</span></td>'
            f"{cells}<td>{detail}</td></tr>"
        )
    caption = (
        f"{matrix.total} nodes in {len(matrix.rows)} rows: identical nodes (same status, VL set "
        "and limits) share a row."
        if matrix.grouped
        else f"{matrix.total} nodes, one row each."
    ) + ("" if matrix.hidden_text is None else " " + _text(matrix.hidden_text))
    legend = (
        '<div class="legend">'
        '<span><span class="cell c-in"></span>offered, in the cluster set</span>'
        '<span><span class="cell c-out"></span>offered, not usable cluster-wide</span>'
        '<span><span class="cell c-no"></span>not offered</span>'
        '<span><span class="cell c-err"></span>node not probed (set unknown)</span>'
        "</div>"
    )
    return (
        f'<section id="{p}matrix"><h2>Nodes &times; vector lengths (bits)</h2>'
        f'<p class="muted">{caption}</p>{legend}'
        f'<table class="matrix"><thead><tr><th>{"Nodes" if matrix.grouped else "Node"}</th>'
        f"<th>Status</th>{head}<th>Limits / error</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></section>"
    )


# -- capacity ladder -----------------------------------------------------------------------------
def _ladder(view: ReportView, p: str) -> str:
    rungs = view.ladder
    total = view.completeness.total
    cluster_vls = view.headline.vls
    if not rungs:
        return (
            f'<section id="{p}ladder"><h2>Capacity ladder</h2>'
            '<p class="muted">No probed node offers SVE: there is no VL set to choose.</p>'
            "</section>"
        )
    shown = rungs[:LADDER_SHOWN]
    width, bar_width, row_height = 1000, 1000, 42
    height = row_height * len(shown) + 4
    bars = []
    for index, rung in enumerate(shown):
        y = index * row_height
        count = len(rung.nodes)
        length = 0 if total == 0 else round(bar_width * count / total, 1)
        is_cluster = rung.vls == cluster_vls
        fill = "#2f9e44" if is_cluster else "#7b8ba3"
        label = f"{_vl_set(rung.vls)} — {count} of {total} nodes"
        suffix = " (cluster set)" if is_cluster else ""
        tooltip = f"{label}: {shorten(rung.nodes, 12)}"
        bars.append(
            f'<g class="rung"><title>{_text(tooltip)}</title>'
            f'<text x="0" y="{y + 14}" font-size="13" fill="#1f2933">'
            f'<tspan font-weight="600">{_text(label)}</tspan>'
            f'<tspan fill="#2f9e44" font-weight="600">{suffix}</tspan></text>'
            f'<rect x="0" y="{y + 20}" width="{bar_width}" height="14" rx="3" fill="#eef1f5"/>'
            f'<rect x="0" y="{y + 20}" width="{length}" height="14" rx="3" fill="{fill}"/>'
            "</g>"
        )
    more = (
        f'<p class="muted">… and {len(rungs) - len(shown)} smaller candidate sets (see the JSON '
        "report).</p>"
        if len(rungs) > len(shown)
        else ""
    )
    whole = (
        "The green bar is the set the whole cluster accepts."
        if cluster_vls
        else "No set runs on every node: guests need sve=off."
    )
    unprobed = view.completeness.unprobed
    basis = (
        f" {unprobed} of the {total} nodes were not probed and count as not accepting."
        if unprobed
        else ""
    )
    return (
        f'<section id="{p}ladder"><h2>Capacity ladder</h2>'
        '<p class="muted">Every candidate VL set and how many nodes accept it (a node accepts a '
        f"set that is a prefix of its own): larger sets run on fewer nodes. {_text(whole)}"
        f"{_text(basis)}</p>"
        f'<svg class="ladder" role="img" aria-label="Capacity ladder" width="100%" '
        f'viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet">'
        f"{''.join(bars)}</svg>{more}</section>"
    )


# -- limits, errors, settings --------------------------------------------------------------------
_LIMIT_TITLES = {
    "max-vl": "smallest maximum",
    "divergence": "divergent VL",
    "no-sve": "no SVE",
    "unprobed": "not probed",
}


def _limits(view: ReportView, p: str) -> str:
    if not view.limits:
        return (
            f'<section id="{p}limits"><h2>What limits the set</h2>'
            '<p><span class="badge ok">none</span> every node offers the same set.</p></section>'
        )
    items = []
    for limit in view.limits:
        badge = (
            '<span class="badge bad">binding</span>'
            if limit.binding
            else '<span class="badge info">not binding</span>'
        )
        title = _LIMIT_TITLES.get(limit.kind, limit.kind)
        later = (
            ""
            if limit.binding
            else '<span class="meta">applies once the nodes without SVE are gone</span>'
        )
        items.append(
            f'<li class="limit">{badge}<span class="kind">{_text(title)}</span>'
            f'<span class="muted">({_text(limit.kind)})</span><br>{_text(limit.message)}'
            f"{later}</li>"
        )
    return (
        f'<section id="{p}limits"><h2>What limits the set</h2>'
        f'<ul class="limits">{"".join(items)}</ul></section>'
    )


def _errors(view: ReportView, p: str) -> str:
    failed = view.errors
    if not failed:
        return ""
    rows = [
        f'<tr class="err"><td class="name">{_text(node.name)}</td>'
        f'<td><span class="badge bad">{_text(node.error_kind)}</span></td>'
        f"<td>{_text(node.error_message)}</td></tr>"
        for node in failed[:ERRORS_SHOWN]
    ]
    more = (
        f'<p class="muted">… and {len(failed) - ERRORS_SHOWN} more nodes not probed (see the JSON '
        "report).</p>"
        if len(failed) > ERRORS_SHOWN
        else ""
    )
    return (
        f'<section id="{p}errors"><h2>Nodes not probed ({len(failed)})</h2>'
        "<table><thead><tr><th>Node</th><th>Error</th><th>Message</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{more}</section>"
    )


_NO_QEMU = f"none: the set goes above VL {QEMU_MAX_VL}, which QEMU and libvirt cannot name"


def _settings(view: ReportView, p: str) -> str:
    settings = view.settings
    title = "<h2>Settings that give a guest exactly this set on every node</h2>"
    if not settings.available:
        return (
            f'<section id="{p}settings">{title}<p class="note bad">No settings: no node was '
            "probed, so the cluster set is unknown.</p></section>"
        )
    caveat = (
        ""
        if settings.caveat is None
        else f'<p class="note bad" id="{p}settings-caveat">{_text(settings.caveat)}</p>'
    )
    return (
        f'<section id="{p}settings">{title}{caveat}'
        f'<h3>QEMU</h3><pre id="{p}qemu">{_text(settings.qemu or _NO_QEMU)}</pre>'
        # vlcalc's own XML, lines and all: escaped, not made printable.
        f'<h3>libvirt</h3><pre id="{p}libvirt">{html.escape(settings.libvirt or _NO_QEMU)}</pre>'
        f'<h3>KVM</h3><pre id="{p}kvm">{_text(settings.kvm)}</pre></section>'
    )


def _profiles(view: ReportView, p: str) -> str:
    if not view.profiles_useful:
        return ""
    rows = []
    for profile in view.profiles[:PROFILES_SHOWN]:
        rows.append(
            f'<tr class="{"err" if profile.vls is None else "profile"}">'
            f"<td>{_text(_vl_set(profile.vls))}</td>"
            f"<td>{_text(profile.cpu_model or '—')}</td>"
            f"<td>{_text(profile.kernel or '—')}</td>"
            f"<td>{len(profile.names)}</td>"
            f"<td>{_text(shorten(profile.names))}</td></tr>"
        )
    more = (
        f'<p class="muted">… and {len(view.profiles) - PROFILES_SHOWN} smaller profiles (see the '
        "JSON report).</p>"
        if len(view.profiles) > PROFILES_SHOWN
        else ""
    )
    return (
        f'<section id="{p}profiles"><h2>Hardware profiles</h2>'
        '<p class="muted">Nodes with the same VL set, CPU model and kernel.</p>'
        "<table><thead><tr><th>VL set</th><th>CPU model</th><th>Kernel</th><th>Nodes</th>"
        f"<th>Which</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{more}</section>"
    )


def _target(view: ReportView, p: str) -> str:
    """``--target-vl``: the fewest nodes to drain so that the rest reach VL ``vl``."""
    plan = view.plan
    if plan is None:
        return ""
    if plan.keep:
        verdict = (
            '<p><span class="badge ok">reachable</span> '
            f"drain {_text(plural(len(plan.drain), 'node'))}"
            f" and the other {len(plan.keep)} run <b>{_text(_vl_set(plan.vls_after))}</b></p>"
        )
    else:
        verdict = f'<p><span class="badge bad">unreachable</span> no node offers VL {plan.vl}</p>'
    rows = "".join(
        f"<tr><th>{label}</th><td>{len(names)}</td><td>{_text(shorten(names, 8))}</td></tr>"
        for label, names in (("keep", plan.keep), ("drain", plan.drain), ("unknown", plan.unknown))
        if names
    )
    table = f"<table><tbody>{rows}</tbody></table>" if rows else ""
    return f'<section id="{p}target"><h2>Target VL {plan.vl}</h2>{verdict}{table}</section>'


def _sections(view: ReportView, p: str) -> str:
    parts = (_headline, _matrix, _ladder, _limits, _errors, _settings, _target, _profiles)
    return "\n".join(part for part in (make(view, p) for make in parts) if part)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_text(title)}</title><style>{_CSS}</style></head>\n<body><main>"
        "<h1>SVE vector lengths: cluster capacity report</h1>"
        '<p class="sub">the largest SVE vector-length set that every node\'s KVM accepts (the '
        "longest common prefix of the nodes' sets)</p>"
        f"{body}<footer>generated by vlcalc</footer></main></body></html>\n"
    )


def render_html(view: ReportView) -> str:
    """One report as one self-contained HTML page (a ``str``).

    Sections: the headline (cluster set, completeness, the naive intersection when it differs),
    the node x VL matrix (identical nodes grouped above ``GROUP_THRESHOLD`` nodes), the
    capacity ladder as an SVG bar chart, the limits, the nodes not probed, the settings, the
    ``--target-vl`` plan and the hardware profiles.
    """
    return _page(f"vlcalc: {view.title.lower()}", _sections(view, ""))


def render_html_groups(views: Sequence[tuple[str, ReportView]]) -> str:
    """``--per-group``: one page, a section per group (``all`` last), element ids prefixed
    ``gN-`` so that each stays unique on the page."""
    toc = "".join(
        f'<li><a href="#g{index}">{_text(name)}</a>: {_text(view.headline.title)}'
        f"{'' if view.completeness.complete else ' (incomplete)'}</li>"
        for index, (name, view) in enumerate(views, 1)
    )
    groups = "".join(
        f'<div class="group" id="g{index}"><h2 class="group">Group {_text(name)}</h2>'
        f"{_sections(view, f'g{index}-')}</div>"
        for index, (name, view) in enumerate(views, 1)
    )
    body = f'<section id="groups"><h2>Groups</h2><nav><ul>{toc}</ul></nav></section>{groups}'
    return _page(f"vlcalc: {len(views)} groups", body)
