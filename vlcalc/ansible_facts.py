"""Probe documents as Ansible collected them: fact-cache files and registered task results.

``inventories/ansible/collect.yml`` runs the probe with ``ansible.builtin.script`` on every host and
leaves two kinds of files, each holding one host and named after its *inventory* name (which
becomes the node's name, not the probe's ``hostname``):

* **Fact cache** (``fact_caching = jsonfile``): the host's facts, with the probe document as the
  ``kvm_sve`` fact.  ansible-core < 2.19 writes file ``HOST`` holding ``{"kvm_sve": {...}, ...}``;
  ansible-core >= 2.19 writes file ``s1_HOST`` holding ``{"__payload__": "<JSON text>"}``, whose
  values may be tagged: ``{"__ansible_type": "_AnsibleTaggedDict", "value": {...}, "tags": [...]}``.
* **Registered result** of the script task, dumped with ``to_json`` to ``HOST.json``:
  ``{"rc": 0, "stdout": "{\\"schema\\":\\"vlcalc.probe/1\\",...}\\n", "stderr": "", ...}``.  A
  failed (``"failed": true, "rc": 127``) or unreachable (``"unreachable": true, "msg": ...``)
  result (or one where Ansible failed before the probe ran: ``"failed": true`` without ``rc``) is
  kept as an error node, so the answer says it is incomplete instead of leaving the host out.
  What the node printed is untrusted: output that is not a valid probe document makes a
  ``bad-output`` node, as in ``vlcalc scan``.

:func:`parse_ansible` is pure; ``vlcalc.files`` reads the files and passes the file name.
"""

from __future__ import annotations

import re
from typing import Any

from vlcalc.answer import MAX_PROBE_OUTPUT, record_answer
from vlcalc.documents import NodeRecord, decode, error_node, parse_probe
from vlcalc.errors import DocumentError
from vlcalc.model import ErrorKind, printable
from vlcalc.transport.base import RunResult, Target

FACT = "kvm_sve"  # the fact collect.yml sets: the probe document
PAYLOAD_KEY = "__payload__"  # ansible-core >= 2.19 cache files: the facts as JSON text
TYPE_KEY = "__ansible_type"  # ansible-core >= 2.19: a tagged value {TYPE_KEY, "value", "tags"}
TAGGED_PREFIX = "_AnsibleTagged"  # _AnsibleTaggedDict, _AnsibleTaggedStr, ...
CACHE_SCHEMA_PREFIX = re.compile(r"s[0-9]+_")  # ansible-core >= 2.19 cache file: s1_HOST
RESULT_KEYS = frozenset({"rc", "stdout", "unreachable", "failed", "skipped"})


def host_name_hint(file_name: str) -> str:
    """The host a file of Ansible's is about: ``node01.json`` -> ``node01``, a fact-cache file
    ``kvm-a01.dc1.example`` -> itself (``s1_`` is dropped later, for >= 2.19 payloads only)."""
    return file_name[: -len(".json")] if file_name.endswith(".json") else file_name


def parse_ansible(doc: Any, source: str, name_hint: str | None) -> list[NodeRecord] | None:
    """One host's node from a fact-cache file or a registered script result (see the module
    docstring), named ``name_hint``; ``None`` when ``doc`` is not one of these shapes.

    Example: ``parse_ansible({"rc": 0, "stdout": probe_text}, "c/node01.json", "node01")``
    -> ``[NodeRecord(name="node01", ...)]``.  Raises :class:`DocumentError` naming ``source``
    and the field for a shape that is recognisably Ansible's but wrong.
    """
    if not isinstance(doc, dict) or "schema" in doc:
        return None
    if PAYLOAD_KEY in doc:
        facts = _payload(doc[PAYLOAD_KEY], source)
        name = CACHE_SCHEMA_PREFIX.sub("", name_hint, count=1) if name_hint else name_hint
        return [_from_facts(facts, source, name, f"{PAYLOAD_KEY}.")]
    if FACT in doc or any(key.startswith("ansible_") for key in doc):
        return [_from_facts(doc, source, name_hint, "")]
    if RESULT_KEYS & doc.keys():
        return [_from_result(doc, source, name_hint)]
    return None


