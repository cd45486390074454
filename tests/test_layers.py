"""The package's import graph, read with ``ast``: layers point one way, lazy imports included.

Every ``import`` statement counts, at module level or inside a function (a lazy import is
still a dependency); only ``if TYPE_CHECKING:`` blocks are left out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cortex_nb"

# the layers, lowest first: a module may import its own layer's modules and lower layers only
LAYERS = [
    {"_version", "_aliases", "exceptions", "wire", "catalog", "options", "localfiles", "words",
     "times"},
    {"sql"},
    {"http"},
    {"results"},
    {"query"},
    {"record"},
    {"notebook"},
    {"cli"},
]
# what the sandbox, which emulates the service, may import of the client side
SANDBOX_MAY_IMPORT = {"cortex_nb.wire", "cortex_nb.catalog", "cortex_nb.exceptions"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    """Every import statement that can run (TYPE_CHECKING blocks left out)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The cortex_nb modules ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        found |= {t for t in targets if t.split(".")[0] == "cortex_nb" and t != name}
    return {t if t in modules else _owner(t, modules) for t in found} - {name, None}


def _owner(target: str, modules: dict[str, Path]) -> str | None:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules around it, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2 or parts[1] == "sandbox":
        return None
    for index, layer in enumerate(LAYERS):
        if parts[1] in layer:
            return index
    raise AssertionError(f"{name} is in no layer: add its package to LAYERS")


def test_the_graph_is_read(graph):
    """The reader sees real edges (so that an empty graph cannot pass the other tests)."""
    assert "cortex_nb.query.job" in graph["cortex_nb.query.service"]
    assert "cortex_nb.sandbox.server" in graph["cortex_nb.record.replay"]
    assert len(graph) > 50


def test_no_import_cycle(graph):
    cycle = find_cycle({k: v for k, v in graph.items() if k != "cortex_nb"})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_point_down(graph):
    upward = []
    for name, targets in graph.items():
        here = layer_of(name)
        if here is None:
            continue
        for target in targets:
            there = layer_of(target)
            if there is not None and there > here:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that point up a layer:\n" + "\n".join(sorted(upward))


def test_the_sandbox_imports_nothing_of_the_client_but_the_shared_modules(graph):
    leaks = [
        f"{name} -> {target}"
        for name, targets in graph.items() if name.startswith("cortex_nb.sandbox")
        for target in targets
        if not target.startswith("cortex_nb.sandbox") and target not in SANDBOX_MAY_IMPORT
    ]
    assert not leaks, "\n".join(leaks)


def test_the_library_knows_no_notebook(graph):
    """Below the notebook layer nothing imports IPython or ipywidgets."""
    notebook = LAYERS.index({"notebook"})
    offenders = []
    for name, path in all_modules().items():
        here = layer_of(name)
        if here is None or here >= notebook:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _import_nodes(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if any((n or "").split(".")[0] in ("IPython", "ipywidgets") for n in names):
                offenders.append(name)
    assert not offenders, offenders
