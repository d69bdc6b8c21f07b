"""The SDK's modules import one another in one direction only: no import
cycle, counting every import in a file (at the top, inside functions and
under TYPE_CHECKING), since any of them ties the two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

import atoll

PACKAGE = Path(atoll.__file__).resolve().parent


def _module_name(path: Path) -> str:
    return "atoll" if path.name == "__init__.py" else f"atoll.{path.stem}"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The SDK modules path imports (the generated atoll.v1 code aside)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to the package
                base = "atoll" + (f".{base}" if base else "")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    """Module name -> the SDK modules it imports."""
    paths = sorted(PACKAGE.glob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) - {_module_name(p)} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of graph, as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            cycle = visit(dep)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_find_cycle_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_sdk_has_no_import_cycle():
    graph = import_graph()
    # The package's __init__ re-exports the public names, so it imports the
    # modules that define them; none of them may import it back.
    assert "atoll._api" in graph["atoll"]
    assert graph["atoll._client"] >= {"atoll._channel", "atoll._call"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_runner_imports_nothing_of_the_sdk():
    # It runs in the user's environment, which holds the runner file only.
    assert import_graph()["atoll._runner"] == set()
