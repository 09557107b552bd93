"""The HTML report: structure, grouping, size, escaping, and the page as a real browser shows it."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from vlcalc.documents import NodeRecord, parse_scan
from vlcalc.html import CSP, render_html, render_html_groups
from vlcalc.report import GROUP_THRESHOLD, ReportView, build_report, build_view, group_reports
from vlcalc.vl import VLSet

from fleet_fixtures import HARDWARE, example_fleet, mixed_fleet

VOID = {"meta", "br", "img", "input", "link", "hr", "col", "wbr", "source", "area", "base"}
HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_ATTR = '" onmouseover="x'
HOSTILE = [
    HOSTILE_NAME,
    HOSTILE_ATTR,
    "' onload='y",
    "</title><img src=x onerror=alert(2)>",
    "<svg onload=alert(3)>",
]


# -- reports to render ---------------------------------------------------------------------------
def scan_report(scan: dict[str, Any]) -> ReportView:
    return build_view(build_report(parse_scan(scan, source="scan.json")))


def view_of(nodes: list[NodeRecord], **kwargs: Any) -> ReportView:
    return build_view(build_report(nodes, **kwargs))


def node(name: str, kind: str, **kwargs: Any) -> NodeRecord:
    vls, _, model = HARDWARE[kind]
    status = "ok" if vls else "no-sve"
    return NodeRecord(
        name, status, VLSet.from_vls(vls), cpu_model=model, kernel="6.1.0-27-arm64", **kwargs
    )


def failed(name: str, message: str = "connection refused (3 attempts)") -> NodeRecord:
    return NodeRecord(name, "error", None, "unreachable", message)


def big_fleet(size: int = 1000) -> list[NodeRecord]:
    """``size`` nodes in five hardware profiles, with some that could not be probed."""
    kinds = ["a64fx", "graviton3", "vl384", "a64fx", "graviton3"]
    nodes = [
        failed(
            f"node{i:04d}.dc1.example", f"no answer within 60 s (host 10.1.{i // 250}.{i % 250})"
        )
        if i % 97 == 0
        else node(f"node{i:04d}.dc1.example", kinds[i % len(kinds)])
        for i in range(size)
    ]
    return nodes


@pytest.fixture(scope="module")
def example() -> ReportView:
    return scan_report(example_fleet())


@pytest.fixture(scope="module")
def mixed() -> ReportView:
    return scan_report(mixed_fleet())


# -- a small HTML checker ------------------------------------------------------------------------
class Page(HTMLParser):
    """Parses a page, fails on unbalanced tags, and keeps every element with its attributes and
    text so tests can ask structural questions instead of matching strings."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[dict[str, Any]] = []
        self.elements: list[dict[str, Any]] = []
        self.feed(source)
        self.close()
        assert not self.stack, f"unclosed: {[e['tag'] for e in self.stack]}"

    def _open(self, tag: str, attrs: list[tuple[str, str | None]]) -> dict[str, Any]:
        element = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": list(self.stack)}
        self.elements.append(element)
        return element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = self._open(tag, attrs)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        top = self.stack.pop()
        assert top["tag"] == tag, f"</{tag}> closes <{top['tag']}>"

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element["text"] += data

    def find(
        self, tag: str | None = None, css: str | None = None, **attrs: str
    ) -> list[dict[str, Any]]:
        return [
            e
            for e in self.elements
            if (tag is None or e["tag"] == tag)
            and (css is None or css in (e["attrs"].get("class") or "").split())
            and all(e["attrs"].get(key) == value for key, value in attrs.items())
        ]

    def by_id(self, element_id: str) -> dict[str, Any]:
        (element,) = self.find(id=element_id)
        return element

    def within(
        self, element: dict[str, Any], tag: str, css: str | None = None
    ) -> list[dict[str, Any]]:
        return [e for e in self.find(tag, css) if any(p is element for p in e["parents"])]


