"""What Ansible leaves behind, read by ``vlcalc report``: fact-cache files and registered results
(``vlcalc.ansible_facts``), without running Ansible (tests/test_ansible_preflight.py does)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vlcalc.ansible_facts import host_name_hint, parse_ansible
from vlcalc.documents import NodeRecord
from vlcalc.errors import DocumentError
from vlcalc.files import parse_bytes, read_paths
from vlcalc.vl import VLSet

from fleet_fixtures import hardware_doc, probe_doc

A64FX = hardware_doc("a64fx-01.probe", "a64fx")


def origin(line: int) -> dict[str, Any]:
    return {"path": "/srv/collect.yml", "line_num": line, "col_num": 18, "__ansible_type": "Origin"}


def cache_2_19(facts: dict[str, Any]) -> dict[str, Any]:
    """A jsonfile fact-cache file as ansible-core 2.19 writes it (captured shape: each fact set
    with set_fact is a tagged value carrying its Origin)."""
    tagged = {
        name: {"value": value, "tags": [origin(60)], "__ansible_type": "_AnsibleTaggedDict"}
        for name, value in facts.items()
    }
    return {"__payload__": json.dumps(tagged)}


def script_result(stdout: str, rc: int = 0, stderr: str = "", **extra: Any) -> dict[str, Any]:
    """The registered result of collect.yml's ansible.builtin.script task (captured keys)."""
    return {
        "rc": rc,
        "stdout": stdout,
        "stdout_lines": stdout.splitlines(),
        "stderr": stderr,
        "stderr_lines": stderr.splitlines(),
        "changed": False,
        "failed": rc != 0,
        **extra,
    }


def one(doc: Any, name_hint: str | None = "node01", source: str = "c/node01.json") -> NodeRecord:
    nodes = parse_ansible(doc, source, name_hint)
    assert nodes is not None and len(nodes) == 1
    return nodes[0]


def test_registered_result_is_named_by_the_inventory_host() -> None:
    node = one(script_result(json.dumps(A64FX) + "\n"))
    assert (node.name, node.status, node.hostname) == ("node01", "ok", "a64fx-01.probe")
    assert node.vls == VLSet.from_vls([128, 256, 512])
    assert node.source == "c/node01.json"


def test_fact_cache_of_ansible_core_2_19_is_untagged_and_loses_its_prefix() -> None:
    nested = {
        **A64FX,
        "kernel": {"value": "6.1.0", "tags": [], "__ansible_type": "_AnsibleTaggedStr"},
    }
    node = one(cache_2_19({"kvm_sve": nested}), name_hint="s1_kvm-a01.dc1.example")
    assert (node.name, node.kernel, node.status) == ("kvm-a01.dc1.example", "6.1.0", "ok")


def test_fact_cache_before_2_19_is_the_facts_themselves() -> None:
    facts = {"ansible_hostname": "kvm-a01", "discovered_interpreter_python": "/usr/bin/python3"}
    node = one({**facts, "kvm_sve": A64FX}, name_hint="kvm-a01.dc1.example")
    assert (node.name, node.status) == ("kvm-a01.dc1.example", "ok")
    # Only the 2.19 payload file carries the s1_ prefix: a plain file keeps its whole name.
    assert one({"kvm_sve": A64FX}, name_hint="s1_x").name == "s1_x"


def test_a_probe_error_document_stays_the_nodes_error() -> None:
    doc = probe_doc("x", None, error=("not-arm64", "this node is x86_64, not aarch64"))
    node = one(script_result(json.dumps(doc)))
    assert (node.name, node.status, node.error_kind) == ("node01", "error", "not-arm64")


