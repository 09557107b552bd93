"""The probe and scan documents: a typed model, validated in one pass, and the node records.

A *probe document* (``vlcalc.probe/1``) is what the probe prints for one node; a *scan document*
(``vlcalc.scan/1``) is what ``vlcalc scan --save`` writes for a fleet.  Both are untrusted input.
The msgspec Structs below are their contract: :func:`decode` turns JSON bytes into them in one
pass (types, bounds, patterns), the JSON Schemas shipped in ``vlcalc/schemas`` are generated from
them (:func:`json_schema`), and a few cross-checks the schema cannot say (the VL list must match
the bitmap; exactly one of ``sve`` and ``error``) follow before a :class:`NodeRecord` is built.

Everything here is pure: bytes or parsed JSON in, records or a :class:`DocumentError` out.  Files
are read by ``vlcalc.files``; a node's answer is judged by ``vlcalc.answer``.

>>> doc = decode(b'{"schema": "vlcalc.probe/1", "hostname": "n1", "kernel": "6.1", '
...     b'"arch": "aarch64", "sve": {"vls": [128], "words": ["0x1","0x0","0x0","0x0",'
...     b'"0x0","0x0","0x0","0x0"]}, "error": null}', ProbeDocument, source="n1.json")
>>> str(parse_probe(doc, source="n1.json").vls)
'128'
"""

# Python 3.9 runs vlcalc and msgspec evaluates these annotations at run time: Optional/Union, not |.
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from operator import attrgetter
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from msgspec.structs import replace

from vlcalc.errors import DocumentError
from vlcalc.model import PROBE_SCHEMA, SCAN_SCHEMA, ErrorKind, Status, error_kind
from vlcalc.vl import VLSet

MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
"""The largest document file vlcalc reads: a 100,000-node scan saved by ``vlcalc scan --save`` is
about 90 MB, so this fits some 280,000 nodes, and it bounds the memory a bad file can take."""

# -- the model ------------------------------------------------------------------------------------
_CONTROL = "[\\u0000-\\u001f\\u007f-\\u009f]"
# "No control character anywhere" as {"not": {"pattern": ...}}: "^[^...]*$" would let a final
# newline through wherever `$` matches before one (Python's re, and so the jsonschema package).
_TEXT_RULE = {"not": {"pattern": _CONTROL}}
_WORD_PATTERN = "^0x[0-9a-fA-F]{1,16}$(?!\\n)"
# Two patterns are checked in Python, not by msgspec: calling `re` from the decoder for each of
# the ~14 strings of every node would cost more than the rest of decoding (1 s per 100,000
# nodes), while str.isprintable() settles almost every string and a fleet repeats a few bitmaps.
# The shipped schemas still state them, and tests/test_schema.py checks model and schema agree.
Text = Annotated[
    str,
    Meta(
        max_length=1024,
        extra_json_schema=_TEXT_RULE,
        description="Text from a node is untrusted: bounded, and no control characters "
        "(terminal escapes).",
    ),
]
# "$(?!\n)": the end of the text in every regex dialect; a bare "$" in Python's re (so also in
# msgspec and the jsonschema package) matches before a final newline too.
Kind = Annotated[str, Meta(pattern="^[a-z0-9][a-z0-9-]{0,39}$(?!\\n)")]
VectorLength = Annotated[int, Meta(ge=128, le=65536, multiple_of=128)]
VectorLengths = Annotated[
    tuple[VectorLength, ...],
    Meta(
        max_length=512,
        description="Vector lengths in bits, ascending, each a multiple of 128 up to 65536 "
        "(vq 1..512).",
    ),
]
Word = Annotated[str, Meta(extra_json_schema={"pattern": _WORD_PATTERN})]
Words = Annotated[
    tuple[Word, ...],
    Meta(
        min_length=8,
        max_length=8,
        description="KVM_REG_ARM64_SVE_VLS as 8 u64 words in hexadecimal, word 0 first.",
    ),
]