def text(element: dict[str, Any]) -> str:
    return " ".join(element["text"].split())


def matrix_rows(page: Page) -> list[dict[str, Any]]:
    return page.within(page.by_id("matrix"), "tr")[1:]  # without the header row


def label(page: Page, row: dict[str, Any]) -> str:
    """A matrix row's label: a node name, or "N nodes" for a group."""
    return text(page.within(row, "span", "who")[0])


def cells(page: Page, row: dict[str, Any]) -> list[str]:
    """The state of each VL cell of a matrix row: in, out, no or err."""
    return [
        next(c for c in e["attrs"]["class"].split() if c.startswith("c-"))[2:]
        for e in page.within(row, "span", "cell")
    ]


# -- a self-contained page -----------------------------------------------------------------------
@pytest.mark.parametrize("fleet", ["example", "mixed"])
def test_page_is_self_contained_with_a_strict_csp(fleet: str, request: Any) -> None:
    source = render_html(request.getfixturevalue(fleet))
    page = Page(source)
    assert source.startswith("<!DOCTYPE html>")
    (csp,) = page.find("meta", **{"http-equiv": "Content-Security-Policy"})
    assert csp["attrs"]["content"] == CSP
    assert CSP == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    assert not page.find("script") and not page.find("link") and not page.find("img")
    assert all(name not in e["attrs"] for e in page.elements for name in ("src", "href", "action"))
    lowered = source.lower()
    for external in ("http:", "https:", "url(", "@import", "//"):
        assert external not in lowered
    assert len(page.find("svg")) == 1 and page.find("style")


# -- headline ------------------------------------------------------------------------------------
def test_headline_shows_the_cluster_set_and_why_the_intersection_is_wrong(
    example: ReportView,
) -> None:
    page = Page(render_html(example))
    assert text(page.by_id("cluster-set")) == "128,256"
    assert text(page.by_id("completeness")) == "complete · 6 of 6 nodes probed"
    assert not page.find(id="caveat") and not page.find(id="settings-caveat")
    naive = text(page.by_id("naive"))
    assert "128,256,512" in naive and "prefix" in naive and "wrong" in naive
    assert "128,256" in text(page.find("title")[0])


def test_headline_sve_off_and_incomplete(mixed: ReportView) -> None:
    page = Page(render_html(mixed))
    assert text(page.by_id("cluster-set")) == "SVE off"
    assert "incomplete" in text(page.by_id("completeness"))
    assert "1 not probed: the set may be too large" in text(page.by_id("completeness"))
    caveat = "INCOMPLETE: 1 of 6 nodes not probed; a node not probed may reject this set"
    assert text(page.by_id("caveat")) == text(page.by_id("settings-caveat")) == caveat
    assert not page.find(id="naive")  # the intersection equals the answer here


def test_requirement_is_shown() -> None:
    nodes = [node("a", "a64fx"), node("b", "graviton3")]
    page = Page(render_html(view_of(nodes, require_vl=512)))
    assert text(page.by_id("requirement")) == "Required VL 512: NOT met"


# -- the node x VL matrix ------------------------------------------------------------------------
def test_matrix_colours_each_vl_of_each_node(example: ReportView) -> None:
    page = Page(render_html(example))
    header = [text(e) for e in page.within(page.by_id("matrix"), "th", "vl")]
    assert header == ["128", "256", "384", "512"]
    assert [e["attrs"]["class"] for e in page.within(page.by_id("matrix"), "th", "in")] == [
        "vl in",
        "vl in",
    ]
    rows = matrix_rows(page)
    assert [label(page, row) for row in rows] == [
        "a64fx-01",
        "a64fx-02",
        "a64fx-03",
        "a64fx-04",
        "sve384-01",
        "sve384-02",
    ]
    assert cells(page, rows[0]) == ["in", "in", "no", "out"]
    assert cells(page, rows[4]) == ["in", "in", "out", "out"]
    assert "divergence" in text(rows[4]) and "divergence" not in text(rows[0])
    assert len(page.find("span", "cell")) == 6 * 4 + 4  # the matrix and its legend


