"""The package's house plan (issues 11 and 25): the folders follow the method's data, imports
between them (function-local ones included) run one way, down :data:`LAYERS`, and no module
imports in a cycle."""

import ast
import shutil
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


# Top to bottom: a module may import from its own folder and from the folders below it, never
# from one above. ``""`` is the package's ``__init__`` (lazy exports, no static import).
LAYERS = ("cli", "runs", "reporting", "repair", "tuning", "explanation", "training", "platform")


def layer(module: str) -> int:
    """Index in :data:`LAYERS` of a module (``tuning.study`` -> the ``tuning`` folder)."""
    top = module.split(".")[0]
    if top not in LAYERS:
        raise AssertionError(f"i2x.{module} is in no folder of the house plan {LAYERS}; move it into one")
    return LAYERS.index(top)


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs up the layers, as ``'a -> b'``."""
    return sorted(f"{m} -> {d}" for m, deps in graph.items() if m for d in deps if layer(d) < layer(m))


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
    assert {"cli", "runs.runconfig", "platform.config", "runs", "runs.explain", "runs.artifacts"} <= set(graph)  # read, not empty
    assert "platform.config" in graph["runs.runconfig"] and {"runs.runconfig", "runs.artifacts"} <= graph["runs.explain"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_every_module_sits_in_a_folder_and_imports_run_down_the_layers():
    graph = import_graph(PACKAGE)
    assert {m.split(".")[0] for m in graph if m} == set(LAYERS)  # every folder holds modules, none is unlisted
    assert "training.data" in graph["explanation.document"]  # a real downward edge is read
    assert wrong_way(graph) == []


def test_a_planted_wrong_way_import_fails_the_layout(tmp_path):
    """The checker on a copy of the package with one import planted up the layers: the
    causal check (explanation) reaching into the tuner, as ``faithfulness`` once did."""
    copy = tmp_path / "i2x"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "explanation" / "faithfulness.py"
    target.write_text(target.read_text() + "\n\ndef _planted():\n    from i2x.tuning.perturbation import PERTURBATIONS\n    return PERTURBATIONS\n")
    assert wrong_way(import_graph(copy)) == ["explanation.faithfulness -> tuning.perturbation"]
    assert find_cycle(import_graph(copy)) is None  # no cycle: only the folder order catches it
    assert wrong_way({"platform.tracking": {"runs.main"}, "runs.main": {"platform.tracking"}}) == ["platform.tracking -> runs.main"]


def test_only_the_cli_reaches_the_stage_runs():
    """The runs sit on top: no library module imports one (the CLI dispatches by name)."""
    graph = import_graph(PACKAGE)
    users = {m for m, deps in graph.items() if any(d.startswith("runs.") for d in deps)}
    assert users <= {"runs", "cli"} | {m for m in graph if m.startswith("runs.")}, users


def test_no_module_is_over_400_lines():
    """A module a new engineer can read in one sitting (issue 11); split by topic when one grows."""
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