# Every optional field defaults to UNSET, never to a value: a field is then absent from the
# re-encoded document exactly when it was absent from the input (see _has_duplicate_keys).


class Kvm(Struct, frozen=True, kw_only=True):
    """What the node's KVM reports."""

    api_version: Union[int, UnsetType] = UNSET
    ipa_bits: Union[int, UnsetType] = UNSET
    sve_cap: Union[int, UnsetType] = UNSET


class Cpu(Struct, frozen=True, kw_only=True):
    """The node's CPU: MIDR_EL1 and a model name, when known."""

    midr: Union[Text, UnsetType, None] = UNSET
    model: Union[Text, UnsetType, None] = UNSET


class Sve(Struct, frozen=True, kw_only=True):
    """The node's KVM set: the list and the register it came from (they must agree)."""

    vls: VectorLengths
    words: Words


class Trial(Struct, frozen=True, kw_only=True):
    """One acceptance trial: did KVM accept this VL set (``--try``)?"""

    vls: VectorLengths
    accepted: bool
    spec: Union[Text, UnsetType] = UNSET
    words: Union[Words, UnsetType] = UNSET
    errno: Union[Text, UnsetType, None] = UNSET
    finalize_errno: Union[Text, UnsetType, None] = UNSET
    reason: Union[Text, UnsetType, None] = UNSET


class ProbeError(Struct, frozen=True, kw_only=True):
    """Why the probe could not tell the node's set."""

    kind: Kind
    message: Text
    ioctl: Union[Text, UnsetType, None] = UNSET
    errno: Union[Text, UnsetType, None] = UNSET


class ProbeDocument(Struct, frozen=True, kw_only=True, tag_field="schema", tag=PROBE_SCHEMA):
    """vlcalc.probe/1: what the probe reports for one node.  sve.vls == [] means the node's KVM
    offers no SVE; error != null means the node's set is unknown.  Readers ignore unknown
    fields, so fields (e.g. an 'sme' section) can be added without breaking them."""

    hostname: Text
    kernel: Text
    arch: Text
    sve: Optional[Sve]
    error: Optional[ProbeError]
    probe_version: Union[Annotated[int, Meta(ge=1)], UnsetType] = UNSET
    python: Union[Text, UnsetType] = UNSET
    kvm: Union[Kvm, UnsetType, None] = UNSET
    cpu: Union[Cpu, UnsetType, None] = UNSET
    trials: Union[Annotated[tuple[Trial, ...], Meta(max_length=4096)], UnsetType] = UNSET
    timing_ms: Union[dict[str, Any], UnsetType] = UNSET


class NodeFailure(Struct, frozen=True, kw_only=True):
    """Why a node of a scan has no probe document."""

    kind: Kind
    message: str


class ScanNode(Struct, frozen=True, kw_only=True):
    """One node of a scan: its probe document when it answered, else the error."""

    name: Annotated[str, Meta(min_length=1, max_length=255)]
    outcome: Literal["ok", "error"]
    probe: Optional[ProbeDocument]
    error: Optional[NodeFailure]
    groups: Union[tuple[str, ...], UnsetType] = UNSET
    target: Union[dict[str, Any], UnsetType, None] = UNSET
    elapsed_ms: Union[float, UnsetType, None] = UNSET


class ScanDocument(Struct, frozen=True, kw_only=True, tag_field="schema", tag=SCAN_SCHEMA):
    """vlcalc.scan/1: what `vlcalc scan --save` writes.  One entry per node, failed nodes
    included: 'probe' is the node's vlcalc.probe/1 document when it answered, else null and
    'error' says why."""

    started: str
    inventory: Optional[str]
    nodes: list[ScanNode]
    vlcalc_version: Union[str, UnsetType] = UNSET
    finished: Union[str, UnsetType] = UNSET
    limit: Union[str, UnsetType, None] = UNSET
    interrupted: Union[bool, UnsetType] = UNSET