def test_matrix_error_and_no_sve_rows(mixed: ReportView) -> None:
    page = Page(render_html(mixed))
    rows = {label(page, row): row for row in matrix_rows(page)}
    assert rows["grace-01"]["attrs"]["class"] == "err"
    assert cells(page, rows["grace-01"]) == ["err"] * 4
    assert "connection refused by 10.0.4.21:22" in text(rows["grace-01"])
    assert cells(page, rows["altra-01"]) == ["no"] * 4
    assert cells(page, rows["a64fx-01"]) == ["out", "out", "no", "out"]  # SVE off: none green
    assert {row["attrs"]["class"] for name, row in rows.items() if name != "grace-01"} == {"node"}


@pytest.mark.parametrize(("size", "rows"), [(GROUP_THRESHOLD, GROUP_THRESHOLD), (41, 4)])
def test_matrix_groups_identical_nodes_above_the_threshold(size: int, rows: int) -> None:
    kinds = ["a64fx", "graviton3", "vl384"]
    nodes = [node(f"n{i:02d}", kinds[i % 3]) for i in range(size - 1)] + [failed("dead")]
    page = Page(render_html(view_of(nodes)))
    assert len(matrix_rows(page)) == rows


def test_large_fleet_is_grouped_readable_and_small() -> None:
    nodes = big_fleet(1000)
    source = render_html(view_of(nodes))
    assert len(source.encode()) < 300_000
    page = Page(source)
    rows = matrix_rows(page)
    # a64fx and graviton3 nodes are split by their limits; errors are one row.
    assert len(rows) <= 6
    counts = [
        int(match.group(1)) if (match := re.fullmatch(r"(\d+) nodes", label(page, row))) else 1
        for row in rows
    ]
    assert sum(counts) == len(nodes)
    names = [
        text(page.within(row, "span", "meta")[0]) for row in rows if counts[rows.index(row)] > 1
    ]
    assert all(
        re.fullmatch(r"node\d{4}\.dc1\.example(, \S+){3}, … \(\+\d+ more\)", n) for n in names
    )
    errors = page.by_id("errors")
    assert "Nodes not probed (11)" in text(errors)
    assert len(page.within(errors, "tr")) == 1 + 11


def test_error_list_is_capped_for_huge_outages() -> None:
    nodes = [failed(f"dead{i:04d}", "x" * 200) for i in range(1000)] + [node("ok", "a64fx")]
    source = render_html(view_of(nodes))
    assert len(source.encode()) < 300_000
    page = Page(source)
    assert len(page.within(page.by_id("errors"), "tr")) == 1 + 100
    assert "900 more nodes not probed" in text(page.by_id("errors"))


# -- the ladder ----------------------------------------------------------------------------------
def test_ladder_has_one_bar_per_candidate_set(example: ReportView) -> None:
    page = Page(render_html(example))
    rungs = page.find("g", "rung")
    assert [text(page.within(g, "tspan")[0]) for g in rungs] == [
        f"{rung.vls} — {len(rung.nodes)} of 6 nodes" for rung in example.ladder
    ]
    assert "128,256 — 6 of 6 nodes (cluster set)" in [
        text(page.within(g, "text")[0]) for g in rungs
    ]
    widths = [float(page.within(g, "rect")[1]["attrs"]["width"]) for g in rungs]
    track = float(page.within(rungs[0], "rect")[0]["attrs"]["width"])
    assert widths == [
        pytest.approx(track * len(rung.nodes) / 6, abs=0.1) for rung in example.ladder
    ]
    fills = [page.within(g, "rect")[1]["attrs"]["fill"] for g in rungs]
    assert fills.count("#2f9e44") == 1 and fills[3] == "#2f9e44"  # only the cluster set is green


