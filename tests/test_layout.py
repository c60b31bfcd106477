"""The package's house plan: imports between i2x modules (function-local ones included)
form no cycle, so every module has a place in one order (issue 11)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "i2x"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the i2x modules it imports anywhere in its body."""
    modules = {p.stem for p in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "i2x":
                parts = node.module.split(".")
                names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
                deps.update(n for n in names if n in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith("i2x.") and a.name.split(".")[1] in modules)
        graph[path.stem] = deps - {path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"cli": {"workflow"}, "workflow": {"config", "cli"}, "config": set()}) == ["cli", "workflow", "cli"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph(PACKAGE)
    assert {"cli", "workflow", "runconfig", "config"} <= set(graph)  # the graph is read, not empty
    assert "config" in graph["runconfig"] and "runconfig" in graph["workflow"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
