"""Package layout: no import cycle among qatune's modules, counting imports inside functions and under
`if TYPE_CHECKING:` too (a lazy or type-only import that only hides a cycle still couples the modules), the stage
entries callers use stay where they are, and retrieval stays inside qatune.rag (the index's files, its builders
and the "+rag" spelling)."""

from __future__ import annotations

import ast
from pathlib import Path

import qatune

SRC = Path(qatune.__file__).resolve().parent
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
INDEX_FILES = ("index.json", "pairs.jsonl", "vectors.safetensors")
INDEX_BUILDERS = {"Index", "build_index", "load_index", "run_index"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.Module, modules: dict[str, Path]) -> set[str]:
    """qatune modules `tree` imports anywhere, inside functions and under `if TYPE_CHECKING:` included;
    `from pkg import sub` counts as importing the submodule."""
    found: set[str] = set()
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
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


def _in_rag(module: str) -> bool:
    return module == "qatune.rag" or module.startswith("qatune.rag.")


def _strings(tree: ast.Module) -> list[ast.Constant]:
    """Every string in the module: literals, docstrings and the fixed parts of f-strings."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _index_uses(tree: ast.Module) -> list[str]:
    """Where a module names a file inside the retrieval index or takes the functions that build or load it."""
    found = [f"line {n.lineno} names {f}" for n in _strings(tree) for f in INDEX_FILES if f in n.value]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found += [f"line {node.lineno} imports {a.name}" for a in node.names if a.name in INDEX_BUILDERS]
        elif isinstance(node, ast.Attribute) and node.attr in INDEX_BUILDERS:
            found.append(f"line {node.lineno} uses {node.attr}")
    return found


def test_only_the_rag_package_builds_or_reads_the_retrieval_index():
    """RunDir owns the folder (index_dir, has_index); its files and how they are written and read are rag's."""
    modules = _modules()
    assert _in_rag("qatune.rag.index") and "qatune.rag.index" in modules
    assert _index_uses(ast.parse('from qatune.rag.index import load_index\np = d / "index.json"')) != []
    outside = {name: _index_uses(ast.parse(path.read_text(encoding="utf-8"))) for name, path in modules.items()}
    assert {name: uses for name, uses in outside.items() if uses and not _in_rag(name)} == {}


def test_the_grounded_suffix_is_spelled_only_where_rag_suffix_is_defined():
    """Code asks is_grounded/closed_book/grounded_name, and text that shows the suffix is built from RAG_SUFFIX."""
    names = SRC / "rag" / "names.py"
    assert "RAG_SUFFIX = " in names.read_text(encoding="utf-8")
    paths = [*SRC.rglob("*.py"), *BENCHMARKS.rglob("*.py")]
    spelled = {
        str(path): [n.lineno for n in _strings(ast.parse(path.read_text(encoding="utf-8"))) if "+rag" in n.value]
        for path in paths
        if path != names
    }
    assert BENCHMARKS.is_dir() and {path: lines for path, lines in spelled.items() if lines} == {}


def test_a_type_only_import_counts():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from qatune.rundir import RunDir\n"
        "def f():\n    from qatune import storage\n"
    )
    modules = {"qatune.rundir": Path("rundir.py"), "qatune.storage": Path("storage.py")}
    assert _imports(tree, modules) == {"qatune.rundir", "qatune.storage"}