def test_ladder_for_a_fleet_without_sve() -> None:
    page = Page(render_html(view_of([node("altra", "altra")])))
    assert not page.find("svg")
    assert "No probed node offers SVE" in text(page.by_id("ladder"))


# -- limits, errors, settings --------------------------------------------------------------------
def test_limits_with_messages_binding_or_not(mixed: ReportView) -> None:
    page = Page(render_html(mixed))
    items = page.find("li", "limit")
    assert len(items) == len(mixed.limits) == 3
    for item, limit in zip(items, mixed.limits):
        assert limit.message in text(item)
        assert text(item).startswith("binding" if limit.binding else "not binding")
    assert text(page.find("td", "name")[-1]) == "grace-01"  # the errors table


def test_settings_are_preformatted_and_escaped(example: ReportView) -> None:
    source = render_html(example)
    page = Page(source)
    assert page.by_id("qemu")["tag"] == "pre"
    assert page.by_id("qemu")["text"] == "-cpu host,sve=on,sve128=on,sve256=on"
    assert page.by_id("libvirt")["text"] == example.settings.libvirt
    assert "&lt;cpu mode=&#x27;host-passthrough&#x27;" in source
    assert page.by_id("kvm")["text"] == "KVM_REG_ARM64_SVE_VLS = 0x3 " + " ".join(["0x0"] * 7)


def test_no_settings_for_a_fleet_with_no_probed_node() -> None:
    page = Page(render_html(view_of([failed("a"), failed("b")])))
    assert text(page.by_id("cluster-set")) == "unknown"
    assert "0 of 2 nodes probed: the cluster set is unknown" in text(page.by_id("completeness"))
    assert not page.find(id="qemu") and not page.find(id="libvirt") and not page.find(id="kvm")
    assert "No settings: no node was probed" in text(page.by_id("settings"))


# -- optional parts ------------------------------------------------------------------------------
def test_optional_parts_are_rendered_when_present_and_ignored_when_absent() -> None:
    nodes = [node("a1", "a64fx"), node("a2", "a64fx"), node("v1", "vl384"), failed("dead")]
    bare = Page(render_html(view_of([node("a1", "a64fx"), node("v1", "vl384")])))
    for part in ("profiles", "target", "excluded", "what-if"):
        assert not bare.find(id=part)
    page = Page(render_html(view_of(nodes, target_vl=512, excluded=["old-01", "old-02"])))
    profiles = page.within(page.by_id("profiles"), "tr")
    assert len(profiles) == 1 + 3 and "a1, a2" in text(profiles[1])
    assert profiles[3]["attrs"]["class"] == "err"
    assert "2 nodes left out of this report: old-01, old-02" in text(page.by_id("excluded"))
    target = text(page.by_id("target"))
    assert "Target VL 512" in target and "drain 1 node" in target and "128,256,512" in target
    assert not page.find(id="what-if")  # the dead what-if section is gone


# -- untrusted strings ---------------------------------------------------------------------------
def hostile_nodes(size: int) -> list[NodeRecord]:
    """Every string field of a node carries markup; ``size`` > 40 exercises grouped rows."""
    nodes = []
    for i in range(size):
        evil = HOSTILE[i % len(HOSTILE)]
        kind = ["a64fx", "vl384", "graviton3"][i % 3]
        base = node(f"{evil}{i}", kind)
        nodes.append(
            NodeRecord(
                base.name,
                base.status,
                base.vls,
                kernel=f"6.1{evil}",
                cpu_model=f"{HOSTILE_ATTR}{evil}",
                groups=(evil,),
            )
        )
    nodes.append(failed(HOSTILE_NAME, f"refused {HOSTILE_ATTR} {HOSTILE[3]}"))
    return nodes


def hostile_report(size: int) -> ReportView:
    return view_of(hostile_nodes(size), target_vl=512, excluded=[HOSTILE_NAME])


