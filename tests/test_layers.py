"""The layers of ``docs/architecture.md``, checked: no module imports one above it, and no import
cycle anywhere (function-level and type-only imports included: a cycle hidden in a function is
still a cycle).  A new module must be given its layer here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vlcalc"

# Bottom to top.  A module may import its own layer and the layers below it.
LAYERS: list[tuple[str, ...]] = [
    ("vlcalc", "vlcalc.model", "vlcalc.errors", "vlcalc.transport.base"),  # shared names, data
    ("vlcalc.vl",),  # VL sets and their syntaxes
    ("vlcalc.compat", "vlcalc.qemu"),  # the kernel's rule, QEMU's property rules
    ("vlcalc.documents", "vlcalc.answer", "vlcalc.ansible_facts"),  # documents -> node records
    ("vlcalc.report",),  # answers and the one report view
    ("vlcalc.render", "vlcalc.html"),  # formatting the view
    # I/O: files, inventories, transports, the probe runner
    ("vlcalc.files", "vlcalc.options", "vlcalc.inventory", "vlcalc.transport", "vlcalc.probe"),
    ("vlcalc.scan",),  # bounded parallel collection
    ("vlcalc.lab",),  # the emulated fleet (a tool of its own)
    ("vlcalc.app",),  # what each command does
    ("vlcalc.cli", "vlcalc.__main__"),  # typer: options in, exit code out
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int:
    best, rank = "", -1
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, rank = prefix, index
    assert rank >= 0, f"{name} has no layer: add it to LAYERS in {__file__}"
    return rank


def imports_of(path: Path, name: str) -> set[str]:
    """Every vlcalc module ``path`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from vlcalc import model` imports vlcalc.model
                candidate = f"{base}.{alias.name}"
                found.add(
                    candidate
                    if (PACKAGE.parent / (candidate.replace(".", "/"))).exists()
                    or (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists()
                    else base
                )
    return {item for item in found if item == "vlcalc" or item.startswith("vlcalc.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, name) - {name} for name, path in modules.items()}


def test_every_module_has_a_layer_and_imports_only_downwards() -> None:
    upward = [
        f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})"
        for name, targets in sorted(graph().items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    edges = graph()
    modules = set(edges)

    def resolve(target: str) -> str | None:  # `vlcalc.transport.ssh.X` may be a package
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for target in sorted(filter(None, map(resolve, edges[name]))):
            if target == "vlcalc" or target == name:
                continue  # the package itself only holds __version__
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(modules):
        if name not in state and (cycle := visit(name)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The checks above must be able to fail: a pure module importing the CLI is caught."""
    fake = PACKAGE / "vl.py"
    found = imports_of(fake, "vlcalc.vl")
    assert "vlcalc.errors" in found
    probe = tmp_path / "vl.py"
    probe.write_text("def f():\n    from vlcalc.cli import app\n    from . import scan\n")
    sneaky = imports_of(probe, "vlcalc.vl")
    assert {"vlcalc.cli", "vlcalc.scan"} <= sneaky
    assert max(layer_of(target) for target in sneaky) > layer_of("vlcalc.vl")
