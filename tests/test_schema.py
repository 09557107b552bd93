"""vlcalc's own validator must agree with the reference jsonschema package on its schemas."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlcalc.schema import compile_schema, load_schema, validator

from fleet_fixtures import error_entry, hardware_doc, mixed_fleet, ok_entry, probe_doc, scan_doc

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 70000) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
PROBE_KEYS = ["schema", "hostname", "kernel", "arch", "sve", "error", "kvm", "cpu", "trials"]


def mutate(doc: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    if key == "sve" and isinstance(value, dict):
        changed["sve"] = {"vls": value.get("", [128]), "words": ["0x1"] * 8, **value}
    else:
        changed[key] = value
    return changed


@pytest.mark.parametrize("name", ["probe-1", "scan-1"])
def test_schemas_are_valid_json_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema(name))


@settings(max_examples=400)
@given(st.sampled_from(PROBE_KEYS), json_values)
def test_probe_validator_agrees_with_jsonschema(key: str, value: Any) -> None:
    doc = mutate(hardware_doc("n1", "a64fx"), key, value)
    reference = jsonschema.Draft202012Validator(load_schema("probe-1")).is_valid(doc)
    assert (validator("probe-1")(doc, "") is None) == reference


@settings(max_examples=200)
@given(st.sampled_from(["name", "outcome", "probe", "error", "groups"]), json_values)
def test_scan_validator_agrees_with_jsonschema(key: str, value: Any) -> None:
    doc = mixed_fleet()
    doc["nodes"][0][key] = value
    reference = jsonschema.Draft202012Validator(load_schema("scan-1")).is_valid(doc)
    assert (validator("scan-1")(doc, "") is None) == reference


@pytest.mark.parametrize(
    "doc",
    [
        hardware_doc("n1", "altra"),
        probe_doc("n2", None, error=("permission-denied", "add the user to group kvm")),
        probe_doc("n3", [128 * vq for vq in range(1, 513)]),
    ],
)
def test_good_documents_pass_both(doc: dict[str, Any]) -> None:
    assert validator("probe-1")(doc, "") is None
    jsonschema.validate(doc, load_schema("probe-1"))
    entry = ok_entry("x", doc, ["g"]) if doc["error"] is None else error_entry("x", "t", "m", [])
    scan = scan_doc([entry])
    assert validator("scan-1")(scan, "") is None
    jsonschema.validate(scan, load_schema("scan-1"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hostname": "evil\x1b[31m"}, "hostname:"),
        ({"hostname": "x" * 2000}, "maxLength"),
        ({"sve": {"vls": [128, 200], "words": ["0x1"] * 8}}, "sve.vls[1]"),
        ({"sve": {"vls": [128], "words": ["0x1"] * 7}}, "sve.words"),
        ({"sve": {"vls": [128], "words": ["1"] * 8}}, "sve.words[0]"),
        ({"schema": "vlcalc.probe/2"}, "schema: expected"),
        ({"error": {"kind": "Bad Kind", "message": "m"}}, "error.kind"),
        ({"trials": [{"vls": [128], "accepted": "yes"}]}, "trials[0].accepted"),
    ],
)
def test_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    doc = {**hardware_doc("n1", "a64fx"), **change}
    error = validator("probe-1")(doc, "")
    assert error is not None and message in error


def test_missing_field_and_unsupported_keyword() -> None:
    doc = hardware_doc("n1", "a64fx")
    del doc["kernel"]
    assert validator("probe-1")(doc, "") == 'document: missing required field "kernel"'
    with pytest.raises(ValueError, match="not supported"):
        compile_schema({"type": "object", "patternProperties": {}})