Document = Union[ProbeDocument, ScanDocument]
SCHEMA_FILES = {"probe-1": ProbeDocument, "scan-1": ScanDocument}
_SCHEMA_TITLES = {
    "probe-1": "vlcalc.probe/1: what the probe reports for one node",
    "scan-1": "vlcalc.scan/1: what `vlcalc scan --save` writes",
}


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of ``SCHEMA_FILES[name]``, as shipped in ``vlcalc/schemas/NAME.schema.json``.

    >>> json_schema("probe-1")["$ref"]
    '#/$defs/ProbeDocument'
    """
    generated = msgspec.json.schema(SCHEMA_FILES[name])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://vlcalc.invalid/schemas/{name}.schema.json",
        "title": _SCHEMA_TITLES[name],
        **generated,
    }


def write_schemas(directory: Path | None = None) -> None:
    """Regenerate the shipped schema files (``vlcalc/schemas``) from the model."""
    target = directory or Path(__file__).resolve().parent / "schemas"
    for name in SCHEMA_FILES:
        text = json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n"
        (target / f"{name}.schema.json").write_text(text, encoding="utf-8")


# -- decoding -------------------------------------------------------------------------------------
T = TypeVar("T")
_AT = re.compile(r" - at `\$(.*)`$")
_MISSING = re.compile(r"Object missing required field `([^`]*)`")


def split_validation_message(message: str) -> tuple[str, str | None]:
    """msgspec's ValidationError carries its path only inside its message: split it off.

    This is the one place that reads msgspec's wording.

    >>> split_validation_message("Expected `int` >= 128 - at `$.nodes[2].probe.sve.vls[1]`")
    ('Expected `int` >= 128', 'nodes[2].probe.sve.vls[1]')
    >>> split_validation_message("Expected `object`, got `array`")
    ('Expected `object`, got `array`', None)
    >>> split_validation_message("Object missing required field `kernel` - at `$.nodes[0].probe`")
    ('missing', 'nodes[0].probe.kernel')
    """
    found = _AT.search(message)
    path = None if found is None else found.group(1).lstrip(".") or None
    text = message if found is None else message[: found.start()]
    missing = _MISSING.fullmatch(text)
    if missing is not None:  # name the field that is missing, not the object that lacks it
        return "missing", _join(path or "", missing.group(1))
    return text, path


def _join(prefix: str, path: str | None) -> str | None:
    if not path:
        return prefix or None
    if not prefix:
        return path
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def _invalid(exc: msgspec.ValidationError, source: str, prefix: str) -> DocumentError:
    message, path = split_validation_message(str(exc))
    return DocumentError(message, source=source, field=_join(prefix, path))


def decode(data: bytes, type: type[T], *, source: str, field_prefix: str = "") -> T:
    """Parse and validate JSON ``data`` as ``type`` (a model Struct, or ``Any``) in one pass.

    Refuses, as a :class:`DocumentError`: what is not UTF-8 JSON, NaN and Infinity (not JSON),
    integers longer than Python's limit (4,300 digits), nesting deeper than Python's recursion
    limit, and an object with the same key twice (JSON leaves that undefined; Python would
    silently keep the last one).
    """
    try:
        decoded: T = msgspec.json.decode(data, type=type)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, source, field_prefix) from None
    except msgspec.DecodeError as exc:
        raise DocumentError(f"not JSON: {_decode_reason(exc, data)}", source=source) from None
    except RecursionError:
        raise DocumentError("not read: nested too deeply", source=source) from None
    try:
        duplicate = _has_duplicate_keys(data, decoded)
    except RecursionError:  # deeper than Python's json can check: refused, never guessed
        raise DocumentError("not read: nested too deeply", source=source) from None
    if duplicate:
        raise DocumentError(
            "an object has the same key twice; vlcalc refuses to guess which one is meant",
            source=source,
        )
    return decoded


_AT_BYTE = re.compile(r"\(byte ([0-9]+)\)$")


def _decode_reason(exc: msgspec.DecodeError, data: bytes) -> str:
    """msgspec's reason, naming NaN and Infinity (which Python's own json would have taken)."""
    reason = str(exc).removeprefix("JSON is malformed: ")
    at = _AT_BYTE.search(reason)
    if at is not None and data[int(at.group(1)) :].lstrip(b"-").startswith((b"NaN", b"Inf")):
        return f"NaN and Infinity are not JSON numbers {at.group(0)}"
    return reason


def _has_duplicate_keys(data: bytes, decoded: Any) -> bool:
    """Whether some object in ``data`` (already decoded as ``decoded``) repeats a key.

    Checking every object in Python costs more than decoding a 100,000-node scan, so this counts
    colons first, at C speed.  Without a backslash in ``data`` no string holds an escape, so
    re-encoding ``decoded`` writes every string it kept as it was: each colon of the output is
    one in the input, and the input has more colons only if it had keys the output lacks: a
    repeated key, a field the model does not know, or the strings inside such.  (This is why
    optional fields default to UNSET: the output names a field only if the input did.)  Only
    then, or with a backslash, does the exact check over every object run.
    """
    if b"\\" not in data and data.count(b":") == msgspec.json.encode(decoded).count(b":"):
        return False
    try:
        # Numbers are not needed here: len() skips Python's limit on digits, at C speed.
        json.loads(data, object_pairs_hook=_unique_object, parse_int=len, parse_float=len)
    except _DuplicateKey:
        return True
    except ValueError:  # msgspec read it: only Python's own limits differ (not nesting)
        return False
    return False


class _DuplicateKey(Exception):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def convert(value: Any, type: type[T], *, source: str, field_prefix: str = "") -> T:
    """Validate already-parsed JSON ``value`` as ``type``, e.g. a probe document inside an
    Ansible fact file; errors name ``field_prefix`` + the path inside ``value``."""
    try:
        converted: T = msgspec.convert(value, type)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, source, field_prefix) from None
    return converted


# -- node records ---------------------------------------------------------------------------------
class NodeRecord(Struct, frozen=True, gc=False):
    """Everything vlcalc knows about one node, whichever document it came from.

    ``vls`` is the node's KVM set (empty: no SVE) or ``None`` when the node could not be probed,
    in which case ``error_kind``/``error_message`` say why.  ``error_kind`` is an
    :class:`ErrorKind`, or the plain string of a kind this vlcalc does not know (a newer probe's).
    ``document`` is the probe document it was read from, if any.  (A Struct, not a dataclass: a
    100,000-node report builds 100,000 of them, and a Struct is built at C speed.)

    >>> NodeRecord("n1", Status.ERROR, None, ErrorKind.TIMEOUT, "no answer").status
    <Status.ERROR: 'error'>
    """

    name: str
    status: Status
    vls: Optional[VLSet]
    error_kind: Union[ErrorKind, str, None] = None
    error_message: Optional[str] = None
    groups: tuple[str, ...] = ()
    hostname: Optional[str] = None
    kernel: Optional[str] = None
    cpu_model: Optional[str] = None
    source: Optional[str] = None
    document: Optional[ProbeDocument] = None

    @property
    def probe(self) -> dict[str, Any] | None:
        """The probe document as plain JSON values (fields vlcalc does not know are gone)."""
        return None if self.document is None else msgspec.to_builtins(self.document)

    @property
    def trials(self) -> tuple[Trial, ...]:
        """The probe's acceptance trials (``vlcalc check``), if it ran any."""
        trials = None if self.document is None else self.document.trials
        return () if trials is None or isinstance(trials, UnsetType) else trials


def error_node(
    name: str,
    kind: ErrorKind | str,
    message: str,
    *,
    groups: tuple[str, ...] = (),
    source: str | None = None,
) -> NodeRecord:
    """A node whose set is unknown, e.g. ``error_node("n1", ErrorKind.TIMEOUT, "no answer")``."""
    return NodeRecord(name, Status.ERROR, None, error_kind(kind), message, groups, source=source)


def parse_probe(
    doc: ProbeDocument | Any,
    *,
    source: str,
    field_path: str = "",
    name: str | None = None,
    groups: tuple[str, ...] = (),
) -> NodeRecord:
    """One probe document (a :class:`ProbeDocument`, or parsed JSON to validate) as a record.

    The node is called ``name`` if given (its inventory name), else the document's hostname.
    Raises :class:`DocumentError` naming ``source`` and the bad field (``field_path`` + path).
    """
    if not isinstance(doc, ProbeDocument):
        doc = convert(doc, ProbeDocument, source=source, field_prefix=field_path)
    try:
        return _probe_record(doc, source, name, groups)
    except DocumentError as exc:
        raise _under(exc, field_path) from None


def _under(exc: DocumentError, field_path: str) -> DocumentError:
    """``exc`` of a nested document, its field named from the outer document's root."""
    if not field_path:
        return exc
    return DocumentError(exc.message, source=exc.source, field=_join(field_path, exc.field))


def _probe_record(
    doc: ProbeDocument, source: str, name: str | None, groups: tuple[str, ...]
) -> NodeRecord:
    """The record of a decoded probe document, after the checks its schema cannot state; the
    hot path of a 100,000-node report (errors name fields relative to ``doc``)."""
    _check_texts(doc, source)
    sve, problem = doc.sve, doc.error
    if (sve is None) == (problem is None):
        raise DocumentError("exactly one of sve and error must be null", source=source, field="sve")
    cpu = doc.cpu
    model = cpu.model if isinstance(cpu, Cpu) and isinstance(cpu.model, str) else None
    if name is None:
        name = doc.hostname
    if not name:
        raise DocumentError("the probe document has an empty hostname", source=source)
    if problem is not None:
        kind = error_kind(problem.kind)
        return NodeRecord(
            name, Status.ERROR, None, kind, problem.message, groups,
            doc.hostname, doc.kernel, model, source, doc,
        )  # fmt: skip
    assert sve is not None  # exactly one of the two, checked above
    try:
        vls = _vls_from(sve.vls, sve.words)
    except _BadSve as exc:
        raise DocumentError(exc.message, source=source, field=f"sve.{exc.field}") from None
    status = Status.OK if vls else Status.NO_SVE
    return NodeRecord(
        name, status, vls, None, None, groups, doc.hostname, doc.kernel, model, source, doc
    )


class _BadSve(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@lru_cache(maxsize=4096)
def _vls_from(listed: tuple[int, ...], words: tuple[str, ...]) -> VLSet:
    """The set, after checking the list against the bitmap; cached, since a fleet repeats a few
    sets many times."""
    bad = _bad_word(words)
    if bad is not None:
        raise _BadSve(f"words[{bad}]", f"{_shown(words[bad])} is not a hexadecimal word (0x1f)")
    if list(listed) != sorted(set(listed)):
        raise _BadSve("vls", "must be ascending without repeats")
    vls = VLSet.from_vls(listed)
    bitmap = VLSet.from_words(int(word, 16) for word in words)
    if bitmap != vls:
        raise _BadSve("words", f"the bitmap says {bitmap} but vls says {vls}")
    return vls


_WORD = re.compile(_WORD_PATTERN)
_CONTROL_CHARACTER = re.compile(_CONTROL)


def _bad_word(words: tuple[str, ...]) -> int | None:
    """The index of the first word that breaks the schema's pattern (searched as JSON Schema
    does), if any."""
    return next((i for i, word in enumerate(words) if _WORD.search(word) is None), None)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _clean(text: object) -> bool:
    """Whether ``text`` (an optional Text field) has no control character; isprintable() is
    stricter (it refuses zero-width spaces too) and settles the common case at C speed."""
    if not isinstance(text, str) or text.isprintable():
        return True
    return _CONTROL_CHARACTER.search(text) is None


_CLEAN_TEXTS: set[tuple[Any, ...]] = set()  # (kernel, arch, python, cpu) known clean
_CLEAN_TEXTS_MAX = 65536


def _check_texts(doc: ProbeDocument, source: str) -> None:
    """The Text pattern of the fields a probe document holds (see _TEXT_RULE)."""
    # A fleet repeats a few kernels and CPUs: the common case costs one lookup.
    common = (doc.kernel, doc.arch, doc.python, doc.cpu)
    if common in _CLEAN_TEXTS and doc.hostname.isprintable() and not doc.trials and not doc.error:
        return
    _check_all_texts(doc, source)
    if len(_CLEAN_TEXTS) < _CLEAN_TEXTS_MAX:
        _CLEAN_TEXTS.add(common)


def check_patterns(doc: ProbeDocument, *, source: str) -> None:
    """The schema's patterns that :func:`decode` leaves to Python (see ``_TEXT_RULE``): after
    this, ``doc`` is valid against the shipped schema.  Raises :class:`DocumentError`."""
    _check_all_texts(doc, source)
    if doc.sve is not None:
        bad = _bad_word(doc.sve.words)
        if bad is not None:
            raise DocumentError(
                f"{_shown(doc.sve.words[bad])} is not a hexadecimal word (0x1f)",
                source=source,
                field=f"sve.words[{bad}]",
            )


def _check_all_texts(doc: ProbeDocument, source: str) -> None:
    fields: list[tuple[str, object]] = [
        ("hostname", doc.hostname),
        ("kernel", doc.kernel),
        ("arch", doc.arch),
        ("python", doc.python),
    ]
    if isinstance(doc.cpu, Cpu):
        fields += [("cpu.midr", doc.cpu.midr), ("cpu.model", doc.cpu.model)]
    if doc.error is not None:
        error = doc.error
        fields += [
            ("error.message", error.message),
            ("error.ioctl", error.ioctl),
            ("error.errno", error.errno),
        ]
    for index, trial in enumerate(() if doc.trials is UNSET else doc.trials):
        where = f"trials[{index}]"
        fields += [
            (f"{where}.spec", trial.spec),
            (f"{where}.errno", trial.errno),
            (f"{where}.finalize_errno", trial.finalize_errno),
            (f"{where}.reason", trial.reason),
        ]
        words = () if isinstance(trial.words, UnsetType) else trial.words
        bad = _bad_word(words)
        if bad is not None:
            raise DocumentError(
                f"{_shown(words[bad])} is not a hexadecimal word (0x1f)",
                source=source,
                field=f"{where}.words[{bad}]",
            )
    for where, text in fields:
        if not _clean(text):
            raise DocumentError(
                "holds control characters (terminal escapes are refused)",
                source=source,
                field=where,
            )


def parse_scan(doc: ScanDocument | Any, *, source: str) -> list[NodeRecord]:
    """A scan document's nodes in order, failed nodes included."""
    if not isinstance(doc, ScanDocument):
        doc = convert(doc, ScanDocument, source=source)
    nodes = []
    for index, entry in enumerate(doc.nodes):
        groups = () if isinstance(entry.groups, UnsetType) else entry.groups
        if entry.outcome == "ok":
            if entry.probe is None:
                where = f"nodes[{index}]"
                raise DocumentError("outcome ok without a probe", source=source, field=where)
            try:
                nodes.append(_probe_record(entry.probe, source, entry.name, groups))
            except DocumentError as exc:
                raise _under(exc, f"nodes[{index}].probe") from None
        else:
            if entry.error is None:
                where = f"nodes[{index}]"
                raise DocumentError("outcome error without an error", source=source, field=where)
            failure = entry.error
            nodes.append(
                error_node(entry.name, failure.kind, failure.message, groups=groups, source=source)
            )
    return nodes


# -- the fast path for a large scan ----------------------------------------------------------------
class _LazyScanNode(Struct, kw_only=True):
    """:class:`ScanNode` with its probe document left as JSON text (same fields, same types).
    Not frozen: :func:`scan_records` blanks the probe once it has read it."""

    name: Annotated[str, Meta(min_length=1, max_length=255)]
    outcome: Literal["ok", "error"]
    probe: msgspec.Raw
    error: Optional[NodeFailure]
    groups: Union[tuple[str, ...], UnsetType] = UNSET
    target: Union[dict[str, Any], UnsetType, None] = UNSET
    elapsed_ms: Union[float, UnsetType, None] = UNSET


class _LazyScanDocument(Struct, frozen=True, kw_only=True, tag_field="schema", tag=SCAN_SCHEMA):
    """:class:`ScanDocument` with :class:`_LazyScanNode` nodes."""

    started: str
    inventory: Optional[str]
    nodes: list[_LazyScanNode]
    vlcalc_version: Union[str, UnsetType] = UNSET
    finished: Union[str, UnsetType] = UNSET
    limit: Union[str, UnsetType, None] = UNSET
    interrupted: Union[bool, UnsetType] = UNSET


_LAZY_DECODER = msgspec.json.Decoder(Union[ProbeDocument, _LazyScanDocument])
_PROBE_DECODER = msgspec.json.Decoder(ProbeDocument)
_HOSTNAME_KEY = b'"hostname"'
_NULL = b"null"
_NULL_RAW = msgspec.Raw(_NULL)


def scan_records(data: bytes, *, source: str) -> list[NodeRecord] | None:
    """The nodes of a scan document, by a shortcut that is several times faster on a large fleet;
    ``None`` whenever the shortcut cannot vouch that :func:`decode` and :func:`parse_scan` would
    give the same records: then the caller takes that path, and its answer or error stands.

    A fleet repeats a few kinds of probe document that differ only in their ``hostname``, so each
    node's probe is kept as JSON text, split around its hostname's value, and decoded and checked
    once per distinct rest (a *template*); every other node with that rest gets a copy of the
    template's record with its own hostname.  This holds because, without a backslash anywhere in
    ``data``, a string's text is its bytes: the span between the quotes after the one
    ``"hostname"`` of the template is the hostname's value, and putting another quote-free string
    there changes that value and nothing else.  The colon count of :func:`_has_duplicate_keys`
    is made per template, and over the scan with its probes blanked plus the probes' text.

    >>> scan = (b'{"schema": "vlcalc.scan/1", "started": "s", "inventory": null, "nodes": ['
    ...     b'{"name": "a", "outcome": "error", "probe": null, "error": '
    ...     b'{"kind": "timeout", "message": "no answer"}}]}')
    >>> [node.error_kind for node in scan_records(scan, source="s.json")]
    [<ErrorKind.TIMEOUT: 'timeout'>]
    """
    if b"\\" in data:
        return None
    try:
        scan = _LAZY_DECODER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    if not isinstance(scan, _LazyScanDocument):
        return None
    templates: dict[tuple[bytes, bytes], tuple[NodeRecord, ProbeDocument, int]] = {}
    probe_colons = 0  # in the probes' text
    prefix = b""  # the last probe's text up to its hostname's value (one object: hashed once)
    nodes: list[NodeRecord] = []
    append = nodes.append
    for entry in scan.nodes:
        text = bytes(entry.probe)
        entry.probe = _NULL_RAW  # so that the scan re-encodes without the probes, below
        groups = entry.groups
        if groups is UNSET:
            groups = ()
        if entry.outcome != "ok":
            if text != _NULL or entry.error is None:
                return None
            failure = entry.error
            append(
                error_node(entry.name, failure.kind, failure.message, groups=groups, source=source)
            )
            continue
        if prefix and text.startswith(prefix):  # the usual case: only the hostname differs
            start = len(prefix)
        else:
            at = text.find(_HOSTNAME_KEY)
            start = text.find(b'"', at + len(_HOSTNAME_KEY)) + 1
            if at < 0 or start <= 0:
                return None
            prefix = text[:start]
        end = text.find(b'"', start)
        if end < 0:
            return None
        key = (prefix, text[end:])
        found = templates.get(key)
        if found is None:
            found = _template(text, start, end, entry.name, source)
            if found is None:
                return None
            templates[key] = found
        template, document, colons = found
        value = text[start:end]
        try:
            hostname = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if len(hostname) > 1024 or not (hostname.isprintable() or _clean(hostname)):  # Text
            return None
        probe_colons += colons + value.count(b":")
        append(
            replace(
                template,
                name=entry.name,
                groups=groups,
                hostname=hostname,
                document=replace(document, hostname=hostname),
            )
        )
    # The scan's own keys, its probes blanked, plus the probes' text: as many colons as the input.
    if data.count(b":") != msgspec.json.encode(scan).count(b":") + probe_colons:
        return None  # a repeated key, or unknown fields (the exact check decides)
    return nodes


def _template(
    text: bytes, start: int, end: int, name: str, source: str
) -> tuple[NodeRecord, ProbeDocument, int] | None:
    """The record and document of the probe document ``text``, whose hostname's value is
    ``text[start:end]``, and the colons in the rest of ``text``; ``None`` if it is not valid, or
    not known to be (see :func:`scan_records`)."""
    if text.count(_HOSTNAME_KEY) != 1:
        return None
    try:
        doc = _PROBE_DECODER.decode(text)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    if doc.hostname.encode() != text[start:end]:
        return None
    colons = text.count(b":")
    if colons != msgspec.json.encode(doc).count(b":"):
        return None
    try:
        record = _probe_record(doc, source, name, ())
    except DocumentError:
        return None
    return record, doc, colons - text.count(b":", start, end)


def schema_tag(doc: Any) -> Any:
    """The ``schema`` tag of parsed JSON, if it is an object that has one."""
    return doc.get("schema") if isinstance(doc, dict) else None


def parse_document(doc: Document | Any, *, source: str) -> list[NodeRecord]:
    """A probe or a scan document (typed, or parsed JSON told apart by its ``schema`` tag)."""
    if isinstance(doc, ProbeDocument):
        return [parse_probe(doc, source=source)]
    if isinstance(doc, ScanDocument):
        return parse_scan(doc, source=source)
    tag = schema_tag(doc)
    if tag == PROBE_SCHEMA:
        return [parse_probe(doc, source=source)]
    if tag == SCAN_SCHEMA:
        return parse_scan(doc, source=source)
    raise not_a_document(tag, source)


def not_a_document(tag: Any, source: str) -> DocumentError:
    shown = tag if tag is None or (isinstance(tag, str) and len(tag) <= 60) else "..."
    return DocumentError(
        f"not a vlcalc document (schema {shown!r}; expected {PROBE_SCHEMA} or {SCAN_SCHEMA})",
        source=source,
        field="schema",
    )


def check_unique(nodes: Sequence[NodeRecord]) -> None:
    """Two documents that name the same node would silently hide one of them: refuse."""
    if len(set(map(attrgetter("name"), nodes))) == len(nodes):  # the usual case, at C speed
        return
    seen: dict[str, NodeRecord] = {}
    for node in nodes:
        first = seen.setdefault(node.name, node)
        if first is not node:
            raise DocumentError(
                f"node {node.name!r} appears twice (also in {first.source}); "
                "give each document its own node",
                source=node.source,
            )