@pytest.mark.parametrize("size", [5, 60])
def test_untrusted_strings_appear_only_escaped(size: int) -> None:
    source = render_html(hostile_report(size))
    page = Page(source)
    for raw in HOSTILE:
        assert raw not in source
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in source
    assert "&quot; onmouseover=&quot;x" in source
    assert 'onmouseover="' not in source and "onload='" not in source
    # Structurally: nothing but the page's own elements and attributes.
    assert {e["tag"] for e in page.elements} <= {
        "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p", "b",
        "code", "section", "div", "span", "table", "thead", "tbody", "tr", "th", "td", "ul",
        "li", "br", "pre", "svg", "g", "text", "tspan", "rect", "footer",
    }  # fmt: skip
    attributes = {name for e in page.elements for name in e["attrs"]}
    assert not {name for name in attributes if name.startswith("on")}
    # The names survive, as text, in the matrix, the limits, the ladder tooltips and the errors.
    names = text(page.by_id("matrix"))
    assert HOSTILE_NAME in names and HOSTILE_ATTR in names
    assert HOSTILE_NAME in text(page.by_id("errors"))


def test_control_and_bidi_characters_are_replaced() -> None:
    nodes = [node("evil\x1b[31m\u202eexe.\x00\u200b\n", "a64fx"), node("ok", "a64fx")]
    source = render_html(view_of(nodes))
    for raw in ("\x1b", "\u202e", "\x00", "\u200b"):
        assert raw not in source
    assert "evil?[31m?exe.???" in source


def per_group_page(nodes: list[NodeRecord]) -> str:
    return render_html_groups([(name, build_view(r)) for name, r in group_reports(nodes)])


def test_per_group_is_one_escaped_page_with_a_section_per_group() -> None:
    source = per_group_page(hostile_nodes(12))
    assert source.startswith("<!DOCTYPE html>") and source.count("<!DOCTYPE") == 1
    assert source.count("<html") == 1 and source.count("</html>") == 1
    for raw in HOSTILE:
        assert raw not in source
    page = Page(source)
    groups = page.find("div", "group")
    names = [text(page.within(g, "h2", "group")[0]) for g in groups]
    assert names == [f"Group {name}" for name in sorted(set(HOSTILE))] + ["Group all"]
    # Every element id is unique on the page, and each group has its own matrix and settings.
    ids = [e["attrs"]["id"] for e in page.elements if "id" in e["attrs"]]
    assert len(ids) == len(set(ids))
    assert [bool(page.find(id=f"g{i}-matrix")) for i in range(1, 7)] == [True] * 6
    assert "incomplete" in text(page.by_id("g6-completeness"))  # "all" holds the failed node
    links = [e["attrs"]["href"] for e in page.find("a")]
    assert links == [f"#g{i}" for i in range(1, 7)]


# -- in a real browser ---------------------------------------------------------------------------
CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (Debian: apt-get install -y chromium)"
)
# Page problems chromium logs with --enable-logging=stderr: console output (the page has no
# script, so any is a failure) and CSP violations.
PAGE_PROBLEM = re.compile(r":CONSOLE[:(]|Content Security Policy|Refused to", re.IGNORECASE)


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--window-size=1280,2000",
        *args,
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def page_problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if PAGE_PROBLEM.search(line)]


