"""The self-contained HTML capacity-planning report.

:func:`render_html` turns a ``vlcalc.report/1`` document (``report_json(build_report(nodes))``)
into one HTML page that needs nothing else: inline CSS, inline SVG, no JavaScript, no network,
and a Content-Security-Policy that forbids everything but inline styles and ``data:`` images.

Every string in the document came from an inventory or from a node (names, hostnames, kernels,
CPU models, error messages) and is untrusted: each one goes through :func:`_text` (control and
format characters replaced, then ``html.escape(..., quote=True)``) before it reaches the page,
in element text, in attributes and in SVG alike.

Example::

    page = render_html(report_json(build_report(nodes)))
    Path("sve-report.html").write_text(page, encoding="utf-8")
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from vlcalc.model import printable

__all__ = ["CSP", "GROUP_THRESHOLD", "render_html"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
GROUP_THRESHOLD = 40  # above this many nodes, identical nodes share one matrix row
NAMES_SHOWN = 4  # names listed for a group of nodes before "+N more"
ERRORS_SHOWN = 100  # per-node error rows before the rest are only counted
LADDER_SHOWN = 32  # ladder bars before the rest are only counted
PROFILES_SHOWN = 50  # profile rows before the rest are only counted

_LIMIT_TITLES = {
    "max-vl": "smallest maximum",
    "divergence": "divergent VL",
    "no-sve": "no SVE",
    "unprobed": "not probed",
}

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
"""


def _text(value: object) -> str:
    """Untrusted text for HTML text or a quoted attribute: control and format characters (escape
    sequences, bidi overrides) become ``?``, newlines and tabs stay, then ``html.escape``."""
    raw = "" if value is None else str(value)
    clean = printable(raw, keep="\n\t")
    return html.escape(clean, quote=True)


def _vl_set(vls: Sequence[int] | None) -> str:
    """``[128, 256]`` -> ``128,256`` (as the CLI writes it); ``[]`` -> ``none``."""
    if vls is None:
        return "unknown"
    return ",".join(str(vl) for vl in vls) or "none"


def _names(names: Sequence[str], most: int = NAMES_SHOWN) -> str:
    shown = ", ".join(str(name) for name in names[:most])
    return shown + (f", … (+{len(names) - most} more)" if len(names) > most else "")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# -- headline ------------------------------------------------------------------------------------
def _headline(report: dict[str, Any]) -> str:
    cluster = report["cluster"]
    nodes = report["nodes"]
    vls = cluster["vls"]
    total = len(nodes)
    statuses = [node["status"] for node in nodes]
    if vls:
        answer = (
            f'<div class="set" id="cluster-set">{_text(_vl_set(vls))}</div>'
            f'<div class="muted">max VL {_text(cluster["max_vl"])} bits · every node accepts '
            "exactly this set</div>"
        )
    else:
        answer = (
            '<div class="set off" id="cluster-set">SVE off</div>'
            '<div class="muted">no VL set runs on every node: start guests with '
            "<code>sve=off</code></div>"
        )
    if report["complete"]:
        state = f'<span class="badge ok">complete · all {total} nodes probed</span>'
    else:
        state = (
            f'<span class="badge bad">incomplete · {_text(cluster["unprobed"])} of {total} '
            "nodes not probed</span>"
        )
    stats = [
        (total, "nodes"),
        (statuses.count("ok"), "with SVE"),
        (statuses.count("no-sve"), "no SVE"),
        (statuses.count("error"), "not probed"),
    ]
    cards = "".join(
        f'<div class="stat"><b>{count}</b><span>{_text(label)}</span></div>'
        for count, label in stats
    )
    out = (
        '<section id="headline"><div class="headline">'
        f'<div class="answer"><div class="label">Cluster VL set</div>{answer}'
        f'<p id="completeness">{state}</p></div>'
        f'<div class="stats">{cards}</div></div>'
    )
    notes = []
    if not report["complete"]:
        notes.append(
            '<p class="note bad">Some nodes could not be probed: their sets are unknown, so the '
            "set above covers only the others and may be too large.</p>"
        )
    if cluster.get("naive_differs"):
        notes.append(
            f'<p class="note" id="naive">The plain intersection of the nodes\' sets would be '
            f"<b>{_text(_vl_set(cluster['naive_intersection']))}</b>, but that is wrong: KVM can "
            "only give a guest a prefix of each host's set (it cannot hide single VLs), so a set "
            "that skips a VL some host offers is refused on that host.</p>"
        )
    notes.append(_excluded(report))
    requirement = report.get("requirement")
    if requirement:
        met = bool(requirement.get("met"))
        notes.append(
            f'<p class="note{"" if met else " bad"}" id="requirement">Required VL '
            f"{_text(requirement.get('vl'))}: <b>{'met' if met else 'NOT met'}</b></p>"
        )
    return out + "".join(notes) + "</section>"