@pytest.mark.parametrize(
    ("result", "kind", "message"),
    [
        (
            {"unreachable": True, "msg": "Task failed: ssh: connect to host x port 22: refused"},
            "unreachable",
            "Task failed: ssh: connect to host x port 22: refused",
        ),
        (
            script_result("", 127, "sh: 1: python3: not found\n", msg="non-zero return code"),
            "no-python",
            "'python3' was not found on the node (exit 127); install python3",
        ),
        (
            script_result("", 1, "Traceback ...\nOSError: boom\n"),
            "probe-failed",
            "the probe exited with status 1: Traceback ...?OSError: boom",  # one line,
        ),
        (
            {"failed": True, "msg": "Task failed: Failed to transfer file", "changed": False},
            "probe-failed",
            "Ansible could not run the probe: Task failed: Failed to transfer file",
        ),
        (
            script_result("Traceback (most recent call last): {\n"),
            "bad-output",
            "the node did not answer with a probe document: b'Traceback",
        ),
        (script_result("[1, 2]"), "bad-output", "the node's answer is not a JSON object"),
        (
            script_result(json.dumps({**A64FX, "sve": {"vls": [256, 128], "words": ["0x3"] * 8}})),
            "bad-output",
            "the probe document is invalid: c/node01.json: sve.vls: must be ascending",
        ),
        (script_result(" " * (256 * 1024 + 1)), "bad-output", "the node printed 262145 characters"),
        (script_result("\x1b[2J{"), "bad-output", "'\\x1b[2J{'"),
    ],
    ids=[
        "unreachable",
        "no-python",
        "probe-failed",
        "ansible-failed",
        "not-json",
        "not-object",
        "invalid-document",
        "oversized",
        "escape-sequence",
    ],
)
def test_a_node_that_gave_no_document_is_an_error_node(
    result: dict[str, Any], kind: str, message: str
) -> None:
    node = one(result)
    assert (node.name, node.status, node.vls, node.error_kind) == ("node01", "error", None, kind)
    assert node.error_message is not None and message in node.error_message


@pytest.mark.parametrize(
    ("doc", "name_hint", "error"),
    [
        (
            {"ansible_hostname": "kvm-a01"},
            "kvm-a01",
            "f: kvm_sve: missing: these Ansible facts hold no vlcalc probe document",
        ),
        (
            cache_2_19({"ansible_hostname": "kvm-a01"}),
            "s1_kvm-a01",
            "f: __payload__.kvm_sve: missing",
        ),
        ({"__payload__": 3}, "h", "f: __payload__: must be JSON text"),
        ({"__payload__": "{nope"}, "h", "f: __payload__: not JSON: object keys must be strings"),
        ({"__payload__": "[]"}, "h", "f: __payload__: must be an object of facts"),
        (
            {"__payload__": json.dumps({"kvm_sve": {"__ansible_type": "EncryptedString"}})},
            "h",
            "f: __payload__.kvm_sve: an Ansible value of type 'EncryptedString' that vlcalc",
        ),
        ({"kvm_sve": [1]}, "h", "f: kvm_sve: "),
        (
            {"kvm_sve": {**A64FX, "sve": {"vls": [128], "words": ["0x3"] + ["0x0"] * 7}}},
            "h",
            "f: kvm_sve.sve.words: the bitmap says",
        ),
        (script_result("{}", rc=0) | {"rc": "0"}, "h", "f: rc: must be the probe's exit status"),
        (script_result("{}") | {"rc": True}, "h", "f: rc: must be the probe's exit status"),
        ({"rc": 0, "changed": False}, "h", "f: stdout: must be the probe's output (a string)"),
        (
            {"skipped": True, "changed": False, "skip_reason": "Conditional result was False"},
            "h",
            "f: skipped: the probe task was skipped for this host",
        ),
        (script_result("{}"), None, "f: cannot tell which host this Ansible file is about"),
        ({"kvm_sve": A64FX}, "", "f: cannot tell which host this Ansible file is about"),
    ],
    ids=[
        "facts-without-kvm_sve",
        "2.19-facts-without-kvm_sve",
        "payload-not-text",
        "payload-not-json",
        "payload-not-object",
        "unknown-ansible-type",
        "fact-not-object",
        "fact-bitmap-mismatch",
        "rc-string",
        "rc-bool",
        "no-stdout",
        "skipped",
        "no-name",
        "empty-name",
    ],
)
def test_a_bad_ansible_file_is_one_error_naming_file_and_field(
    doc: dict[str, Any], name_hint: str | None, error: str
) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_ansible(doc, "f", name_hint)
    assert str(caught.value).startswith(error)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "doc",
    [[], "text", 3, None, {}, {"schema": "vlcalc.probe/1"}, {"changed": False}, {"hosts": []}],
)
def test_other_json_is_not_an_ansible_shape(doc: Any) -> None:
    assert parse_ansible(doc, "f", "h") is None