def _host(name: str | None, source: str) -> str:
    if not name:
        raise DocumentError(
            "cannot tell which host this Ansible file is about: name it after the host "
            "(HOST.json, or the fact cache's HOST / s1_HOST)",
            source=source,
        )
    return name


def _payload(text: Any, source: str) -> Any:
    if not isinstance(text, str):
        raise DocumentError("must be JSON text", source=source, field=PAYLOAD_KEY)
    try:
        return decode(text.encode("utf-8", "surrogatepass"), Any, source=source)
    except DocumentError as exc:
        raise DocumentError(exc.message, source=source, field=PAYLOAD_KEY) from None


def _untag(value: Any, source: str, where: str) -> Any:
    """Plain JSON from ansible-core >= 2.19's cache encoding: tagged values lose their tags."""
    if isinstance(value, list):
        return [_untag(item, source, f"{where}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if TYPE_KEY not in value:
        return {key: _untag(item, source, f"{where}.{key}") for key, item in value.items()}
    kind = value[TYPE_KEY]
    if isinstance(kind, str) and kind.startswith(TAGGED_PREFIX) and "value" in value:
        return _untag(value["value"], source, where)
    raise DocumentError(
        f"an Ansible value of type {printable(repr(kind))} that vlcalc cannot read",
        source=source,
        field=where,
    )


def _from_facts(facts: Any, source: str, name: str | None, prefix: str) -> NodeRecord:
    if not isinstance(facts, dict):
        raise DocumentError("must be an object of facts", source=source, field=prefix.rstrip("."))
    if FACT not in facts:
        raise DocumentError(
            "missing: these Ansible facts hold no vlcalc probe document; run "
            "inventories/ansible/collect.yml on this host, or leave its file out",
            source=source,
            field=f"{prefix}{FACT}",
        )
    probe = facts[FACT]
    if prefix:  # only the probe's fact: the host's other facts (a now() datetime) are not ours
        try:
            probe = _untag(probe, source, f"{prefix}{FACT}")
        except RecursionError:  # decode() bounds nesting by the same limit, this walk is deeper
            raise DocumentError("nested too deeply", source=source, field=PAYLOAD_KEY) from None
    return parse_probe(probe, source=source, field_path=f"{prefix}{FACT}", name=_host(name, source))


def _from_result(result: dict[str, Any], source: str, name_hint: str | None) -> NodeRecord:
    name = _host(name_hint, source)
    message = result.get("msg")
    message = printable(message) if isinstance(message, str) else "no message"
    if result.get("unreachable"):
        return error_node(name, ErrorKind.UNREACHABLE, message, source=source)
    if result.get("skipped"):
        raise DocumentError(
            "the probe task was skipped for this host (check mode or a when: condition), so "
            "there is no answer; collect it again",
            source=source,
            field="skipped",
        )
    if result.get("failed") and "rc" not in result:  # e.g. the copy to the node failed
        return error_node(
            name,
            ErrorKind.PROBE_FAILED,
            f"Ansible could not run the probe: {message}",
            source=source,
        )
    rc, stdout, stderr = result.get("rc"), result.get("stdout"), result.get("stderr", "")
    if not isinstance(rc, int) or isinstance(rc, bool):
        raise DocumentError(
            "must be the probe's exit status (an integer)", source=source, field="rc"
        )
    if not isinstance(stdout, str):
        raise DocumentError("must be the probe's output (a string)", source=source, field="stdout")
    if rc == 0 and result.get("failed"):  # a failed_when of the playbook's own
        return error_node(
            name, ErrorKind.PROBE_FAILED, f"Ansible marked it failed: {message}", source=source
        )
    if len(stdout) > MAX_PROBE_OUTPUT:  # before encoding it: it may be huge
        return error_node(
            name, ErrorKind.BAD_OUTPUT, f"the node printed {len(stdout)} characters", source=source
        )
    # From here on it is what vlcalc scan gets from a node: judge it the same way.
    answer = RunResult(rc, stdout.encode(), stderr.encode() if isinstance(stderr, str) else b"")
    record, _ = record_answer(Target(name, name), answer, source=source)
    return record
