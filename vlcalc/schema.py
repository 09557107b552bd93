"""A small, strict JSON Schema validator for vlcalc's own document schemas.

vlcalc's schemas (``vlcalc/schemas/*.json``) are the contract; this module compiles the subset of
JSON Schema 2020-12 they use into closures once, so validating 100,000 node documents stays fast and
vlcalc needs no extra runtime dependency.  A keyword it does not implement is refused at compile
time rather than silently ignored.  The test suite checks it against the reference ``jsonschema``
package on generated documents.

>>> check = compile_schema({"type": "object", "required": ["a"]})
>>> check({"b": 1}, "doc")
'doc: missing required field "a"'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

Check = Callable[[Any, str], "str | None"]
"""A compiled schema: returns ``None`` when valid, else ``"path: what is wrong"``."""

_ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "default", "examples"}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key


def compile_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Check:
    """Compile ``schema`` (resolving ``$ref: #/$defs/...`` against ``root``) into a checker."""
    root = root if root is not None else schema
    checks: list[Check] = []
    unknown = set(schema) - _ANNOTATIONS - set(_KEYWORDS)
    if unknown:
        raise ValueError(f"schema keyword(s) not supported: {sorted(unknown)}")
    for keyword, value in schema.items():
        if keyword in _KEYWORDS:
            made = _KEYWORDS[keyword](value, schema, root)
            if made is not None:
                checks.append(made)

    if len(checks) == 1:
        return checks[0]

    def check_all(instance: Any, path: str) -> str | None:
        for one in checks:
            error = one(instance, path)
            if error:
                return error
        return None

    return check_all


def _type(value: str | list[str], schema: dict[str, Any], root: dict[str, Any]) -> Check:
    names = [value] if isinstance(value, str) else list(value)
    tests = [_TYPES[name] for name in names]
    wanted = " or ".join(names)

    def check(instance: Any, path: str) -> str | None:
        if any(test(instance) for test in tests):
            return None
        return f"{path}: expected {wanted}, got {_describe(instance)}"

    return check


def _const(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Check:
    def check(instance: Any, path: str) -> str | None:
        if instance == value and type(instance) is type(value):
            return None
        return f"{path}: expected {_describe(value)}, got {_describe(instance)}"

    return check


def _enum(values: list[Any], schema: dict[str, Any], root: dict[str, Any]) -> Check:
    def check(instance: Any, path: str) -> str | None:
        if any(instance == v and type(instance) is type(v) for v in values):
            return None
        return f"{path}: {_describe(instance)} is not one of {', '.join(map(_describe, values))}"

    return check


def _properties(props: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> Check:
    compiled = {name: compile_schema(sub, root) for name, sub in props.items()}

    def check(instance: Any, path: str) -> str | None:
        if not isinstance(instance, dict):
            return None
        for name, sub in compiled.items():
            if name in instance:
                error = sub(instance[name], _join(path, name))
                if error:
                    return error
        return None

    return check


def _required(names: list[str], schema: dict[str, Any], root: dict[str, Any]) -> Check:
    def check(instance: Any, path: str) -> str | None:
        if not isinstance(instance, dict):
            return None
        for name in names:
            if name not in instance:
                return f'{path or "document"}: missing required field "{name}"'
        return None

    return check


def _additional(value: bool, schema: dict[str, Any], root: dict[str, Any]) -> Check | None:
    if value is not False:
        raise ValueError("additionalProperties: only false is supported")
    known = set(schema.get("properties", {}))

    def check(instance: Any, path: str) -> str | None:
        if isinstance(instance, dict):
            for name in instance:
                if name not in known:
                    return f"{path or 'document'}: unexpected field {_describe(name)}"
        return None

    return check


def _items(sub: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> Check:
    item_check = compile_schema(sub, root)

    def check(instance: Any, path: str) -> str | None:
        if not isinstance(instance, list):
            return None
        for index, item in enumerate(instance):
            error = item_check(item, _join(path, index))
            if error:
                return error
        return None

    return check


def _bound(
    keyword: str,
    kind: type | tuple[type, ...],
    measure: Callable[[Any], Any],
    ok: Callable[[Any, Any], bool],
) -> Callable[[Any, dict[str, Any], dict[str, Any]], Check]:
    def make(limit: Any, schema: dict[str, Any], root: dict[str, Any]) -> Check:
        def check(instance: Any, path: str) -> str | None:
            if not isinstance(instance, kind) or isinstance(instance, bool):
                return None
            if ok(measure(instance), limit):
                return None
            return f"{path}: {_describe(instance)} breaks {keyword} {limit!r}"

        return check

    return make


def _pattern(regex: str, schema: dict[str, Any], root: dict[str, Any]) -> Check:
    compiled = re.compile(regex)

    def check(instance: Any, path: str) -> str | None:
        if not isinstance(instance, str) or compiled.search(instance):
            return None
        return f"{path}: {_describe(instance)} does not match {regex}"

    return check


def _any_of(subs: list[dict[str, Any]], schema: dict[str, Any], root: dict[str, Any]) -> Check:
    compiled = [compile_schema(sub, root) for sub in subs]

    def check(instance: Any, path: str) -> str | None:
        errors = []
        for sub in compiled:
            error = sub(instance, path)
            if error is None:
                return None
            errors.append(error)
        # Report the branch that got furthest (its error names the deepest path).
        return max(errors, key=lambda e: (e.split(":", 1)[0].count("."), "expected" not in e))

    return check


def _ref(ref: str, schema: dict[str, Any], root: dict[str, Any]) -> Check:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"only local $ref to {prefix} is supported: {ref}")
    target = root["$defs"][ref[len(prefix) :]]
    return compile_schema(target, root)


_KEYWORDS: dict[str, Callable[[Any, dict[str, Any], dict[str, Any]], Check | None]] = {
    "type": _type,
    "const": _const,
    "enum": _enum,
    "properties": _properties,
    "required": _required,
    "additionalProperties": _additional,
    "items": _items,
    "minItems": _bound("minItems", list, len, lambda n, limit: n >= limit),
    "maxItems": _bound("maxItems", list, len, lambda n, limit: n <= limit),
    "minLength": _bound("minLength", str, len, lambda n, limit: n >= limit),
    "maxLength": _bound("maxLength", str, len, lambda n, limit: n <= limit),
    "minimum": _bound("minimum", (int, float), lambda v: v, lambda v, limit: v >= limit),
    "maximum": _bound("maximum", (int, float), lambda v: v, lambda v, limit: v <= limit),
    "multipleOf": _bound("multipleOf", (int, float), lambda v: v, lambda v, limit: v % limit == 0),
    "pattern": _pattern,
    "anyOf": _any_of,
    "$ref": _ref,
}


def load_schema(name: str) -> dict[str, Any]:
    """The schema file shipped in the package, e.g. ``load_schema("probe-1")``."""
    text = resources.files("vlcalc").joinpath("schemas", f"{name}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def validator(name: str) -> Check:
    """The compiled checker for a shipped schema, compiled once per process."""
    return compile_schema(load_schema(name))
