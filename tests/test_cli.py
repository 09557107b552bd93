"""The command line: every exit code, every format, every bad input gets one line and code 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vlcalc.cli import app
from vlcalc.documents import parse_document
from vlcalc.render import as_json, make_console, md, print_report
from vlcalc.report import build_report, build_view

from fleet_fixtures import (
    error_entry,
    example_fleet,
    hardware_doc,
    mixed_fleet,
    ok_entry,
    probe_doc,
    scan_doc,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "inventories" / "example-scan.json")
MIXED = str(ROOT / "inventories" / "mixed-fleet-scan.json")


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_shipped_examples_are_what_the_fixtures_build() -> None:
    assert json.loads(Path(EXAMPLE).read_text()) == example_fleet()
    assert json.loads(Path(MIXED).read_text()) == mixed_fleet()


def test_report_table_on_the_example() -> None:
    result = run("report", EXAMPLE)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Cluster VL set: 128,256" in out
    assert "plain intersection would be 128,256,512" in out
    assert "divergence" in out and "sve384-01" in out
    assert "-cpu host,sve=on,sve128=on,sve256=on" in out
    assert result.stderr == ""


def test_report_json_on_the_mixed_fleet_agrees_with_the_table() -> None:
    result = run("report", MIXED, "--format", "json")
    assert result.exit_code == 4  # grace-01 unreachable: incomplete
    doc = json.loads(result.stdout)
    assert doc["schema"] == "vlcalc.report/1" and doc["complete"] is False
    assert doc["cluster"]["vls"] == [] and doc["cluster"]["qemu"] == "host,sve=off"
    status = {n["name"]: n["status"] for n in doc["nodes"]}
    assert status == {
        "a64fx-01": "ok",
        "graviton3-01": "ok",
        "graviton4-01": "ok",
        "lab-384-01": "ok",
        "altra-01": "no-sve",
        "grace-01": "error",
    }
    kinds = [(limit["kind"], limit["nodes"], limit["binding"]) for limit in doc["limits"]]
    assert kinds == [
        ("no-sve", ["altra-01"], True),
        ("max-vl", ["graviton4-01"], False),
        ("unprobed", ["grace-01"], True),
    ]
    table = run("report", MIXED).stdout
    for name, node_status in status.items():
        assert name in table and node_status in table
    assert "SVE off" in table and "SVE nodes alone could run 128" in table


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("qemu", "-cpu host,sve=on,sve128=on,sve256=on\n"),
        ("kvm", "KVM_REG_ARM64_SVE_VLS = 0x3 0x0 0x0 0x0 0x0 0x0 0x0 0x0\n"),
        (
            "libvirt",
            "<cpu mode='host-passthrough' check='none'>\n  <feature policy='require' "
            "name='sve128'/>\n  <feature policy='require' name='sve256'/>\n</cpu>\n",
        ),
    ],
)
def test_settings_formats(fmt: str, expected: str) -> None:
    result = run("report", EXAMPLE, "-f", fmt)
    assert (result.exit_code, result.stdout) == (0, expected)


def test_markdown_escapes_node_text(tmp_path: Path) -> None:
    doc = hardware_doc("evil|name*<b>", "a64fx")
    (tmp_path / "n.json").write_text(json.dumps(doc))
    result = run("report", str(tmp_path), "-f", "markdown")
    assert result.exit_code == 0
    assert "evil\\|name\\*\\<b\\>" in result.stdout
    assert "**Cluster VL set: 128,256,512**" in result.stdout


def test_table_never_reads_node_text_as_markup(tmp_path: Path) -> None:
    (tmp_path / "n.json").write_text(json.dumps(hardware_doc("[bold red]x[/]", "a64fx")))
    result = run("report", str(tmp_path))
    assert "[bold red]x[/]" in result.stdout


@pytest.mark.parametrize(("vl", "code"), [("256", 0), ("512", 1)])
def test_require_vl(vl: str, code: int) -> None:
    assert run("report", EXAMPLE, "--require-vl", vl).exit_code == code


def test_require_vl_failure_wins_over_incomplete() -> None:
    assert run("report", MIXED, "--require-vl", "128").exit_code == 1


# EXAMPLE: a64fx-01..04 offer 128,256,512; sve384-01..02 offer 128,256,384,512.
A64FX = [f"a64fx-{i:02d}" for i in range(1, 5)]
SVE384 = ["sve384-01", "sve384-02"]


@pytest.mark.parametrize(
    ("spec", "code", "verdicts", "guest"),
    [
        # a fixed set: the kernel's rule on every node
        ("128,256", 0, {"accept": 6}, {"all": [128, 256]}),
        ("0xf", 1, {"accept": 2, "reject": 4}, {"sve384-01": [128, 256, 384, 512]}),
        # pinned QEMU properties: the same set everywhere, or QEMU refuses to start
        (
            "host,sve=on,sve128=on,sve256=on,sve384=off,sve512=on",
            1,
            {"accept": 4, "reject": 2},
            {"a64fx-01": [128, 256, 512], "sve384-01": None},
        ),
        ("-cpu host,sve=on,sve128=on,sve256=on", 0, {"accept": 6}, {"all": [128, 256]}),
        # host-dependent properties: QEMU fills in each host's own lengths
        (
            "sve128=on,sve256=on,sve512=on",  # 384 is auto-enabled on the sve384 nodes
            1,
            {"accept": 6},
            {"a64fx-01": [128, 256, 512], "sve384-01": [128, 256, 384, 512]},
        ),
        (
            "host",
            1,
            {"accept": 6},
            {"a64fx-01": [128, 256, 512], "sve384-01": [128, 256, 384, 512]},
        ),
        (
            "sve=on",
            1,
            {"accept": 6},
            {"a64fx-02": [128, 256, 512], "sve384-02": [128, 256, 384, 512]},
        ),
        ("sve256=on", 0, {"accept": 6}, {"all": [128, 256]}),  # 128 auto-enabled everywhere
        ("sve512=off", 1, {"accept": 6}, {"a64fx-01": [128, 256], "sve384-01": [128, 256, 384]}),
        ("sve384=off", 1, {"accept": 6}, {"a64fx-01": [128, 256, 512], "sve384-01": [128, 256]}),
        ("sve128=off", 1, {"reject": 6}, {"all": None}),  # no length left
        ("sve=off", 0, {"accept": 6}, {"all": []}),
    ],
)
def test_check_on_the_example(
    spec: str, code: int, verdicts: dict[str, int], guest: dict[str, list[int] | None]
) -> None:
    result = run("check", "--vls", spec, EXAMPLE, "-f", "json")
    assert result.exit_code == code, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    counts = {k: doc[{"accept": "accepted", "reject": "rejected"}[k]] for k in verdicts}
    assert counts == verdicts
    by_name = {n["name"]: n["guest_vls"] for n in doc["nodes"]}
    for name, vls in guest.items():
        for node in A64FX + SVE384 if name == "all" else [name]:
            assert by_name[node] == vls, node
    assert doc["migration_safe"] is (len(doc["guest_sets"]) <= 1)


def test_check_host_dependent_spec_names_both_sides_and_the_fix() -> None:
    result = run("check", "--vls", "host,sve=on", EXAMPLE, "-f", "json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["requested"]["host_dependent"] is True and doc["requested"]["vls"] is None
    assert doc["requested"]["props"] == {"sve": "on"}
    assert doc["migration_safe"] is False
    assert doc["guest_sets"] == [
        {"vls": [128, 256, 512], "nodes": A64FX},
        {"vls": [128, 256, 384, 512], "nodes": SVE384},
    ]
    assert doc["divergence"] == (
        "accepted, but the guest gets a different set on nodes a64fx-01, a64fx-02, a64fx-03, "
        "a64fx-04 (128,256,512) vs nodes sve384-01, sve384-02 (128,256,384,512): "
        "not migration-safe"
    )
    assert doc["pin"]["vls"] == [128, 256]
    assert doc["pin"]["qemu"] == "host,sve=on,sve128=on,sve256=on"
    table = run("check", "--vls", "host,sve=on", EXAMPLE)
    assert table.exit_code == 1
    flat = " ".join(table.stdout.split())
    assert "not migration-safe" in flat and "pin one set on every node with -cpu host" in flat
    md = run("check", "--vls", "sve=on", EXAMPLE, "-f", "markdown")
    assert md.exit_code == 1 and "not migration-safe" in md.stdout


def test_check_same_set_today_but_host_dependent_says_so() -> None:
    result = run("check", "--vls", "sve256=on", EXAMPLE)
    assert result.exit_code == 0
    flat = " ".join(result.stdout.split())
    assert "depends on the host" in flat and "-cpu host,sve=on,sve128=on,sve256=on" in flat


def test_check_qemu_refusals_are_that_nodes_reject_with_qemus_reason() -> None:
    result = run("check", "--vls", "host,sve=on,sve128=on", MIXED, "-f", "json")
    by_name = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert result.exit_code == 1
    assert by_name["altra-01"]["verdict"] == "reject"
    assert (
        "QEMU refuses to start here: 'sve' feature not supported by KVM on this host"
        in (by_name["altra-01"]["reason"])
    )
    assert by_name["graviton4-01"]["guest_vls"] == [128]
    assert by_name["grace-01"]["verdict"] == "unknown"
    pinned = run("check", "--vls", "sve128=on,sve256=on,sve384=off,sve512=on", MIXED, "-f", "json")
    reasons = {n["name"]: n["reason"] for n in json.loads(pinned.stdout)["nodes"]}
    assert (
        "cannot enable sve512: This CPU does not support the vector length 512-bits."
        in (reasons["graviton3-01"])
    )
    assert (
        "cannot disable sve384: The KVM host requires all supported vector lengths smaller "
        in (reasons["lab-384-01"])
    )
    assert "cannot enable sve512: SVE not supported by KVM on this host" in reasons["altra-01"]


def test_check_libvirt_cpu_is_read_as_the_properties_libvirt_passes() -> None:
    xml = (
        "<domain><cpu mode='host-passthrough'><feature policy='require' name='sve128'/>"
        "<feature policy='require' name='sve256'/></cpu></domain>"
    )
    result = run("check", "--vls", xml, EXAMPLE, "-f", "json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["requested"]["syntax"] == "libvirt"
    assert doc["requested"]["props"] == {"sve128": "on", "sve256": "on", "sve": "on"}
    assert doc["requested"]["vls"] == [128, 256] and doc["requested"]["notes"] == []
    only_512 = xml.replace("sve128'/><feature policy='require' name='sve256", "sve512")
    loose = run("check", "--vls", only_512, EXAMPLE, "-f", "json")
    assert loose.exit_code == 1 and json.loads(loose.stdout)["migration_safe"] is False


def test_check_reasons_and_unknown_nodes() -> None:
    result = run("check", "--vls", "128", MIXED, "-f", "json")
    assert result.exit_code == 1  # altra-01 rejects: it has no SVE at all
    by_name = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert by_name["altra-01"]["verdict"] == "reject"
    assert by_name["grace-01"]["verdict"] == "unknown"
    assert by_name["a64fx-01"]["verdict"] == "accept"
    off = run("check", "--vls", "sve=off", MIXED)
    assert off.exit_code == 4 and "unknown" in off.stdout
    md = run("check", "--vls", "128,256,512", EXAMPLE, "-f", "markdown")
    assert md.exit_code == 1 and "| sve384-01 | reject |" in md.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "missing.json"], "missing.json: no such file or directory"),
        (["report", EXAMPLE, "--require-vl", "100"], "--require-vl: 100 is not a vector length"),
        (["check", "--vls", "128,200", EXAMPLE], "--vls: 200 is not a vector length"),
        (["check", "--vls", "", EXAMPLE], "--vls: empty VL set"),
        (["check", "--vls", "sve4096=on", EXAMPLE], "--vls: Property 'host-arm-cpu.sve4096' not"),
        (["check", "--vls", "max,sve-max-vq=4", EXAMPLE], "--vls: Property 'max-arm-cpu.sve-max"),
        (["check", "--vls", "host,sve", EXAMPLE], "--vls: Expected key=value format, found sve."),
        (["check", "--vls", "sve128=maybe", EXAMPLE], "--vls: Parameter 'sve128' expects 'on'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"vlcalc: error: {message}" + result.stderr.split(message, 1)[1]
    assert result.stderr.count("\n") == 1


def test_usage_errors_exit_2() -> None:
    assert run("report").exit_code == 2
    assert run("check", EXAMPLE).exit_code == 2  # --vls missing
    assert run("frobnicate").exit_code == 2


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "vlcalc.scan/1", "nodes": 3}')
    proc = subprocess.run(
        [sys.executable, "-m", "vlcalc", "report", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"vlcalc: error: {bad}: ")
    version = subprocess.run(
        [sys.executable, "-m", "vlcalc", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("vlcalc 0.")


def test_probe_command_on_this_x86_machine_prints_a_not_arm64_document() -> None:
    result = run("probe", "--try", "sve128=on,sve256=on", "--try", "none")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "vlcalc.probe/1" and doc["error"]["kind"] == "not-arm64"
    (node,) = parse_document(doc, source="probe")
    assert node.status == "error"


def test_probe_command_refuses_a_bad_try() -> None:
    result = run("probe", "--try", "100")
    assert result.exit_code == 2 and "--try: 100 is not a vector length" in result.stderr


def test_scan_options_without_an_inventory_are_refused() -> None:
    result = run("check", "--vls", "128", EXAMPLE, "--limit", "a64fx-*")
    assert result.exit_code == 2
    assert "--limit: this option needs an inventory" in result.stderr


# -- unknown never looks known -----------------------------------------------------------------
def all_failed(tmp_path: Path) -> str:
    entries = [error_entry(f"n{i}", "unreachable", "connection refused", ["rack1"]) for i in (1, 2)]
    path = tmp_path / "failed.json"
    path.write_text(json.dumps(scan_doc(entries)))
    return str(path)


@pytest.mark.parametrize("fmt", ["qemu", "libvirt", "kvm"])
def test_no_settings_for_a_fleet_with_no_probed_node(fmt: str, tmp_path: Path) -> None:
    result = run("report", all_failed(tmp_path), "-f", fmt)
    assert (result.exit_code, result.stdout) == (4, "")
    assert result.stderr == (
        "vlcalc: error: no node was probed (0 of 2 nodes probed: the cluster set is unknown): "
        "no settings to print\n"
    )
    grouped = run("report", all_failed(tmp_path), "-f", fmt, "--per-group")
    assert grouped.exit_code == 4 and "sve" not in grouped.stdout
    assert grouped.stderr.count("vlcalc: error: group ") == 2  # rack1 and all


@pytest.mark.parametrize(
    ("fmt", "note"),
    [
        ("qemu", "# vlcalc: INCOMPLETE: 1 of 6 nodes not probed; a node not probed may reject "),
        ("kvm", "# vlcalc: INCOMPLETE: 1 of 6 nodes not probed; a node not probed may reject "),
        ("libvirt", "<!-- vlcalc: INCOMPLETE: 1 of 6 nodes not probed; a node not probed may "),
    ],
)
def test_settings_from_incomplete_data_are_labelled(fmt: str, note: str) -> None:
    result = run("report", MIXED, "-f", fmt)
    assert result.exit_code == 4
    first, *rest = result.stdout.splitlines()
    assert first.startswith(note) and "INCOMPLETE" not in "".join(rest)
    assert result.stderr.startswith("vlcalc: warning: INCOMPLETE: 1 of 6 nodes not probed")
    if fmt == "libvirt":
        assert first.endswith(" -->") and "--" not in first[4:-3]


def test_every_format_labels_an_incomplete_answer() -> None:
    doc = json.loads(run("report", MIXED, "-f", "json").stdout)
    assert doc["completeness"] == {
        "state": "partial",
        "total": 6,
        "probed": 5,
        "unprobed": 1,
        "caveat": "INCOMPLETE: 1 of 6 nodes not probed; a node not probed may reject this set",
    }
    assert doc["cluster"]["caveat"] == doc["completeness"]["caveat"]
    markdown = run("report", MIXED, "-f", "markdown").stdout
    assert "5 of 6 nodes probed; 1 not probed: the set may be too large." in markdown
    assert "> **INCOMPLETE: 1 of 6 nodes not probed" in markdown
    table = run("report", MIXED).stdout
    assert "INCOMPLETE: 1 of 6 nodes not probed" in table
    complete = run("report", EXAMPLE, "-f", "json")
    assert json.loads(complete.stdout)["completeness"]["caveat"] is None


def test_a_fleet_with_no_probed_node_is_unknown_in_every_format(tmp_path: Path) -> None:
    path = all_failed(tmp_path)
    doc = json.loads(run("report", path, "-f", "json").stdout)
    assert doc["completeness"]["state"] == "none" and doc["cluster"]["known"] is False
    assert [doc["cluster"][key] for key in ("qemu", "libvirt", "kvm_words")] == [None] * 3
    table = run("report", path)
    assert table.exit_code == 4 and "Cluster VL set: unknown  (no node was probed)" in table.stdout
    assert "SVE off" not in table.stdout and "-cpu" not in table.stdout
    markdown = run("report", path, "-f", "markdown").stdout
    assert "**Cluster VL set: unknown** (no node was probed)" in markdown
    assert "-cpu" not in markdown
    # Every Markdown table row has as many cells as its header, with no VL column at all.
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    assert rows[0] == "| Node | Status | Limits / error |"
    assert {line.count(" | ") for line in rows} == {2}
    assert run("check", "--vls", "128", path).exit_code == 4  # never approved


# -- one sanitising path -----------------------------------------------------------------------
HOSTILE = "ev\x1b[2Jil\u202e\u200bx\ny\u2028z"
CLEAN = "ev?[2Jil??x?y?z"


@pytest.fixture()
def hostile(tmp_path: Path) -> str:
    # The probe schema refuses C0/C1 controls in a kernel string, not bidi or zero-width ones.
    doc = hardware_doc("h", "a64fx", kernel="6.1-\u202e\u200b")
    entries = [
        ok_entry(HOSTILE, doc, [f"g-{HOSTILE}"]),
        error_entry(f"dead-{HOSTILE}", "timeout", f"no answer {HOSTILE}", [f"g-{HOSTILE}"]),
    ]
    (tmp_path / "h.json").write_text(json.dumps(scan_doc(entries)))
    return str(tmp_path / "h.json")


def assert_clean(text: str) -> None:
    for raw in ("\x1b", "\u202e", "\u200b", "\u2028"):
        assert raw not in text


@pytest.mark.parametrize("fmt", ["table", "markdown", "html", "json", "qemu", "libvirt", "kvm"])
def test_node_text_never_reaches_an_output_raw(fmt: str, hostile: str) -> None:
    for args in (["report", hostile], ["report", hostile, "--per-group"]):
        result = run(*args, "-f", fmt)
        assert result.exit_code == 4
        assert_clean(result.stdout + result.stderr)
    if fmt in ("table", "json"):
        assert CLEAN in run("report", hostile, "-f", fmt).stdout


def test_table_of_hostile_names_in_a_fixed_width_console(hostile: str) -> None:
    nodes = parse_document(json.loads(Path(hostile).read_text()), source="h")
    out = io.StringIO()
    print_report(build_view(build_report(nodes)), make_console(out, width=100))
    lines = out.getvalue().splitlines()
    assert max(map(len, lines)) <= 100
    assert any(line.startswith(f"│ {CLEAN} ") for line in lines)
    assert f"timeout: no answer {CLEAN}" in " ".join(lines)  # one row: the newline is gone
    assert_clean(out.getvalue())


def test_check_diff_and_group_headings_are_clean(hostile: str) -> None:
    check = run("check", "--vls", "128", hostile, "-f", "markdown")
    assert_clean(check.stdout) and CLEAN.replace("[", "\\[") in check.stdout
    diff = run("diff", EXAMPLE, hostile)
    assert_clean(diff.stdout) and f"- {CLEAN}: 128,256,512" in diff.stdout
    grouped = run("report", hostile, "--per-group", "-f", "markdown").stdout
    assert "# group g\\-" not in grouped and "# group g-ev?\\[2Jil??x?y?z" in grouped
    settings = run("report", hostile, "--per-group", "-f", "qemu").stdout
    assert settings.splitlines()[0] == f"# group g-{CLEAN}"


def test_markdown_escaping_is_complete() -> None:
    raw = 'a|b*c_d`e[f](g)<h>#i!j~k&l$m@n:o^p\\q{r}s+t"u'
    escaped = md(raw)
    assert escaped == (
        'a\\|b\\*c\\_d\\`e\\[f\\]\\(g\\)\\<h\\>\\#i\\!j\\~k\\&l\\$m\\@n\\:o\\^p\\\\q\\{r\\}s\\+t\\"u'
    )
    assert md("a\nb\u200bc\x1bd") == "a?b?c?d"  # a newline cannot end a table row


def test_a_set_above_2048_has_no_qemu_or_libvirt_form(tmp_path: Path) -> None:
    big = [128 * vq for vq in range(1, 18)]  # up to 2176: the KVM ABI allows it, QEMU does not
    (tmp_path / "n.json").write_text(json.dumps(probe_doc("big-01", big)))
    for fmt in ("qemu", "libvirt"):
        result = run("report", str(tmp_path), "-f", fmt)
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr.startswith("vlcalc: error: VL 2176 is above QEMU's largest")
        assert result.stderr.count("\n") == 1
    kvm = run("report", str(tmp_path), "-f", "kvm")
    assert kvm.exit_code == 0 and kvm.stdout.startswith("KVM_REG_ARM64_SVE_VLS = 0x1ffff ")
    doc = json.loads(run("report", str(tmp_path), "-f", "json").stdout)
    assert doc["cluster"]["qemu"] is None and doc["cluster"]["libvirt"] is None
    table = run("report", str(tmp_path))
    assert table.exit_code == 0 and "QEMU and libvirt cannot name" in " ".join(table.stdout.split())
    assert "QEMU and libvirt cannot name" in run("report", str(tmp_path), "-f", "markdown").stdout


def test_per_group_html_is_one_page() -> None:
    result = run("report", MIXED, "--per-group", "-f", "html")
    assert result.exit_code == 4
    page = result.stdout
    assert page.startswith("<!DOCTYPE html>") and page.count("<!DOCTYPE") == 1
    assert page.count("</html>") == 1 and 'id="g1-matrix"' in page and "== group" not in page


def test_as_json_lays_out_one_line_per_member_and_item() -> None:
    document = {"a": [], "b": {}, "c": [1, {"x": "é"}], "d": {"k": [1]}, "e": None}
    assert as_json(document) == (
        '{\n  "a": [],\n  "b": {},\n  "c": [\n    1,\n    {"x":"é"}\n  ],\n'
        '  "d": {\n    "k": [1]\n  },\n  "e": null\n}\n'
    )
    assert as_json({}) == "{\n\n}\n" and as_json({"a": 1}) == '{\n  "a": 1\n}\n'


def test_check_tells_an_inventory_from_documents(tmp_path: Path) -> None:
    """``check PATH``: one inventory to scan, or saved documents (an Ansible fact cache is a
    directory of files named by host, with no extension: documents, not an inventory)."""
    from vlcalc.app import is_inventory

    cache = tmp_path / "facts"
    cache.mkdir()
    (cache / "node01").write_text("{}")
    (cache / "s1_node02").write_text("{}")
    inventory_dir = tmp_path / "inventory"
    (inventory_dir / "group_vars").mkdir(parents=True)
    ini_dir = tmp_path / "ini"
    ini_dir.mkdir()
    (ini_dir / "prod.ini").write_text("[kvm]\nn1\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("[kvm]\nn1\n")
    assert not is_inventory(str(cache))
    assert not is_inventory("scan.json")
    assert is_inventory(str(inventory_dir)) and is_inventory(str(ini_dir))
    assert is_inventory(str(hosts)) and is_inventory("-") and is_inventory("x.YML")
