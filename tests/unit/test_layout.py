"""Package layout: no import cycle among qatune's modules, counting imports inside functions too (a lazy import
that only hides a cycle still couples the modules), and the stage entries callers use stay where they are."""

from __future__ import annotations

import ast
from pathlib import Path

import qatune

SRC = Path(qatune.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.stmt) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.Module, modules: dict[str, Path]) -> set[str]:
    """qatune modules `tree` imports anywhere except under `if TYPE_CHECKING:`; `from pkg import sub` counts
    as importing the submodule."""
    found: set[str] = set()
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.stmt) and _type_checking(node):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        todo.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_qatune_modules():
    modules = _modules()
    graph = {name: _imports(ast.parse(path.read_text(encoding="utf-8")), modules) for name, path in modules.items()}
    assert graph["qatune.data.read"] >= {"qatune.data.xlsx", "qatune.data.delimited", "qatune.data.records"}
    assert _cycles(graph) == []


def test_the_cycle_check_sees_a_lazy_import_cycle():
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b"]]


def test_stage_entries_keep_their_import_paths():
    from qatune import generate, train

    assert callable(train.train) and callable(train.is_current) and callable(train.can_resume)
    assert callable(train.input_hash)
    assert generate.BASE == "base" and callable(generate.load_engine) and callable(generate.auto_batch_size)