# -- node x VL matrix ----------------------------------------------------------------------------
def _columns(nodes: Iterable[dict[str, Any]]) -> list[int]:
    """Every VL any node offers, ascending."""
    return sorted({int(vl) for node in nodes for vl in node.get("vls") or ()})


def _rows(nodes: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """One row per node, or for large fleets one per (status, set, limit kinds, error kind)."""
    if len(nodes) <= GROUP_THRESHOLD:
        return [[node] for node in nodes]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for node in nodes:
        vls = node.get("vls")
        error = node.get("error") or {}
        key = (
            node["status"],
            None if vls is None else tuple(vls),
            tuple(node.get("limits") or ()),
            error.get("kind"),
        )
        groups.setdefault(key, []).append(node)
    return list(groups.values())


def _common(members: Sequence[dict[str, Any]], field: str, plural: str) -> str | None:
    """The members' shared ``field``, or e.g. ``"3 kernels"`` when they differ."""
    values = {member.get(field) for member in members}
    if len(values) == 1:
        value = values.pop()
        return None if value is None else str(value)
    return f"{len(values - {None})} {plural}"


def _matrix(report: dict[str, Any]) -> str:
    nodes = report["nodes"]
    columns = _columns(nodes)
    in_cluster = set(report["cluster"]["vls"])
    grouped = len(nodes) > GROUP_THRESHOLD
    rows = _rows(nodes)
    head = "".join(f'<th class="vl{" in" if vl in in_cluster else ""}">{vl}</th>' for vl in columns)
    body = []
    for members in rows:
        first = members[0]
        names = [str(member["name"]) for member in members]
        vls = first.get("vls")
        error = first.get("error") or {}
        is_error = first["status"] == "error"
        if grouped and len(members) > 1:
            label = f"{len(members)} nodes"
            meta_names = f'<span class="meta">{_text(_names(names))}</span>'
        else:
            label, meta_names = names[0], ""
        hardware = " · ".join(
            value
            for value in (
                _common(members, "cpu_model", "CPU models"),
                _common(members, "kernel", "kernels"),
            )
            if value is not None
        )
        meta = meta_names + (f'<span class="meta">{_text(hardware)}</span>' if hardware else "")
        cells = []
        for vl in columns:
            if vls is None:
                css, title = "c-err", f"VL {vl}: unknown (not probed)"
            elif vl not in vls:
                css, title = "c-no", f"VL {vl}: not offered"
            elif vl in in_cluster:
                css, title = "c-in", f"VL {vl}: offered, in the cluster set"
            else:
                css, title = "c-out", f"VL {vl}: offered, not usable cluster-wide"
            cells.append(f'<td class="vl"><span class="cell {css}" title="{title}"></span></td>')
        if is_error:
            detail = f'<span class="badge bad">{_text(error.get("kind"))}</span>'
            if not grouped or len(members) == 1:
                detail += f" {_text(error.get('message'))}"
        else:
            detail = " ".join(
                f'<span class="badge warn">{_text(kind)}</span>' for kind in first.get("limits", [])
            )
        status_css = {"ok": "ok", "no-sve": "warn", "error": "bad"}.get(
            str(first["status"]), "info"
        )
        body.append(
            f'<tr class="{"err" if is_error else "node"}">'
            f'<td class="name"><span class="who">{_text(label)}</span>{meta}</td>'
            f'<td><span class="badge {status_css}">{_text(first["status"])}</span></td>'
            f"{''.join(cells)}<td>{detail}</td></tr>"
        )
    caption = (
        f"{len(nodes)} nodes in {len(rows)} rows: identical nodes (same status, VL set and "
        "limits) share a row."
        if grouped
        else f"{len(nodes)} nodes, one row each."
    )
    legend = (
        '<div class="legend">'
        '<span><span class="cell c-in"></span>offered, in the cluster set</span>'
        '<span><span class="cell c-out"></span>offered, not usable cluster-wide</span>'
        '<span><span class="cell c-no"></span>not offered</span>'
        '<span><span class="cell c-err"></span>node not probed (set unknown)</span>'
        "</div>"
    )
    return (
        '<section id="matrix"><h2>Nodes &times; vector lengths (bits)</h2>'
        f'<p class="muted">{caption}</p>{legend}'
        f'<table class="matrix"><thead><tr><th>{"Nodes" if grouped else "Node"}</th>'
        f"<th>Status</th>{head}<th>Limits / error</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></section>"
    )


# -- capacity ladder -----------------------------------------------------------------------------
def _ladder(report: dict[str, Any]) -> str:
    rungs = report.get("ladder") or []
    total = len(report["nodes"])
    cluster_vls = list(report["cluster"]["vls"])
    if not rungs:
        return (
            '<section id="ladder"><h2>Capacity ladder</h2>'
            '<p class="muted">No node offers SVE: there is no VL set to choose.</p></section>'
        )
    shown = rungs[:LADDER_SHOWN]
    width, bar_x, bar_width, row_height = 1000, 0, 1000, 42
    height = row_height * len(shown) + 4
    bars = []
    for index, rung in enumerate(shown):
        y = index * row_height
        count = int(rung["count"])
        length = 0 if total == 0 else round(bar_width * count / total, 1)
        is_cluster = list(rung["vls"]) == cluster_vls
        fill = "#2f9e44" if is_cluster else "#7b8ba3"
        label = f"{_vl_set(rung['vls'])} — {count} of {total} nodes"
        suffix = " (cluster set)" if is_cluster else ""
        tooltip = f"{label}: {_names(rung.get('nodes') or [], 12)}"
        bars.append(
            f'<g class="rung"><title>{_text(tooltip)}</title>'
            f'<text x="{bar_x}" y="{y + 14}" font-size="13" fill="#1f2933">'
            f'<tspan font-weight="600">{_text(label)}</tspan>'
            f'<tspan fill="#2f9e44" font-weight="600">{suffix}</tspan></text>'
            f'<rect x="{bar_x}" y="{y + 20}" width="{bar_width}" height="14" rx="3" '
            'fill="#eef1f5"/>'
            f'<rect x="{bar_x}" y="{y + 20}" width="{length}" height="14" rx="3" fill="{fill}"/>'
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
        else "No set runs on every node (some nodes offer no SVE): guests need sve=off."
    )
    unprobed = int(report["cluster"].get("unprobed") or 0)
    basis = (
        f" {unprobed} of the {total} nodes were not probed and count as not accepting."
        if unprobed
        else ""
    )
    return (
        '<section id="ladder"><h2>Capacity ladder</h2>'
        '<p class="muted">Every candidate VL set and how many nodes accept it (a node accepts a '
        f"set that is a prefix of its own): larger sets run on fewer nodes. {_text(whole)}"
        f"{_text(basis)}</p>"
        f'<svg class="ladder" role="img" aria-label="Capacity ladder" width="100%" '
        f'viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet">'
        f"{''.join(bars)}</svg>{more}</section>"
    )


# -- limits, errors, settings --------------------------------------------------------------------
def _limits(report: dict[str, Any]) -> str:
    limits = report.get("limits") or []
    if not limits:
        return (
            '<section id="limits"><h2>What limits the set</h2>'
            '<p><span class="badge ok">none</span> every node offers the same set.</p></section>'
        )
    items = []
    for limit in limits:
        binding = bool(limit.get("binding", True))
        badge = (
            '<span class="badge bad">binding</span>'
            if binding
            else '<span class="badge info">not binding</span>'
        )
        kind = str(limit.get("kind"))
        title = _LIMIT_TITLES.get(kind, kind)
        later = (
            ""
            if binding
            else '<span class="meta">applies once the nodes without SVE are gone</span>'
        )
        items.append(
            f'<li class="limit">{badge}<span class="kind">{_text(title)}</span>'
            f'<span class="muted">({_text(kind)})</span><br>{_text(limit.get("message"))}'
            f"{later}</li>"
        )
    return (
        '<section id="limits"><h2>What limits the set</h2>'
        f'<ul class="limits">{"".join(items)}</ul></section>'
    )


def _errors(report: dict[str, Any]) -> str:
    failed = [node for node in report["nodes"] if node.get("error")]
    if not failed:
        return ""
    rows = [
        f'<tr class="err"><td class="name">{_text(node["name"])}</td>'
        f'<td><span class="badge bad">{_text(node["error"].get("kind"))}</span></td>'
        f"<td>{_text(node['error'].get('message'))}</td></tr>"
        for node in failed[:ERRORS_SHOWN]
    ]
    more = (
        f'<p class="muted">… and {len(failed) - ERRORS_SHOWN} more nodes not probed (see the JSON '
        "report).</p>"
        if len(failed) > ERRORS_SHOWN
        else ""
    )
    return (
        f'<section id="errors"><h2>Nodes not probed ({len(failed)})</h2>'
        "<table><thead><tr><th>Node</th><th>Error</th><th>Message</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{more}</section>"
    )


def _settings(report: dict[str, Any]) -> str:
    cluster = report["cluster"]
    words = " ".join(str(word) for word in cluster.get("kvm_words") or ())
    return (
        '<section id="settings"><h2>Settings that give a guest exactly this set on every node'
        "</h2>"
        f'<h3>QEMU</h3><pre id="qemu">-cpu {_text(cluster.get("qemu"))}</pre>'
        f'<h3>libvirt</h3><pre id="libvirt">{_text(cluster.get("libvirt"))}</pre>'
        f'<h3>KVM</h3><pre id="kvm">KVM_REG_ARM64_SVE_VLS = {_text(words)}</pre></section>'
    )


# -- optional sections the lead's report may carry -----------------------------------------------
def _profiles(report: dict[str, Any]) -> str:
    """``profiles``: ``[{"vls", "kernel", "cpu_model", "count", "nodes", "status"?}]``."""
    profiles = report.get("profiles")
    if not profiles:
        return ""
    rows = []
    for profile in profiles[:PROFILES_SHOWN]:
        vls = profile.get("vls")
        status = profile.get("status") or ("error" if vls is None else "ok" if vls else "no-sve")
        rows.append(
            f'<tr class="{"err" if status == "error" else "profile"}">'
            f"<td>{_text(_vl_set(vls))}</td>"
            f"<td>{_text(profile.get('cpu_model') or '—')}</td>"
            f"<td>{_text(profile.get('kernel') or '—')}</td>"
            f"<td>{_text(profile.get('count'))}</td>"
            f"<td>{_text(_names(profile.get('nodes') or [], 6))}</td></tr>"
        )
    more = (
        f'<p class="muted">… and {len(profiles) - PROFILES_SHOWN} smaller profiles (see the JSON '
        "report).</p>"
        if len(profiles) > PROFILES_SHOWN
        else ""
    )
    return (
        '<section id="profiles"><h2>Hardware profiles</h2>'
        '<p class="muted">Nodes with the same VL set, CPU model and kernel.</p>'
        "<table><thead><tr><th>VL set</th><th>CPU model</th><th>Kernel</th><th>Nodes</th>"
        f"<th>Which</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{more}</section>"
    )


def _target(report: dict[str, Any]) -> str:
    """``target`` (``--target-vl``): ``{"vl", "reachable", "keep", "drain", "unknown",
    "vls_after"}``, the fewest nodes to drain so that the rest reach VL ``vl``."""
    target = report.get("target")
    if not isinstance(target, dict):
        return ""
    vl = target.get("vl")
    keep, drain = target.get("keep") or [], target.get("drain") or []
    unknown = target.get("unknown") or []
    if target.get("reachable", bool(keep)):
        verdict = (
            f'<p><span class="badge ok">reachable</span> drain {_text(_plural(len(drain), "node"))}'
            f" and the other {len(keep)} run <b>{_text(_vl_set(target.get('vls_after')))}</b>"
            "</p>"
        )
    else:
        verdict = f'<p><span class="badge bad">unreachable</span> no node offers VL {_text(vl)}</p>'
    rows = "".join(
        f"<tr><th>{label}</th><td>{len(names)}</td><td>{_text(_names(names, 8))}</td></tr>"
        for label, names in (("keep", keep), ("drain", drain), ("unknown", unknown))
        if names
    )
    table = f"<table><tbody>{rows}</tbody></table>" if rows else ""
    return f'<section id="target"><h2>Target VL {_text(vl)}</h2>{verdict}{table}</section>'


def _excluded(report: dict[str, Any]) -> str:
    """``excluded`` (``--exclude``): the node names left out of this what-if report."""
    excluded = report.get("excluded")
    if not excluded:
        return ""
    return (
        f'<p class="note" id="excluded">What-if: {_text(_plural(len(excluded), "node"))} left '
        f"out of this report: {_text(_names(excluded, 8))}.</p>"
    )


def _value(value: Any) -> str:
    """A what-if value of unknown shape: names are shortened, nested objects shown as JSON."""
    if isinstance(value, list) and all(isinstance(item, int) for item in value):
        return _text(_vl_set(value))
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return _text(f"{len(value)}: {_names(value, 8)}" if value else "none")
    if isinstance(value, (dict, list)):
        dumped = json.dumps(value, indent=2)
        if len(dumped) > 4000:
            dumped = dumped[:4000] + "\n…"
        return f"<pre>{_text(dumped)}</pre>"
    return _text(value)


def _what_if(report: dict[str, Any]) -> str:
    what_if = report.get("what_if")
    if not what_if:
        return ""
    if isinstance(what_if, dict):
        rows = "".join(
            f"<tr><th>{_text(key)}</th><td>{_value(value)}</td></tr>"
            for key, value in what_if.items()
        )
        content = f"<table>{rows}</table>"
    else:
        content = _value(what_if)
    return f'<section id="what-if"><h2>What if</h2>{content}</section>'


def render_html(report: dict[str, Any]) -> str:
    """The ``vlcalc.report/1`` document as one self-contained HTML page (a ``str``).

    Sections: the headline (cluster set, completeness, the naive intersection when it differs),
    the node x VL matrix (identical nodes grouped above :data:`GROUP_THRESHOLD` nodes), the
    capacity ladder as an SVG bar chart, the limits, the nodes not probed, the settings, and the
    optional ``profiles`` and ``what_if`` parts when the document has them.
    """
    cluster_vls = report["cluster"]["vls"]
    title = f"vlcalc: cluster VL set {_vl_set(cluster_vls) if cluster_vls else 'SVE off'}"
    sections = [
        _headline(report),
        _matrix(report),
        _ladder(report),
        _limits(report),
        _errors(report),
        _settings(report),
        _target(report),
        _profiles(report),
        _what_if(report),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_text(title)}</title><style>{_CSS}</style></head>\n<body><main>"
        "<h1>SVE vector lengths: cluster capacity report</h1>"
        f'<p class="sub">{_text(report.get("schema"))} · the largest SVE vector-length set that '
        "every node's KVM accepts (the longest common prefix of the nodes' sets)</p>"
        + "\n".join(section for section in sections if section)
        + "<footer>generated by vlcalc</footer></main></body></html>\n"
    )