def test_a_file_falls_back_to_ansible_shapes() -> None:
    data = json.dumps(script_result(json.dumps(A64FX))).encode()
    (node,) = parse_bytes(data, source="s", name_hint="n1")
    assert node.name == "n1"
    with pytest.raises(DocumentError, match="not a vlcalc document"):
        parse_bytes(b'{"hosts": []}', source="s", name_hint="n1")


def test_host_name_hint() -> None:
    assert host_name_hint("node01.json") == "node01"
    assert host_name_hint("kvm-a01.dc1.example") == "kvm-a01.dc1.example"
    assert host_name_hint("s1_kvm-a01") == "s1_kvm-a01"  # dropped only for 2.19 payloads


def write(path: Path, doc: Any) -> None:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_a_fact_cache_directory_is_read_file_by_file(tmp_path: Path) -> None:
    write(tmp_path / "s1_kvm-b01.dc1.example", cache_2_19({"kvm_sve": A64FX}))
    write(tmp_path / "kvm-a01", {"kvm_sve": hardware_doc("x", "graviton3")})
    write(tmp_path / ".hidden", "not read")
    nodes = read_paths([str(tmp_path)])
    assert [(n.name, n.status) for n in nodes] == [("kvm-a01", "ok"), ("kvm-b01.dc1.example", "ok")]
    assert nodes[1].source == str(tmp_path / "s1_kvm-b01.dc1.example")


def test_a_directory_with_json_files_reads_only_those(tmp_path: Path) -> None:
    write(tmp_path / "node01.json", script_result(json.dumps(A64FX)))
    write(tmp_path / "notes", "not read")
    (node,) = read_paths([str(tmp_path)])
    assert node.name == "node01"


def test_a_bad_file_in_a_fact_cache_is_named(tmp_path: Path) -> None:
    write(tmp_path / "s1_good", cache_2_19({"kvm_sve": A64FX}))
    write(tmp_path / "tmpab12cd", "{half a fi")
    with pytest.raises(DocumentError, match=r"tmpab12cd: not JSON: object keys must be strings"):
        read_paths([str(tmp_path)])


def test_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        DocumentError, match=r"holds no \*\.json documents \(nor Ansible fact-cache"
    ):
        read_paths([str(tmp_path)])


def test_the_same_host_twice_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "s1_node01", cache_2_19({"kvm_sve": A64FX}))
    write(tmp_path / "node01", {"kvm_sve": A64FX})
    with pytest.raises(DocumentError, match="node 'node01' appears twice"):
        read_paths([str(tmp_path)])


def test_other_facts_of_the_host_are_not_read() -> None:
    """A host's cache holds every fact it has: a ``now()`` datetime set by another play (a type
    vlcalc cannot read) must not refuse the file whose kvm_sve is fine."""
    doc = cache_2_19({"kvm_sve": A64FX})
    payload = json.loads(doc["__payload__"])
    payload["last_checked"] = {"__ansible_type": "AnsibleSerializableDateTime", "value": "x"}
    node = one({"__payload__": json.dumps(payload)}, "s1_kvm-a01")
    assert (node.name, node.status, str(node.vls)) == ("kvm-a01", "ok", "128,256,512")
