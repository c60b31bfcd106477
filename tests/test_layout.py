"""The package's house plan: imports between i2x modules (function-local ones included)
form no cycle, so every module has a place in one order (issue 11)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "i2x"


def _name(package: Path, path: Path) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module (dotted, under i2x: ``tracking``, ``runs.train``) -> the i2x modules it imports
    anywhere in its body, function-local imports included."""
    modules = {_name(package, p) for p in package.rglob("*.py")}

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "i2x":
                inner = node.module.partition(".")[2]
                targets = [f"{inner}.{a.name}" if inner else a.name for a in node.names]
                deps.update(filter(None, (known(t) for t in targets)))
            elif isinstance(node, ast.Import):
                deps.update(filter(None, (known(a.name.partition(".")[2]) for a in node.names if a.name.startswith("i2x."))))
        name = _name(package, path)
        graph[name] = deps - {name}
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
    assert {"cli", "runconfig", "config", "runs", "runs.explain", "artifacts"} <= set(graph)  # the graph is read, not empty
    assert "config" in graph["runconfig"] and {"runconfig", "artifacts"} <= graph["runs.explain"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_only_the_cli_reaches_the_stage_runs():
    """The runs sit on top: no library module imports one (the CLI dispatches by name)."""
    graph = import_graph(PACKAGE)
    users = {m for m, deps in graph.items() if any(d.startswith("runs.") for d in deps)}
    assert users <= {"runs", "cli"} | {m for m in graph if m.startswith("runs.")}, users


def test_no_module_is_over_400_lines():
    """A module a new engineer can read in one sitting (issue 11); split by topic when one grows."""
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
