"""Reading probe and scan documents: what is accepted, and one clear error for what is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from vlcalc.answer import record_answer
from vlcalc.documents import (
    MAX_DOCUMENT_BYTES,
    Document,
    ScanDocument,
    ScanNode,
    _LazyScanDocument,
    _LazyScanNode,
    decode,
    parse_document,
    scan_records,
)
from vlcalc.errors import DocumentError
from vlcalc.files import parse_bytes, read_capped, read_paths
from vlcalc.model import ErrorKind, Status
from vlcalc.report import build_check
from vlcalc.transport.base import RunResult, Target
from vlcalc.vl import VLSet

from fleet_fixtures import (
    error_entry,
    hardware_doc,
    mixed_fleet,
    ok_entry,
    probe_doc,
    scan_doc,
)


def write(path: Path, doc: Any) -> str:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_scan_document_keeps_every_node_with_status() -> None:
    nodes = parse_document(mixed_fleet(), source="s.json")
    assert [(n.name, n.status) for n in nodes] == [
        ("a64fx-01", "ok"),
        ("graviton3-01", "ok"),
        ("graviton4-01", "ok"),
        ("lab-384-01", "ok"),
        ("altra-01", "no-sve"),
        ("grace-01", "error"),
    ]
    grace = nodes[-1]
    assert grace.vls is None and grace.error_kind == "unreachable"
    assert nodes[0].groups == ("hpc",) and nodes[0].cpu_model == "Fujitsu A64FX"


def test_directory_of_probe_documents_is_named_by_hostname(tmp_path: Path) -> None:
    write(tmp_path / "b.json", hardware_doc("node-b", "graviton3"))
    write(tmp_path / "a.json", hardware_doc("node-a", "a64fx"))
    write(tmp_path / "notes.txt", "ignored")
    nodes = read_paths([str(tmp_path)])
    assert [n.name for n in nodes] == ["node-a", "node-b"]


def test_probe_error_document_is_an_error_node() -> None:
    doc = probe_doc("n1", None, error=("permission-denied", "add the user to group kvm"))
    (node,) = parse_document(doc, source="p.json")
    assert (node.status, node.error_kind) == ("error", "permission-denied")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "p.json: not JSON: object keys must be strings"),
        ("[1, 2]", "not a vlcalc document"),
        ({"schema": "other/1"}, "p.json: schema: not a vlcalc document"),
        (
            {
                **hardware_doc("n", "a64fx"),
                "sve": {"vls": [256, 128], "words": ["0x3"] + ["0x0"] * 7},
            },
            "p.json: sve.vls: must be ascending",
        ),
        (
            {**hardware_doc("n", "a64fx"), "sve": {"vls": [128], "words": ["0x3"] + ["0x0"] * 7}},
            "p.json: sve.words: the bitmap says 128,256 but vls says 128",
        ),
        (
            {**hardware_doc("n", "a64fx"), "error": {"kind": "x", "message": "y"}},
            "exactly one of sve and error",
        ),
        ({**hardware_doc("n", "a64fx"), "hostname": ""}, "empty hostname"),
        ({**hardware_doc("n", "a64fx"), "kernel": 5}, "p.json: kernel: Expected `str`, got `int`"),
    ],
)
def test_bad_documents_give_one_line_naming_file_and_field(
    tmp_path: Path, content: Any, message: str
) -> None:
    path = write(tmp_path / "p.json", content)
    with pytest.raises(DocumentError) as caught:
        read_paths([path])
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert text.startswith(str(tmp_path))


def test_bad_node_inside_a_scan_names_the_node_path(tmp_path: Path) -> None:
    scan = mixed_fleet()
    scan["nodes"][2]["probe"]["sve"]["vls"] = [128, 100]
    path = write(tmp_path / "s.json", scan)
    with pytest.raises(DocumentError, match=r"nodes\[2\]\.probe\.sve\.vls\[1\]"):
        read_paths([path])
    scan = mixed_fleet()
    scan["nodes"][0]["outcome"] = "error"
    with pytest.raises(DocumentError, match=r"nodes\[0\]: outcome error without an error"):
        read_paths([write(tmp_path / "s2.json", scan)])


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", hardware_doc("same", "a64fx"))
    b = write(tmp_path / "b.json", hardware_doc("same", "graviton3"))
    with pytest.raises(DocumentError, match="node 'same' appears twice"):
        read_paths([a, b])


def test_missing_paths_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no such file"):
        read_paths([str(tmp_path / "nope.json")])
    with pytest.raises(DocumentError, match=r"no \*\.json documents"):
        read_paths([str(tmp_path)])
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DocumentError, match=r"not UTF-8|not JSON"):
        read_paths([str(tmp_path / "bin.json")])


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    doc = {**hardware_doc("n", "a64fx"), "sme": {"vls": [128, 256]}, "new": 1}
    (node,) = parse_document(doc, source="p.json")
    assert str(node.vls) == "128,256,512"


# -- caps on hostile input (issue 11): one line, exit 2, never a traceback ----------------------
PROBE_TEXT = json.dumps(hardware_doc("n1", "a64fx"))
HOSTILE_FILES = {
    "deep-array": ("[" * 100_000, "nested too deeply"),
    "deep-in-unknown-field": (
        PROBE_TEXT[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "nested too deeply",
    ),
    "huge-integer": ('{"a": ' + "9" * 5001 + "}", "Integer value out of range"),
    "huge-integer-in-probe": (
        PROBE_TEXT.replace('"probe_version": 1', '"probe_version": ' + "9" * 5001),
        "probe_version: Integer value out of range",
    ),
    "nan": (PROBE_TEXT.replace("31.0", "NaN"), "NaN and Infinity are not JSON numbers"),
    "infinity": (PROBE_TEXT.replace("14.2", "-Infinity"), "NaN and Infinity are not JSON"),
    "duplicate-key": (
        PROBE_TEXT.replace('"hostname": "n1"', '"hostname": "n1", "hostname": "n2"'),
        "the same key twice",
    ),
    "duplicate-key-in-escaped-text": (
        PROBE_TEXT.replace('"arch": "aarch64"', '"arch": "aarch64", "arch": "\\u0061"'),
        "the same key twice",
    ),
}


def vlcalc(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a process of its own: real exit code, real stderr, default limits."""
    return subprocess.run(
        [sys.executable, "-m", "vlcalc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], text: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("vlcalc: error: ") and done.stderr.count("\n") == 1
    assert text in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_json_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    content, message = HOSTILE_FILES[case]
    path = write(tmp_path / "p.json", content)
    assert_one_line_error(vlcalc("report", path, "-f", "json"), message)


def test_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "scan.json"
    os.mkfifo(fifo)  # nobody writes: reading it would block forever
    assert_one_line_error(vlcalc("report", str(fifo)), "not a regular file")


def test_a_device_is_refused() -> None:
    assert_one_line_error(vlcalc("report", "/dev/zero"), "not a regular file")


def test_a_file_over_the_cap_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with open(path, "wb") as handle:  # sparse: no disk, no memory
        handle.truncate(MAX_DOCUMENT_BYTES + 1)
    assert_one_line_error(vlcalc("report", str(path)), "more than vlcalc reads")


def test_the_cap_is_checked_on_what_is_read(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(PROBE_TEXT)
    with pytest.raises(DocumentError, match="more than vlcalc reads from one document"):
        read_capped(path, limit=len(PROBE_TEXT) - 1)
    assert read_capped(path, limit=len(PROBE_TEXT)) == PROBE_TEXT.encode()


def test_the_cap_fits_a_100000_node_scan() -> None:
    scan = mixed_fleet()
    node_bytes = len(json.dumps(scan["nodes"][0], indent=1))  # --save writes indent=1
    assert 100_000 * node_bytes * 2 < MAX_DOCUMENT_BYTES


def test_duplicate_keys_are_refused_wherever_they_are() -> None:
    scan = json.dumps(mixed_fleet())
    assert parse_bytes(scan.encode(), source="s.json")  # the fast count says: none
    for before, after in [
        ('"limit": null', '"limit": null, "limit": "x"'),  # a known field
        ('"total": 31.0', '"total": 31.0, "total": 1'),  # inside a free-form object
        ('"interrupted": false', '"interrupted": false, "new": 1, "new": 2'),  # an unknown one
    ]:
        with pytest.raises(DocumentError, match="same key twice"):
            parse_bytes(scan.replace(before, after, 1).encode(), source="s.json")
    # Unknown fields and backslashes take the exact path, and are fine without a repeat.
    unknown = scan.replace('"limit": null', '"limit": null, "sme": {"vls": [128]}, "a": "\\"x:"')
    assert len(parse_bytes(unknown.encode(), source="s.json")) == 6


def test_an_unknown_error_kind_is_kept() -> None:
    doc = probe_doc("n1", None, error=("kvm-sme-api", "a newer probe's kind"))
    (node,) = parse_document(doc, source="p.json")
    assert node.error_kind == "kvm-sme-api" and not isinstance(node.error_kind, ErrorKind)
    (known,) = parse_document(probe_doc("n2", None, error=("no-kvm", "m")), source="p.json")
    assert known.error_kind is ErrorKind.NO_KVM and known.status is Status.ERROR


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (PROBE_TEXT.replace("31.0", "NaN").encode(), "NaN and Infinity"),
        (b'{"a": ' + b"9" * 5001 + b"}", "Integer value out of range"),
        (PROBE_TEXT.replace('"arch"', '"kernel": "x", "arch"').encode(), "same key twice"),
    ],
    ids=["deep", "nan", "huge-integer", "duplicate-key"],
)
def test_a_node_printing_hostile_json_is_bad_output(stdout: bytes, reason: str) -> None:
    record, probe = record_answer(Target("n1", "n1"), RunResult(0, stdout, b""))
    assert (record.status, record.error_kind, probe) == (Status.ERROR, ErrorKind.BAD_OUTPUT, None)
    assert record.error_message is not None and reason in record.error_message


def test_the_probes_trials_reach_check() -> None:
    doc = hardware_doc("n1", "a64fx")
    trial_words = VLSet.from_vls([128, 256]).hex_words()
    doc["trials"] = [
        {"spec": "128,256", "vls": [128, 256], "words": trial_words, "accepted": False}
    ]
    (node,) = parse_document(doc, source="p.json")
    assert [(t.vls, t.accepted) for t in node.trials] == [((128, 256), False)]
    (verdict,) = build_check([node], VLSet.from_vls([128, 256])).verdicts
    assert (verdict.kernel, verdict.model, verdict.verdict) == ("reject", "accept", "reject")
    assert node.probe is not None and node.probe["trials"][0]["accepted"] is False


# -- the fast path for a large scan (documents.scan_records) ---------------------------------------
def _fleet_scan(hostnames: list[str] | None = None) -> dict[str, Any]:
    """A scan with repeated probe kinds (templates) and a failed node."""
    kinds = ["a64fx", "graviton3", "altra"]
    names = hostnames or [f"n{index}.example" for index in range(7)]
    entries = [
        ok_entry(f"node{index}", hardware_doc(name, kinds[index % 3]), [f"rack{index % 2}"])
        for index, name in enumerate(names)
    ]
    entries.append(error_entry("down.example", "unreachable", "connection refused", ["rack0"]))
    return scan_doc(entries)


def _full_path(data: bytes) -> list[Any]:
    return parse_document(decode(data, Document, source="s.json"), source="s.json")  # type: ignore[arg-type]


@pytest.mark.parametrize("indent", [None, 1])
def test_the_scan_shortcut_gives_the_records_of_the_full_path(indent: int | None) -> None:
    hostnames = ["n1", "n2:x", "ünïcode-host", "", "n5", "a" * 1024, "n7"]
    data = json.dumps(_fleet_scan(hostnames), indent=indent, ensure_ascii=False).encode()
    fast = scan_records(data, source="s.json")
    assert fast is not None and fast == _full_path(data)
    # Each node has its own probe document (its own hostname), the rest is shared per template.
    assert [node.document.hostname for node in fast if node.document] == hostnames
    assert fast[0].kernel is fast[3].kernel and fast[0].document is not fast[3].document


def test_the_scan_shortcut_finds_the_hostname_wherever_it_is() -> None:
    """Probes whose keys come in another order (another text before the hostname), between
    probes of the usual order."""
    scan = _fleet_scan(["n1", "n2", "n3", "n4", "n5", "n6"])
    for index in (1, 2, 4):
        probe = scan["nodes"][index]["probe"]
        scan["nodes"][index]["probe"] = dict(reversed(list(probe.items())))
    data = json.dumps(scan).encode()
    fast = scan_records(data, source="s.json")
    assert fast is not None and fast == _full_path(data)
    assert [node.hostname for node in fast[:6]] == ["n1", "n2", "n3", "n4", "n5", "n6"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ('"n2"', '"n\\u0032"'),  # a backslash anywhere: strings are not their bytes
        ('"query": 14.2', '"query": 14.2, "query": 1'),  # a repeated key inside a probe
        ('"arch": "aarch64"', '"arch": "aarch64", "sme": {"x": 1}'),  # an unknown probe field
        ('"arch": "aarch64"', '"arch": "aarch64", "hostname": "again"'),  # two hostnames
        ('"arch": "aarch64"', '"arch": "aarch64", "note": "hostname"'),  # "hostname" as a value
        ('"limit": null', '"limit": null, "limit": null'),  # a repeated key in the scan
        ('"hostname": "n2"', '"hostname": "n2\\u001b"'),  # a control character
        ('"probe": null', '"probe": {}'),  # a probe on a failed node
    ],
)
def test_the_scan_shortcut_declines_what_it_cannot_vouch_for(before: str, after: str) -> None:
    text = json.dumps(_fleet_scan(["n1", "n2", "n3", "n4", "n5"]))
    assert text.count(before) >= 1
    changed = text.replace(before, after).encode()
    assert scan_records(changed, source="s.json") is None


