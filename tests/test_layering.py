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
            # "from . import args" inside a package imports its module args, not the package
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for candidate in submodules or [target]:
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


#: The packages (and top-level modules) from the bottom up: each may import only from the
#: layers below it. napari's adapters and the command line are the top.
LAYERS = (
    ("errors", "run", "_version", "choices"),
    ("vocab",),
    ("io",),
    ("tasks", "nets", "simulate"),
    ("checkpoints",),
    ("predict",),
    ("train", "quantify"),
    ("_reader", "_writer"),
    ("_sample_data",),
    ("widgets", "cli", PACKAGE),
)


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer_violations(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Package imports that do not go strictly down the :data:`LAYERS` (a package importing
    its own modules is fine); a package that is in no layer is a violation too."""
    layer = {name: k for k, names in enumerate(LAYERS) for name in names}
    bad = []
    for m, targets in edges.items():
        a = _package_of(m)
        for t in targets:
            b = _package_of(t)
            if a != b and (a not in layer or b not in layer or layer[b] >= layer[a]):
                bad.append((m, t))
    return sorted(bad)


def test_packages_import_only_from_the_layers_below():
    assert _layer_violations(_package_edges()) == []


def test_the_layers_contract_catches_an_upward_import():
    # the cycle the synthesis code once had: nets importing a condition module that imported
    # predict, which imports nets
    planted = {f"{PACKAGE}.nets.pyramid_gan": {f"{PACKAGE}.predict.synthesize"},
               f"{PACKAGE}.predict.synthesize": {f"{PACKAGE}.nets.condition"}}
    assert _layer_violations(planted) == [(f"{PACKAGE}.nets.pyramid_gan",
                                           f"{PACKAGE}.predict.synthesize")]
    assert _layer_violations({f"{PACKAGE}.newpkg.x": {f"{PACKAGE}.vocab"}}) != []