@needs_chromium
@pytest.mark.parametrize("fleet", ["example", "mixed"])
def test_chromium_renders_the_page_without_csp_or_console_errors(
    fleet: str, request: Any, tmp_path: Path
) -> None:
    view = request.getfixturevalue(fleet)
    page = tmp_path / f"{fleet}.html"
    page.write_text(render_html(view), encoding="utf-8")
    dom = chromium(tmp_path, page, "--dump-dom")
    expected = "128,256" if fleet == "example" else "SVE off"
    assert re.search(rf'id="cluster-set">{expected}<', dom.stdout)
    assert 'class="rung"' in dom.stdout and "<script" not in dom.stdout
    assert page_problems(dom.stderr) == []
    png = tmp_path / f"{fleet}.png"
    shot = chromium(tmp_path, page, f"--screenshot={png}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert page_problems(shot.stderr) == []


@needs_chromium
def test_chromium_shows_hostile_names_as_text(tmp_path: Path) -> None:
    page = tmp_path / "hostile.html"
    page.write_text(render_html(hostile_report(60)), encoding="utf-8")
    dom = chromium(tmp_path, page, "--dump-dom")
    # The browser's own DOM: no element or attribute came from the data, and the names are text.
    rendered = Page(dom.stdout)
    assert not rendered.find("script") and not rendered.find("img")
    assert not [n for e in rendered.elements for n in e["attrs"] if n.startswith("on")]
    matrix = text(rendered.by_id("matrix"))
    assert HOSTILE_NAME in matrix and HOSTILE_ATTR in matrix
    assert page_problems(dom.stderr) == []


@needs_chromium
def test_chromium_shows_per_group_hostile_names_as_text_on_one_page(tmp_path: Path) -> None:
    page = tmp_path / "groups.html"
    page.write_text(per_group_page(hostile_nodes(12)), encoding="utf-8")
    dom = chromium(tmp_path, page, "--dump-dom")
    rendered = Page(dom.stdout)
    assert not rendered.find("script") and not rendered.find("img")
    assert not [n for e in rendered.elements for n in e["attrs"] if n.startswith("on")]
    assert len(rendered.find("html")) == 1 and len(rendered.find("div", "group")) == 6
    headings = [text(h) for h in rendered.find("h2", "group")]
    assert f"Group {HOSTILE_NAME}" in headings and f"Group {HOSTILE[3]}" in headings
    assert "<title>" in dom.stdout and "ran" not in text(rendered.find("title")[0])
    assert page_problems(dom.stderr) == []


@needs_chromium
def test_chromium_problem_check_catches_a_csp_violation(tmp_path: Path) -> None:
    """The check above is not vacuous: the same page with a script and a remote image fails it,
    and the CSP blocks both."""
    source = render_html(view_of([node("a", "a64fx")]))
    bad = source.replace(
        "</main>", '<script>document.title="ran"</script><img src="https://example.invalid/x.png">'
        "</main>",
    )  # fmt: skip
    page = tmp_path / "bad.html"
    page.write_text(bad, encoding="utf-8")
    dom = chromium(tmp_path, page, "--dump-dom")
    problems = page_problems(dom.stderr)
    assert any("inline script" in line for line in problems)
    assert any("example.invalid" in line for line in problems)
    assert "<title>ran</title>" not in dom.stdout


def test_a_fleet_of_distinct_sets_shows_the_largest_rows_only() -> None:
    """A degenerate (or hostile) fleet where every node has its own set: the page showed every
    row x every VL column (10,000 nodes: 416 MB); now the largest MATRIX_ROWS_SHOWN rows, and
    the rest as one line, in every format."""
    from vlcalc.render import render_report
    from vlcalc.report import MATRIX_ROWS_SHOWN

    nodes = [NodeRecord(f"n{i}", "ok", VLSet.from_vls([128, 128 * (3 + i)])) for i in range(300)]
    nodes += [NodeRecord(f"m{i}", "ok", VLSet.from_vls([128, 256])) for i in range(5)]
    view = build_view(build_report(nodes))
    matrix = view.matrix
    assert len(matrix.rows) == MATRIX_ROWS_SHOWN
    assert tuple(f"m{i}" for i in range(5)) in [row.names for row in matrix.rows]  # largest
    assert matrix.rows[-2].names == ("n198",)  # ties: the first ones, in input order
    assert (matrix.hidden_rows, matrix.hidden_nodes) == (101, 101)
    text = "... and 101 more rows (101 nodes) of sets fewer nodes share: every node is in -f json"
    assert text in render_html(view)
    assert text in (render_report(view, "markdown") or "").replace("\\", "")
