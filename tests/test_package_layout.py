"""The package's imports run downward: no import cycle, and the recorder sits above what it uses.

Read from the source with ast (every `import physrec...` and `from physrec... import`,
top-level, in functions and under TYPE_CHECKING alike), so a cycle fails here even where a
function-level import keeps it from failing at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import physrec

ROOT = Path(physrec.__file__).parent
RECORDER = "physrec.recording"


def _module_name(path: Path) -> str:
    parts = ("physrec",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The physrec modules that importing `name` (at `path`) imports, with their parent packages
    (importing a.b.c runs a/b/__init__.py first)."""
    package = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
    targets: set[str] = set()
    for target in found:
        if target != "physrec" and not target.startswith("physrec."):
            continue
        parts = target.split(".")
        targets.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {t for t in targets if t in modules and t != name and t != "physrec"}


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
    modules = set(paths)
    return {name: _imports(path, name, modules) for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def _recorder(modules: set[str]) -> set[str]:
    return {m for m in modules if m == RECORDER or m.startswith(RECORDER + ".")}


# What the layers below the recorder may reach of it, through physrec.config: RecordSettings,
# which imports nothing else of the recorder (the package's __init__ imports nothing).
SETTINGS = {RECORDER, f"{RECORDER}.settings"}
LOWER = ("physrec.trackers", "physrec.observations", "physrec.motion", "physrec.sim", "physrec.formats")


def test_no_import_cycle():
    assert _cycles(import_graph()) == []


def test_the_layers_below_never_import_the_recorder():
    """The recorder drives trackers, observers and backends; one that imported it back would
    close a cycle. They reach its settings at most, through the config."""
    graph = import_graph()
    for name in graph:
        if name.startswith(LOWER):
            assert not _recorder(graph[name]), name
            assert _recorder(_reach(graph, name)) <= SETTINGS, name


def test_config_reaches_only_the_recorders_settings():
    """Select and merge jobs read the config: it may build RecordSettings, never load the recorder."""
    graph = import_graph()
    assert _recorder(_reach(graph, "physrec.config")) <= SETTINGS
    assert graph.get(RECORDER, set()) == set()  # the package's __init__ loads none of the recorder


def test_the_graph_sees_function_level_imports():
    """A check of the checker: config imports RecordSettings inside a function."""
    assert f"{RECORDER}.settings" in import_graph()["physrec.config"]
