"""The package has no import cycle, and the document readers are pure layers (issue 13).

Every ``import`` counts, also one inside a function or under ``TYPE_CHECKING``: a deferred import
hides a cycle but does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vlcalc"

# What each reader module may import of vlcalc's (bottom first).  A module not listed is free,
# except that it must not take part in a cycle.
ALLOWED = {
    "vlcalc.model": set(),
    "vlcalc.errors": {"vlcalc.model"},
    "vlcalc.documents": {"vlcalc.errors", "vlcalc.model", "vlcalc.vl"},
    "vlcalc.answer": {
        "vlcalc.documents", "vlcalc.errors", "vlcalc.model", "vlcalc.transport.base",
    },
    "vlcalc.ansible_facts": {
        "vlcalc.answer", "vlcalc.documents", "vlcalc.errors", "vlcalc.model",
        "vlcalc.transport.base",
    },
    "vlcalc.files": {
        "vlcalc.ansible_facts", "vlcalc.documents", "vlcalc.errors", "vlcalc.model",
    },
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each vlcalc module and the vlcalc modules it imports."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycle() -> None:
    graph = imports()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for imported in sorted(graph[name]):
            # A package's own __init__ is imported by its submodules' import: not an edge back.
            if not name.startswith(imported + "."):
                visit(imported, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_readers_import_only_the_layers_below(module: str) -> None:
    imported = imports()[module] - {"vlcalc"}
    assert imported <= ALLOWED[module], sorted(imported - ALLOWED[module])


def test_documents_does_not_load_the_probe_runner() -> None:
    assert "vlcalc.probe" not in imports()["vlcalc.documents"]
