"""Reading probe and scan documents: what is accepted, and one clear error for what is not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vlcalc.documents import parse_document
from vlcalc.errors import DocumentError
from vlcalc.files import read_paths

from fleet_fixtures import hardware_doc, mixed_fleet, probe_doc


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
