"""Who may import whom (docs/architecture.md), read from the source: imports inside functions
count too, since a circle through them still ties modules together."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "napari_omniseg"
PACKAGE = "napari_omniseg"
#: The only modules that may import the GUI libraries.
# napari's adapters: the widgets, and the npe2 reader, writers and samples (which tell failures
# in napari notifications); the core they call imports none of these libraries
GUI_MODULES = ("napari_omniseg.widgets", "napari_omniseg._reader", "napari_omniseg._writer",
               "napari_omniseg._sample_data")
GUI_LIBRARIES = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6")


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import statement of a module, relative ones resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names]))
    return found


def _package_edges() -> dict[str, set[str]]:
    """Module -> package modules it imports (``from . import vocab`` counts as vocab)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for target, names in _imports(m):
            for candidate in [target, *(f"{target}.{n}" for n in names)]:
                if candidate in MODULES and candidate not in (m, PACKAGE):
                    edges[m].add(candidate)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_there_is_no_import_circle():
    assert _cycles(_package_edges()) == []


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_inference_never_imports_training():
    bad = [(m, t) for m, targets in _package_edges().items() for t in targets
           if m.startswith(f"{PACKAGE}.predict") and t.startswith(f"{PACKAGE}.train")]
    assert bad == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith(GUI_MODULES)))
def test_the_core_never_imports_the_gui(module):
    gui = [t for t, _ in _imports(module) if t.split(".")[0] in GUI_LIBRARIES]
    assert gui == []


def test_no_module_takes_names_from_the_package_init():
    bad = []
    for m in MODULES:
        for target, names in _imports(m):
            if target == PACKAGE:
                bad += [(m, n) for n in names if f"{PACKAGE}.{n}" not in MODULES]
    assert bad == []


def test_run_contract_imports_nothing_of_the_package():
    assert [t for t, _ in _imports(f"{PACKAGE}.run") if t.startswith(PACKAGE)] == []
