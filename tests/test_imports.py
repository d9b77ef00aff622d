"""The import graph of the `harvester` package: no module imports itself back through others, and the
store (the lowest layer but `errors`) imports nothing from `prompts` or `export`.

Imports are read from the source with `ast`, not from `sys.modules`: a graph of who imports whom at
import time, module-level imports only (those in a function run on use, those under
`if TYPE_CHECKING:` never). Importing `a.b.c` also runs `a/__init__` and `a/b/__init__`: those count as
imported too (unless they are the importer's own packages, already being imported). Names loaded with
`importlib.import_module` (the package's lazy `__getattr__`) are not seen, by design: they load on use.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import harvester

ROOT = "harvester"


@dataclass(frozen=True)
class Import:
    target: str        # a module of the package
    line: int
    top_level: bool    # runs when the importer is imported (not in a function, not under TYPE_CHECKING)


def modules() -> dict[str, Path]:
    """Every module of the package, by name → its source file. Found in the folders, not by importing
    the subpackages (as `pkgutil.walk_packages` does): a cycle that breaks an import would hide them."""
    found = {ROOT: Path(harvester.__file__)}

    def walk(folder: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(folder)]):
            name = f"{prefix}.{info.name}"
            if info.ispkg:
                found[name] = folder / info.name / "__init__.py"
                walk(folder / info.name, name)
            else:
                found[name] = folder / f"{info.name}.py"

    walk(Path(harvester.__file__).parent, ROOT)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs at import time. A class body runs then, as do
    top-level `if`/`try`/`with` blocks; a function's body does not, nor does `if TYPE_CHECKING:`."""
    out: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append((node, top))
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            top = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, top)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, top)

    visit(tree, True)
    return out


def _base(module: str, is_package: bool, level: int) -> str:
    """The package a relative import of `level` dots in `module` starts from."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(parts) - 1:
        raise AssertionError(f"{module}: a relative import goes above the package")
    return ".".join(parts[:len(parts) - (level - 1)])


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """The package-internal imports of `module`, relative ones resolved, with the packages they run."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    own = {module, *_ancestors(module)}
    found: list[Import] = []

    def add(target: str, line: int, top: bool) -> None:
        if target not in known:
            return
        found.append(Import(target, line, top))
        for package in _ancestors(target):          # importing a.b.c runs a and a.b first
            if package not in own:
                found.append(Import(package, line, top))

    for node, top in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(f"{ROOT}."):
                    add(alias.name, node.lineno, top)
            continue
        if node.level:
            base = _base(module, is_package, node.level)
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        if source != ROOT and not source.startswith(f"{ROOT}."):
            continue
        add(source, node.lineno, top)
        for alias in node.names:                      # `from . import ledger`: a submodule
            if f"{source}.{alias.name}" in known:
                add(f"{source}.{alias.name}", node.lineno, top)
    return found


def graph(top_level_only: bool = True) -> dict[str, dict[str, int]]:
    """module → {imported module: line of the first such import}."""
    found = modules()
    known = set(found)
    edges: dict[str, dict[str, int]] = {}
    for name, path in found.items():
        edges[name] = {}
        for imp in imports_of(name, path, known):
            if imp.top_level or not top_level_only:
                if imp.target != name:
                    edges[name].setdefault(imp.target, imp.line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other (Tarjan's strongly connected
    components, then a path back to the start inside the component)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            connect(v)

    found = []
    for component in components:
        start = min(component)
        path = _path_back(start, component, edges)
        found.append(path)
    return found


def _path_back(start: str, component: set[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """The shortest path start → ... → start inside one strongly connected component."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w not in component:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def describe(cycle: list[str], edges: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


# --- the tests ------------------------------------------------------------------------------------

def test_the_graph_is_read() -> None:
    """The parser sees the imports it must (else the tests below would pass on an empty graph)."""
    assert {"harvester.store.rows", "harvester.prompts.tables", "harvester.export.pipeline"} <= set(modules())
    top = graph()
    assert {"harvester.config", "harvester.quota", "harvester.store"} <= set(top["harvester.api"])
    assert "harvester.store.ledger" in top["harvester.store"]                   # from . import ledger
    assert "harvester.store.rows" in top["harvester.export.filters"]            # absolute
    assert "harvester" in top["harvester.export.pipeline"]                      # from .. import __version__
    assert {"harvester.prompts", "harvester.prompts.formats"} <= set(top["harvester.config"])   # and its package
    assert "harvester.store" not in top["harvester.store.ledger"]               # only under TYPE_CHECKING
    assert "harvester.export.pipeline" not in top["harvester.api"]              # in functions, TYPE_CHECKING
    assert "harvester.export.pipeline" in graph(top_level_only=False)["harvester.api"]
    assert "harvester.crawler" not in top["harvester.api"]                      # the SDK: only to send
    assert "harvester.crawler" in graph(top_level_only=False)["harvester.api"]
    assert "harvester.prompts.tables" not in top["harvester.prompts.formats"]   # read on use


def test_no_module_imports_itself_back() -> None:
    edges = graph()
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(describe(c, edges) for c in found)


def test_cycles_are_found_and_named() -> None:
    edges = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"e": 5}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert describe(["a", "b", "c", "a"], edges) == "a (line 1) -> b (line 2) -> c (line 3) -> a"


def test_the_store_imports_neither_prompts_nor_export() -> None:
    edges = graph(top_level_only=False)      # at any level: in functions and for type checking too
    bad = {f"{module} -> {target} (line {line})"
           for module, targets in edges.items() if module == "harvester.store" or module.startswith("harvester.store.")
           for target, line in targets.items()
           if target.split(".")[:2] in (["harvester", "prompts"], ["harvester", "export"])}
    assert not bad, sorted(bad)


def test_config_validates_formats_against_the_one_registry() -> None:
    from harvester.config import PromptSet
    from harvester.prompts.formats import FORMATS

    assert get_args(PromptSet.model_fields["format"].annotation) == ("auto", *FORMATS)


def test_reading_a_job_file_imports_no_table_reader_nor_the_store() -> None:
    code = ("import sys, harvester.config; print(sorted(m for m in ('pyarrow', 'datasets', 'sqlalchemy', "
            "'harvester.store', 'harvester.prompts.tables') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
