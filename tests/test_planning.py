"""Capacity planning: profiles, what-if (--exclude, --add), --target-vl drain plans, drift."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vlcalc.cli import app
from vlcalc.compat import drain_for
from vlcalc.documents import NodeRecord, parse_document
from vlcalc.model import Status
from vlcalc.render import make_console, print_report
from vlcalc.report import build_diff, build_report, build_view, profiles
from vlcalc.vl import VLSet

from fleet_fixtures import error_entry, hardware_doc, mixed_fleet, ok_entry, probe_doc, scan_doc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "inventories" / "example-scan.json")
MIXED = str(ROOT / "inventories" / "mixed-fleet-scan.json")


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def S(*vls: int) -> VLSet:
    return VLSet.from_vls(vls)


def test_drain_plan_keeps_the_largest_compatible_class() -> None:
    nodes = [
        ("a1", S(128, 256, 512)),
        ("a2", S(128, 256, 512)),
        ("n1", S(128, 256, 384, 512)),
        ("g3", S(128, 256)),
        ("x", None),
        ("alt", VLSet()),
    ]
    plan = drain_for(nodes, 512)
    assert plan.keep == ("a1", "a2") and set(plan.drain) == {"n1", "g3", "alt"}
    assert plan.unknown == ("x",) and str(plan.vls_after) == "128,256,512"
    assert drain_for(nodes, 256).drain == ("alt",)
    assert drain_for(nodes, 384).keep == ("n1",)
    assert drain_for(nodes, 1024).keep == ()


def test_target_vl_through_the_cli() -> None:
    result = run("report", EXAMPLE, "--target-vl", "512", "-f", "json")
    target = json.loads(result.stdout)["target"]
    assert target["drain"] == ["sve384-01", "sve384-02"] and target["vls_after"] == [128, 256, 512]
    table = run("report", EXAMPLE, "--target-vl", "512").stdout
    assert "To reach VL 512: keep 4 nodes (set 128,256,512) and drain or move 2" in table
    assert run("report", EXAMPLE, "--target-vl", "500").exit_code == 2


def test_exclude_by_name_and_group() -> None:
    result = json.loads(run("report", EXAMPLE, "--exclude", "newgen", "-f", "json").stdout)
    assert result["cluster"]["vls"] == [128, 256, 512]
    assert result["excluded"] == ["sve384-01", "sve384-02"]
    glob = json.loads(
        run("report", MIXED, "--exclude", "altra-*", "--exclude", "grace-01", "-f", "json").stdout
    )
    assert glob["cluster"]["vls"] == [128] and glob["complete"] is True
    bad = run("report", EXAMPLE, "--exclude", "nosuch*")
    assert bad.exit_code == 2 and "--exclude: 'nosuch*' matches no node or group" in bad.stderr


def test_add_planned_hardware(tmp_path: Path) -> None:
    planned = tmp_path / "planned.json"
    planned.write_text(json.dumps(hardware_doc("new-graviton3", "graviton3")))
    result = json.loads(run("report", EXAMPLE, "--add", str(planned), "-f", "json").stdout)
    assert result["cluster"]["vls"] == [128, 256]
    assert result["limits"][0]["kind"] == "max-vl"
    assert result["limits"][0]["nodes"] == ["new-graviton3"]
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps(hardware_doc("a64fx-01", "a64fx")))
    assert run("report", EXAMPLE, "--add", str(dup)).exit_code == 2


def test_profiles_group_identical_nodes() -> None:
    nodes = parse_document(json.loads(Path(EXAMPLE).read_text()), source="x")
    found = profiles(nodes)
    assert [(len(p.names), str(p.vls), p.cpu_model) for p in found] == [
        (4, "128,256,512", "Fujitsu A64FX"),
        (2, "128,256,384,512", "QEMU max (emulated)"),
    ]


def test_thousand_node_fleet_stays_readable(tmp_path: Path) -> None:
    kinds = ["a64fx", "graviton3", "vl384", "graviton4"]
    entries = [
        ok_entry(f"n{i:04d}", hardware_doc(f"n{i:04d}", kinds[i % 4]), [f"rack{i % 10}"])
        for i in range(1000)
    ]
    entries.append(error_entry("down-01", "timeout", "no answer", ["rack0"]))
    nodes = parse_document(scan_doc(entries), source="big")
    assert len(profiles(nodes)) == 5
    path = tmp_path / "vlcalc-1000.json"
    path.write_text(json.dumps(scan_doc(entries)))
    assert run("report", str(path)).exit_code == 4
    out = io.StringIO()
    print_report(build_view(build_report(nodes)), make_console(out, width=120))
    lines = out.getvalue().splitlines()
    assert len(lines) < 80  # grouped matrix, top of the ladder, profiles
    assert max(map(len, lines)) <= 120
    assert "│ 250 nodes: n0000, n0004, n0008, n0012, … (+246 more) │ ok " in out.getvalue()
    grouped = json.loads(run("report", str(path), "--per-group", "-f", "json").stdout)
    assert [g["group"] for g in grouped["groups"]][:2] == ["rack0", "rack1"]
    assert grouped["groups"][-1]["group"] == "all"


def without(scan: dict[str, Any], *names: str) -> dict[str, Any]:
    return {**scan, "nodes": [n for n in scan["nodes"] if n["name"] not in names]}


def test_diff_exit_codes_and_changes(tmp_path: Path) -> None:
    old = without(mixed_fleet(), "grace-01")  # complete: every node probed
    new = without(old, "altra-01")  # the no-SVE node leaves
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    grew = run("diff", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "-f", "json")
    assert grew.exit_code == 0
    doc = json.loads(grew.stdout)
    assert doc["removed"][0]["name"] == "altra-01" and doc["cluster"]["gained"] == [128]
    shrank = run("diff", str(tmp_path / "new.json"), str(tmp_path / "old.json"))
    assert shrank.exit_code == 1 and "SHRANK: lost 128" in shrank.stdout


def test_diff_sees_a_node_whose_set_changed() -> None:
    before = [
        ok_entry("n1", hardware_doc("n1", "a64fx"), []),
        ok_entry("n2", hardware_doc("n2", "a64fx"), []),
    ]
    after = [
        ok_entry("n1", hardware_doc("n1", "a64fx"), []),
        ok_entry("n2", hardware_doc("n2", "graviton3", kernel="6.12.48+deb12-arm64"), []),
    ]
    drift = build_diff(
        parse_document(scan_doc(before), source="a"), parse_document(scan_doc(after), source="b")
    )
    assert [(old.name, str(old.vls), str(new.vls)) for old, new in drift.changed] == [
        ("n2", "128,256,512", "128,256")
    ]
    assert drift.shrank and str(drift.lost) == "512"


@pytest.mark.parametrize("fmt", ["markdown", "json", "table"])
def test_diff_formats(fmt: str) -> None:
    assert run("diff", EXAMPLE, EXAMPLE, "-f", fmt).exit_code == 0


def test_diff_compares_like_with_like_when_a_side_is_incomplete(tmp_path: Path) -> None:
    """The limiting node is unreachable now: the set of the rest is larger, but that is not a
    gain — it is unknown (exit 4), and the nodes probed both times did not change."""
    old = scan_doc([ok_entry(f"a{i}", hardware_doc(f"a{i}", "a64fx"), []) for i in range(3)]
                   + [ok_entry("g3", hardware_doc("g3", "graviton3"), [])])  # fmt: skip
    new = scan_doc([ok_entry(f"a{i}", hardware_doc(f"a{i}", "a64fx"), []) for i in range(3)]
                   + [error_entry("g3", "unreachable", "connection refused", [])])  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    result = run("diff", str(tmp_path / "old.json"), str(tmp_path / "new.json"))
    assert result.exit_code == 4, result.stdout
    first = result.stdout.splitlines()[0]
    assert first == (
        "== Cluster VL set: 128,256 -> 128,256,512 (incomplete: 1 of 4 not probed) (not "
        "comparable: a set from incomplete data may be too large)"
    )
    assert "Like with like, the 3 nodes probed in both: 128,256,512 -> 128,256,512" in result.stdout
    doc = json.loads(
        run("diff", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "-f", "json").stdout
    )
    assert doc["complete"] is False and doc["cluster"]["complete"] == {"old": True, "new": False}
    assert doc["common"] == {"nodes": 3, "old": [128, 256, 512], "new": [128, 256, 512], "lost": []}
    # Back the other way the old side is incomplete: its set may have been too large: exit 4.
    back = run("diff", str(tmp_path / "new.json"), str(tmp_path / "old.json"))
    assert back.exit_code == 4 and "SHRANK" not in back.stdout
    # A loss seen from a complete old side is certain, whatever the new side lacks: exit 1.
    shrank = scan_doc([ok_entry("a0", hardware_doc("a0", "graviton4"), []),
                       error_entry("a1", "timeout", "no answer", [])])  # fmt: skip
    (tmp_path / "shrank.json").write_text(json.dumps(shrank))
    lost = run("diff", str(tmp_path / "old.json"), str(tmp_path / "shrank.json"), "-f", "markdown")
    assert lost.exit_code == 1
    assert lost.stdout.startswith("# Cluster VL set: 128,256 -> 128 (incomplete: 1 of 2 not")
    assert "(SHRANK: lost 256)" in lost.stdout.splitlines()[0]


def test_zero_nodes_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text(json.dumps(scan_doc([])))
    for args in (
        ["report", str(tmp_path / "empty.json")],
        ["report", EXAMPLE, "--exclude", "*"],
        ["report", EXAMPLE, "--exclude", "*", "--per-group", "-f", "json"],
        ["check", "--vls", "128", str(tmp_path / "empty.json")],
        ["diff", EXAMPLE, str(tmp_path / "empty.json")],
    ):
        result = run(*args)
        assert (result.exit_code, result.stdout) == (2, ""), args
        assert result.stderr.startswith("vlcalc: error: no nodes to ") and (
            result.stderr.count("\n") == 1
        )


def test_limiting_names_every_limit_of_a_node_in_order() -> None:
    """Report.limiting merges limits at C speed; it must say what a name-by-name pass says,
    for nodes blamed by one limit, by several, and a name listed twice in one limit."""
    nodes = [
        NodeRecord("a", Status.OK, S(128, 256, 512)),
        NodeRecord("b", Status.OK, S(128, 256)),
        NodeRecord("c", Status.OK, S(128, 512)),
        NodeRecord("d", Status.NO_SVE, VLSet()),
        NodeRecord("e", Status.ERROR, None, "timeout", "no answer"),
    ]
    report = build_report(nodes)

    def by_name(report: Any) -> dict[str, tuple[str, ...]]:
        blamed: dict[str, tuple[str, ...]] = {}
        for limit in report.answer.limits:
            for name in limit.nodes:
                blamed[name] = (*blamed.get(name, ()), limit.kind)
        return blamed

    assert report.limiting() == by_name(report) and len(report.answer.limits) == 3
    first, *rest = report.answer.limits
    for extra in [("a", "c"), ("c", "c", "a"), ("d", "e", "d")]:
        limits = (first, dataclasses.replace(first, kind="max-vl", nodes=extra), *rest)
        changed = dataclasses.replace(
            report, answer=dataclasses.replace(report.answer, limits=limits)
        )
        assert changed.limiting() == by_name(changed)
        assert any(len(kinds) > 1 for kinds in changed.limiting().values())


# -- no node probed: no set, so nothing is known (not "SVE off", not "lost") ----------------------
def _none_probed(tmp_path: Path) -> str:
    path = tmp_path / "none.json"
    path.write_text(
        json.dumps(scan_doc([error_entry(f"a{i}", "unreachable", "refused", []) for i in range(3)]))
    )
    return str(path)


def test_diff_to_a_view_with_no_probed_node_is_not_a_loss(tmp_path: Path) -> None:
    none = _none_probed(tmp_path)
    result = run("diff", EXAMPLE, none)
    assert result.exit_code == 4, result.stdout  # was 1: "SHRANK: lost 128,256"
    first = result.stdout.splitlines()[0]
    assert "SHRANK" not in first and "no node was probed in the new view" in first
    assert "Like with like: no node was probed in both views" in result.stdout
    doc = json.loads(run("diff", EXAMPLE, none, "-f", "json").stdout)["cluster"]
    assert (doc["old"], doc["new"], doc["lost"], doc["certain"]) == ([128, 256], None, [], False)
    both = json.loads(run("diff", none, none, "-f", "json").stdout)
    assert both["common"] == {"nodes": 0, "old": None, "new": None, "lost": []}


def test_a_requirement_with_no_probed_node_is_unknown(tmp_path: Path) -> None:
    none = _none_probed(tmp_path)
    result = run("report", none, "--require-vl", "128")
    assert result.exit_code == 4, result.stdout  # was 1: "NOT met"
    assert "Required VL 128: unknown (no node was probed)" in result.stdout
    doc = json.loads(run("report", none, "--require-vl", "128", "-f", "json").stdout)
    assert doc["requirement"] == {"vl": 128, "met": None}
    # Some node probed: a VL missing there is missing from the whole fleet's set too (exit 1).
    assert run("report", MIXED, "--require-vl", "2048").exit_code == 1


def test_check_advice_from_incomplete_data_says_so(tmp_path: Path) -> None:
    partial = tmp_path / "partial.json"
    partial.write_text(
        json.dumps(
            scan_doc(
                [ok_entry("v1", hardware_doc("v1", "vl384"), [])]
                + [error_entry(f"a{i}", "timeout", "no answer", []) for i in range(3)]
            )
        )
    )
    for fmt in ("table", "markdown"):
        result = run("check", "--vls", "host,sve=on", str(partial), "-f", fmt)
        assert result.exit_code == 4
        text = " ".join(result.stdout.replace("\\", "").split())  # Markdown escapes ( and :
        assert "every probed node gives the same set today" in text
        assert "(INCOMPLETE: 3 of 4 nodes not probed; they may reject this guest" in text
    doc = json.loads(run("check", "--vls", "host,sve=on", str(partial), "-f", "json").stdout)
    assert doc["migration_safe"] is None and doc["complete"] is False
    none = run("check", "--vls", "128", _none_probed(tmp_path))
    assert none.exit_code == 4
    assert "unknown: no node was probed (3 not probed)" in " ".join(none.stdout.split())


def test_per_group_settings_go_on_past_a_group_qemu_cannot_express(tmp_path: Path) -> None:
    wide = list(range(128, 4096 + 1, 128))
    path = tmp_path / "groups.json"
    path.write_text(
        json.dumps(
            scan_doc(
                [
                    ok_entry("w1", probe_doc("w1", wide), ["wide"]),
                    ok_entry("a1", hardware_doc("a1", "a64fx"), ["small"]),
                ]
            )
        )
    )
    result = run("report", str(path), "--per-group", "-f", "qemu")
    assert result.exit_code == 2
    assert "# group wide" not in result.stdout  # no header without its settings
    assert "# group small\n-cpu host,sve=on,sve128=on,sve256=on,sve384=off,sve512=on" in (
        result.stdout
    )
    assert "# group all\n-cpu host,sve=on,sve128=on,sve256=on\n" in result.stdout
    assert "group wide: VL 4096 is above QEMU's largest vector length" in result.stderr


def test_names_that_print_alike_are_refused(tmp_path: Path) -> None:
    """'a64fx\\u200b' and 'a64fx\\u200c' both show as 'a64fx?': merged, a removed node would
    vanish from diff and two groups would give one answer."""
    nodes = [
        ok_entry("a\u200b", hardware_doc("h1", "a64fx"), ["dom\u200b"]),
        ok_entry("a\u200c", hardware_doc("h2", "vl384"), ["dom\u200c"]),
    ]
    path = tmp_path / "alike.json"
    path.write_text(json.dumps(scan_doc(nodes)))
    result = run("report", str(path))
    assert result.exit_code == 2
    assert "nodes 'a\\u200b' and 'a\\u200c' are both shown as 'a?': rename one" in result.stderr
    nodes[1]["name"] = "b"
    path.write_text(json.dumps(scan_doc(nodes)))
    grouped = run("report", str(path), "--per-group", "-f", "qemu")
    assert grouped.exit_code == 2 and "groups 'dom\\u200b' and 'dom\\u200c'" in grouped.stderr


def test_one_machine_under_two_names_is_a_warning(tmp_path: Path) -> None:
    """Two inventory names whose probes answer with one host name: the same machine twice (the
    ladder and profiles count it twice); the answer itself is unchanged."""
    path = tmp_path / "twice.json"
    path.write_text(
        json.dumps(
            scan_doc(
                [
                    ok_entry("kvm1", hardware_doc("kvm1.example", "a64fx"), []),
                    ok_entry("kvm1-alias", hardware_doc("kvm1.example", "a64fx"), []),
                    ok_entry("kvm2", hardware_doc("kvm2.example", "graviton3"), []),
                ]
            )
        )
    )
    for args in (["report", str(path)], ["check", "--vls", "128", str(path)]):
        result = run(*args)
        assert result.exit_code == 0
        assert result.stderr == (
            "vlcalc: warning: nodes kvm1, kvm1-alias answered with the same host name "
            "'kvm1.example': one machine under two names counts twice\n"
        )
    assert run("report", EXAMPLE).stderr == ""
