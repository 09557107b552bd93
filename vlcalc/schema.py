"""A small, strict JSON Schema validator for vlcalc's own document schemas.

vlcalc's schemas (``vlcalc/schemas/*.json``) are the contract.  This module compiles the subset of
JSON Schema 2020-12 they use into Python source once per process (the technique of fastjsonschema),
so validating 100,000 node documents costs a few microseconds each and vlcalc needs no extra
runtime dependency.  Only vlcalc's own shipped schemas are compiled — never anything a node sent.
A keyword it does not implement is refused at compile time rather than silently ignored.  The test
suite checks the result against the reference ``jsonschema`` package on generated documents.

A valid document allocates nothing; a failure builds a :class:`Failure` whose message is made
only when it is shown.

>>> check = compile_schema({"type": "object", "required": ["a"]})
>>> check({"b": 1}, "doc")
'doc: missing required field "a"'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

Check = Callable[[Any, str], "str | None"]
"""A compiled schema: returns ``None`` when valid, else ``"path: what is wrong"``."""

_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "default", "examples"}
_SUPPORTED = {
    "type", "const", "enum", "properties", "required", "additionalProperties", "items",
    "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "multipleOf",
    "pattern", "anyOf", "$ref",
}  # fmt: skip
# A Python expression per JSON type, over the variable ``{v}``.  JSON booleans are not numbers,
# although Python's bool is an int.
_TYPE_TESTS = {
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "string": "isinstance({v}, str)",
    "integer": "(isinstance({v}, int) and not isinstance({v}, bool))",
    "number": "(isinstance({v}, (int, float)) and not isinstance({v}, bool))",
    "boolean": "isinstance({v}, bool)",
    "null": "{v} is None",
}


class Failure:
    """Why an instance is invalid: where (``path``), and a message made on demand."""

    __slots__ = ("message", "path", "wanted")

    def __init__(
        self, path: Sequence[str | int], message: Callable[[], str], wanted: str | None = None
    ):
        self.path = list(path)
        self.message = message
        self.wanted = wanted  # set when the instance merely had the wrong type

    def render(self, root: str) -> str:
        path = root
        for key in self.path:
            path = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
        return f"{path or 'document'}: {self.message()}"


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _prefixed(path: tuple[str | int, ...], failure: Failure) -> Failure:
    failure.path[:0] = path
    return failure


def _any_of_failure(path: tuple[str | int, ...], failures: list[Failure], value: Any) -> Failure:
    # Report the branch that got furthest: not a mere type mismatch, and the deepest path.
    best = max(failures, key=lambda f: (f.wanted is None or bool(f.path), len(f.path)))
    if best.wanted is not None and not best.path:
        wanted = " or ".join(f.wanted or "?" for f in failures)
        return Failure(path, lambda: f"expected {wanted}, got {_describe(value)}", wanted)
    return _prefixed(path, best)


_MATCHED_MAX = 65536  # strings remembered per pattern


def _matches(pattern: re.Pattern[str], seen: set[str], value: str) -> bool:
    if pattern.search(value) is None:
        return False
    if len(seen) < _MATCHED_MAX:
        seen.add(value)
    return True


def _equal(value: Any, expected: Any) -> bool:
    return bool(value == expected and type(value) is type(expected))


def _type_names(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class _Generator:
    """Turns a schema into the source of functions ``_f0`` ... that return a Failure or None."""

    def __init__(self, root: dict[str, Any]):
        self.root = root
        self.source: list[str] = []
        self.constants: dict[str, Any] = {}
        self.refs: dict[str, str] = {}
        self.inlining: set[str] = set()
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def constant(self, value: Any) -> str:
        name = self.name("_c")
        self.constants[name] = value
        return name

    def function(self, schema: dict[str, Any]) -> str:
        name = self.name("_f")
        body: list[str] = []
        self.emit(schema, "v", [], body, 1)
        self.source += [f"def {name}(v):", *body, "    return None", ""]
        return name

    def emit(
        self, schema: dict[str, Any], var: str, path: list[str], out: list[str], depth: int
    ) -> None:
        unknown = set(schema) - _ANNOTATIONS - _SUPPORTED
        if unknown:
            raise ValueError(f"schema keyword(s) not supported: {sorted(unknown)}")
        pad = "    " * depth
        where = "(" + "".join(f"{p}, " for p in path) + ")"

        def guard(json_type: str, test: str) -> str:
            """``test`` applies to one JSON type only: skip the type test once it is known."""
            if known_type == json_type or (json_type, known_type) == ("number", "integer"):
                return test
            return f"{_TYPE_TESTS[json_type].format(v=var)} and {test}"

        def fail(condition: str, message: str, wanted: str | None = None) -> None:
            extra = f", {wanted!r}" if wanted else ""
            out.append(f"{pad}if {condition}:")
            out.append(f"{pad}    return _Failure({where}, lambda: {message}{extra})")

        known_type = None
        for key, value in sorted(schema.items(), key=lambda item: item[0] != "type"):
            if key == "type":
                names = _type_names(value)
                test = " or ".join(_TYPE_TESTS[n].format(v=var) for n in names)
                wanted = " or ".join(names)
                fail(f"not ({test})", f"'expected {wanted}, got ' + _describe({var})", wanted)
                known_type = names[0] if len(names) == 1 else None
            elif key == "const":
                c = self.constant(value)
                fail(
                    f"not _equal({var}, {c})",
                    f"'expected ' + _describe({c}) + ', got ' + _describe({var})",
                )
            elif key == "enum":
                c = self.constant(value)
                fail(
                    f"not any(_equal({var}, e) for e in {c})",
                    f"_describe({var}) + ' is not one of ' + ', '.join(map(_describe, {c}))",
                )
            elif key == "required":
                for field in value:
                    fail(
                        guard("object", f"{field!r} not in {var}"),
                        repr(f'missing required field "{field}"'),
                    )
            elif key == "additionalProperties":
                if value is not False:
                    raise ValueError("additionalProperties: only false is supported")
                known = self.constant(frozenset(schema.get("properties", {})))
                extra = self.name("k")
                out.append(f"{pad}if isinstance({var}, dict):")
                out.append(f"{pad}    for {extra} in {var}:")
                out.append(f"{pad}        if {extra} not in {known}:")
                out.append(
                    f"{pad}            return _Failure({where}, lambda {extra}={extra}: "
                    f"'unexpected field ' + _describe({extra}))"
                )
            elif key == "properties":
                out.append(f"{pad}if isinstance({var}, dict):")
                for field, sub in value.items():
                    item = self.name("p")
                    out.append(f"{pad}    if {field!r} in {var}:")
                    out.append(f"{pad}        {item} = {var}[{field!r}]")
                    self.emit(sub, item, [*path, repr(field)], out, depth + 2)
            elif key == "items":
                index, item = self.name("i"), self.name("x")
                out.append(f"{pad}if isinstance({var}, list):")
                out.append(f"{pad}    for {index}, {item} in enumerate({var}):")
                self.emit(value, item, [*path, index], out, depth + 2)
            elif key in ("minItems", "maxItems", "minLength", "maxLength"):
                kind = "array" if key.endswith("Items") else "string"
                op = ">=" if key.startswith("min") else "<="
                fail(
                    guard(kind, f"not len({var}) {op} {value!r}"),
                    f"_describe({var}) + ' breaks {key} {value!r}'",
                )
            elif key in ("minimum", "maximum", "multipleOf"):
                test = {
                    "minimum": f"{var} >= {value!r}",
                    "maximum": f"{var} <= {value!r}",
                    "multipleOf": f"{var} % {value!r} == 0",
                }[key]
                fail(
                    guard("number", f"not ({test})"),
                    f"_describe({var}) + ' breaks {key} {value!r}'",
                )
            elif key == "pattern":
                # Fleets repeat the same strings (kernel, CPU model, messages): remember the
                # ones that matched, so each is searched once.
                c, seen = self.constant(re.compile(value)), self.constant(set())
                fail(
                    guard("string", f"not ({var} in {seen} or _matches({c}, {seen}, {var}))"),
                    f"_describe({var}) + ' does not match ' + {value!r}",
                )
            elif key == "anyOf":
                # Branches that only name a type (typically {"type": "null"}) are tested inline
                # first: a match skips the other branches, and only the others are called.  The
                # type-only branches are called just to word the failure.
                is_quick = [set(sub) == {"type"} for sub in value]
                quick = [
                    " or ".join(_TYPE_TESTS[n].format(v=var) for n in _type_names(sub["type"]))
                    for sub, fast in zip(value, is_quick)
                    if fast
                ]
                start = pad
                if quick:
                    out.append(f"{pad}if not ({' or '.join(quick)}):")
                    start += "    "
                branches = [self.function(sub) for sub in value]
                names = [self.name("b") for _ in branches]
                slow = [(b, n) for b, n, fast in zip(branches, names, is_quick) if not fast]
                for level, (branch, result) in enumerate(slow):
                    inner = start + "    " * level
                    out.append(f"{inner}{result} = {branch}({var})")
                    out.append(f"{inner}if {result} is not None:")
                inner = start + "    " * len(slow)
                for branch, result, fast in zip(branches, names, is_quick):
                    if fast:
                        out.append(f"{inner}{result} = {branch}({var})")
                out.append(f"{inner}return _any_of_failure({where}, [{', '.join(names)}], {var})")
            elif key == "$ref" and value not in self.inlining:
                self.inlining.add(value)
                self.emit(self.resolve(value), var, path, out, depth)
                self.inlining.discard(value)
            elif key == "$ref":
                target = self.ref(value)
                result = self.name("r")
                out.append(f"{pad}{result} = {target}({var})")
                out.append(f"{pad}if {result} is not None:")
                out.append(f"{pad}    return _prefixed({where}, {result})")

    def resolve(self, ref: str) -> dict[str, Any]:
        prefix = "#/$defs/"
        if not ref.startswith(prefix):
            raise ValueError(f"only local $ref to {prefix} is supported: {ref}")
        target: dict[str, Any] = self.root["$defs"][ref[len(prefix) :]]
        return target

    def ref(self, ref: str) -> str:
        """A function for a recursive ``$ref`` (one that is being inlined already)."""
        if ref not in self.refs:
            self.refs[ref] = self.function(self.resolve(ref))
        return self.refs[ref]


def compile_schema(schema: dict[str, Any]) -> Check:
    """Compile one of vlcalc's own schemas (resolving ``$ref: #/$defs/...``) into a checker."""
    generator = _Generator(schema)
    entry = generator.function(schema)
    namespace: dict[str, Any] = {
        "_Failure": Failure,
        "_describe": _describe,
        "_prefixed": _prefixed,
        "_any_of_failure": _any_of_failure,
        "_equal": _equal,
        "_matches": _matches,
        **generator.constants,
    }
    exec(compile("\n".join(generator.source), "<vlcalc schema>", "exec"), namespace)
    node: Callable[[Any], Failure | None] = namespace[entry]

    def check(instance: Any, path: str) -> str | None:
        failure = node(instance)
        return None if failure is None else failure.render(path)

    return check


def load_schema(name: str) -> dict[str, Any]:
    """The schema file shipped in the package, e.g. ``load_schema("probe-1")``."""
    text = resources.files("vlcalc").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def validator(name: str) -> Check:
    """The compiled checker for a shipped schema, compiled once per process."""
    return compile_schema(load_schema(name))
