"""The document model (vlcalc/documents.py) is the contract: the shipped JSON Schemas are generated
from it, and it agrees with the reference jsonschema package on generated documents."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlcalc.documents import (
    SCHEMA_FILES,
    ProbeDocument,
    ScanDocument,
    check_patterns,
    decode,
    json_schema,
    split_validation_message,
)
from vlcalc.errors import DocumentError

from fleet_fixtures import error_entry, hardware_doc, mixed_fleet, ok_entry, probe_doc, scan_doc

SCHEMAS = Path(__file__).resolve().parent.parent / "vlcalc" / "schemas"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 70000) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
PROBE_KEYS = [
    "schema", "hostname", "kernel", "arch", "sve", "error", "kvm", "cpu", "trials", "python",
    "probe_version", "timing_ms",
]  # fmt: skip


def shipped(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text("utf-8"))
    return loaded


def model_accepts(doc: Any, model: type[ProbeDocument] | type[ScanDocument]) -> bool:
    """Valid for the model: decoded as ``model`` and the patterns checked in Python."""
    try:
        decoded = decode(json.dumps(doc).encode(), model, source="t")
        probes = [decoded] if isinstance(decoded, ProbeDocument) else decoded.nodes
        for probe in probes:
            probe = probe if isinstance(probe, ProbeDocument) else probe.probe
            if probe is not None:
                check_patterns(probe, source="t")
    except DocumentError:
        return False
    return True


def mutate(doc: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    if key == "sve" and isinstance(value, dict):
        changed["sve"] = {"vls": value.get("", [128]), "words": ["0x1"] * 8, **value}
    else:
        changed[key] = value
    return changed


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_shipped_schemas_are_generated_from_the_model(name: str) -> None:
    # Regenerate with: python -c 'from vlcalc.documents import write_schemas; write_schemas()'
    assert shipped(name) == json_schema(name)
    jsonschema.Draft202012Validator.check_schema(shipped(name))


@settings(max_examples=400)
@given(st.sampled_from(PROBE_KEYS), json_values)
def test_probe_model_agrees_with_jsonschema(key: str, value: Any) -> None:
    doc = mutate(hardware_doc("n1", "a64fx"), key, value)
    reference = jsonschema.Draft202012Validator(shipped("probe-1")).is_valid(doc)
    assert model_accepts(doc, ProbeDocument) == reference


@settings(max_examples=200)
@given(st.sampled_from(["name", "outcome", "probe", "error", "groups", "target"]), json_values)
def test_scan_model_agrees_with_jsonschema(key: str, value: Any) -> None:
    doc = mixed_fleet()
    doc["nodes"][0][key] = value
    reference = jsonschema.Draft202012Validator(shipped("scan-1")).is_valid(doc)
    assert model_accepts(doc, ScanDocument) == reference


@settings(max_examples=200)
@given(
    st.sampled_from(["hostname", "kernel", "arch"]),
    st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=8),
)
def test_text_pattern_agrees_with_jsonschema(key: str, text: str) -> None:
    doc = {**hardware_doc("n1", "a64fx"), key: text}
    reference = jsonschema.Draft202012Validator(shipped("probe-1")).is_valid(doc)
    assert model_accepts(doc, ProbeDocument) == reference


@pytest.mark.parametrize(
    "doc",
    [
        hardware_doc("n1", "altra"),
        probe_doc("n2", None, error=("permission-denied", "add the user to group kvm")),
        probe_doc("n3", [128 * vq for vq in range(1, 513)]),
    ],
)
def test_good_documents_pass_both(doc: dict[str, Any]) -> None:
    assert model_accepts(doc, ProbeDocument)
    jsonschema.validate(doc, shipped("probe-1"))
    entry = ok_entry("x", doc, ["g"]) if doc["error"] is None else error_entry("x", "t", "m", [])
    scan = scan_doc([entry])
    assert model_accepts(scan, ScanDocument)
    jsonschema.validate(scan, shipped("scan-1"))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"hostname": "evil\x1b[31m"}, "hostname", "control characters"),
        ({"hostname": "x" * 2000}, "hostname", "length <= 1024"),
        ({"sve": {"vls": [128, 200], "words": ["0x1"] * 8}}, "sve.vls[1]", "multiple of 128"),
        ({"sve": {"vls": [128], "words": ["0x1"] * 7}}, "sve.words", "length >= 8"),
        ({"sve": {"vls": [128], "words": ["1"] * 8}}, "sve.words[0]", "hexadecimal word"),
        ({"schema": "vlcalc.probe/2"}, "schema", "Invalid value 'vlcalc.probe/2'"),
        ({"error": {"kind": "Bad Kind", "message": "m"}}, "error.kind", "regex"),
        ({"trials": [{"vls": [128], "accepted": "yes"}]}, "trials[0].accepted", "`bool`"),
    ],
)
def test_errors_carry_the_field(change: dict[str, Any], field: str, message: str) -> None:
    doc = {**hardware_doc("n1", "a64fx"), **change}
    with pytest.raises(DocumentError) as caught:
        decoded = decode(json.dumps(doc).encode(), ProbeDocument, source="p.json")
        check_patterns(decoded, source="p.json")
    assert (caught.value.source, caught.value.field) == ("p.json", field)
    assert message in caught.value.message


def test_a_missing_field_is_named_as_the_field() -> None:
    doc = mixed_fleet()
    del doc["nodes"][1]["probe"]["kernel"]
    with pytest.raises(DocumentError) as caught:
        decode(json.dumps(doc).encode(), ScanDocument, source="s.json")
    assert (caught.value.field, caught.value.message) == ("nodes[1].probe.kernel", "missing")
    assert str(caught.value) == "s.json: nodes[1].probe.kernel: missing"


@pytest.mark.parametrize(
    ("message", "split"),
    [
        ("Expected `int` >= 128 - at `$.nodes[2].probe.sve.vls[1]`",
         ("Expected `int` >= 128", "nodes[2].probe.sve.vls[1]")),
        ("Expected `str`, got `int` - at `$[0]`", ("Expected `str`, got `int`", "[0]")),
        ("Object missing required field `a`", ("missing", "a")),
        ("Object missing required field `b` - at `$[1]`", ("missing", "[1].b")),
        ("Expected `object`, got `array` - at `$`", ("Expected `object`, got `array`", None)),
    ],
)  # fmt: skip
def test_split_validation_message(message: str, split: tuple[str, str | None]) -> None:
    """The one place that reads msgspec's wording: if a msgspec release changes it, this fails."""
    assert split_validation_message(message) == split


def test_msgspec_still_words_paths_as_split_validation_message_expects() -> None:
    doc = mixed_fleet()
    doc["nodes"][2]["probe"]["sve"]["vls"] = [128, 100]
    with pytest.raises(DocumentError) as caught:
        decode(json.dumps(doc).encode(), ScanDocument, source="s.json")
    assert caught.value.field == "nodes[2].probe.sve.vls[1]"
    assert caught.value.message == "Expected `int` >= 128"