@pytest.mark.parametrize(
    ("before", "after", "field"),
    [
        ('"hostname": "n5"', '"hostname": "n5\x7f"', "nodes[4].probe.hostname"),
        ('"hostname": "n5"', '"hostname": 5', "nodes[4].probe.hostname"),
        ('"hostname": "n5"', '"hostname": "' + "a" * 1025 + '"', "nodes[4].probe.hostname"),
        ('"hostname": "n5"', '"name": "x"', "nodes[4].probe.hostname"),
        ('"vls": [128, 256, 512]', '"vls": [128, 512]', "nodes[0].probe.sve.words"),
        ('"name": "node2"', '"name": ""', "nodes[2].name"),
    ],
)
def test_a_bad_node_gets_the_full_paths_error(before: str, after: str, field: str) -> None:
    """Nodes after the first of their template are judged by the shortcut: what it declines,
    the full path refuses with its own message."""
    text = json.dumps(_fleet_scan(["n1", "n2", "n3", "n4", "n5"])).replace(before, after, 1)
    assert scan_records(text.encode(), source="s.json") is None
    with pytest.raises(DocumentError) as caught:
        parse_bytes(text.encode(), source="s.json")
    assert caught.value.field == field


def test_the_lazy_scan_model_is_the_scan_model_but_for_the_probe() -> None:
    def shape(struct: type[Any]) -> list[tuple[str, Any, Any]]:
        return [(f.name, f.type, f.default) for f in msgspec.structs.fields(struct)]

    lazy = [f for f in shape(_LazyScanNode) if f[0] != "probe"]
    assert lazy == [f for f in shape(ScanNode) if f[0] != "probe"]
    assert shape(_LazyScanDocument)[:2] == shape(ScanDocument)[:2]
    assert shape(_LazyScanDocument)[3:] == shape(ScanDocument)[3:]
    assert _LazyScanDocument.__struct_config__.tag == ScanDocument.__struct_config__.tag
