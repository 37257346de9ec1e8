"""The modules of snapflow_ros and snapflow_distill form a tree whose arrows all point down.

Layers, low to high: the core (snapflow_ros outside ros/ and cli/), the training package
snapflow_distill, the ROS layer snapflow_ros.ros, the command line snapflow_ros.cli. A module may
import its own layer or one below it, never one above; and no two modules may import each other,
directly or around a loop. Every import counts wherever it is written (inside a function, under
TYPE_CHECKING): a deferred import is a dependency all the same, only a later one.

The graph comes from the source (ast), not from importing it, so it needs no ROS, lerobot or GPU.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

from conftest import REPO, top_level_imports

PACKAGES = {"snapflow_ros": REPO / "snapflow_ros", "snapflow_distill": REPO / "distill"}

# (module prefix, layer), most specific first: a module's layer is that of its first match.
LAYERS = (("snapflow_ros.cli", 3), ("snapflow_ros.ros", 2), ("snapflow_distill", 1), ("snapflow_ros", 0))
LAYER_NAMES = {0: "core", 1: "snapflow_distill", 2: "snapflow_ros.ros", 3: "snapflow_ros.cli"}

# The modules that may import lerobot: the families that wrap LeRobot's policies, plus these.
LEROBOT_FAMILIES = "snapflow_ros.families.lerobot"
LEROBOT_IMPORTERS = {
    # Writes a LeRobot v3 dataset from bags (snapflow bag-to-lerobot), with LeRobot's own writer.
    "snapflow_ros.bags.to_lerobot",
    # Reads a local LeRobot v3 dataset as training data, with LeRobot's own reader.
    "snapflow_distill.lerobot_data",
}

Graph = dict[str, dict[str, int]]  # importer -> {imported module: line of its first import}


# --- the graph ------------------------------------------------------------------------------

def source_modules(packages: Mapping[str, Path]) -> dict[str, Path]:
    """Module name -> source file, for every .py file under each package directory."""
    modules = {}
    for package, directory in packages.items():
        for path in sorted(directory.rglob("*.py")):
            parts = [package, *path.relative_to(directory).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _base_of_relative(module: str, is_package: bool, level: int) -> str:
    """The package a `from .{level dots} import` in `module` starts from."""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    return ".".join(parts[:len(parts) - (level - 1)])


def imported_modules(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(module of the graph, line) for each import in `module`'s source, at any depth.
    `import a.b` counts a.b; `from a.b import c` counts a.b, and a.b.c when that is a module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = _base_of_relative(module, is_package, node.level)
                source = f"{base}.{source}" if source else base
            if source in known:
                yield source, node.lineno
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    yield f"{source}.{alias.name}", node.lineno


def import_graph(modules: Mapping[str, Path]) -> Graph:
    known = set(modules)
    graph: Graph = {module: {} for module in modules}
    for module, path in modules.items():
        for imported, line in imported_modules(module, path, known):
            if imported != module:  # a package's __init__ naming its own submodules
                graph[module].setdefault(imported, line)
    return graph


# --- the checks -----------------------------------------------------------------------------

def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components with more than one module (each sorted): the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.get(module, {}):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(components)


def shortest_cycle(graph: Graph, component: list[str]) -> list[str]:
    """A shortest loop through the component's first module, start repeated at the end."""
    start, members = component[0], set(component)
    came_from = {start: ""}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for imported in sorted(graph[module]):
                if imported == start:
                    path = [module]
                    while came_from[path[-1]]:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if imported in members and imported not in came_from:
                    came_from[imported] = module
                    following.append(imported)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def describe_cycle(graph: Graph, cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join([*steps, cycle[-1]])


def layer(module: str) -> int:
    return next(rank for prefix, rank in LAYERS if module == prefix or module.startswith(prefix + "."))


def upward_arrows(graph: Graph) -> list[str]:
    """Each import of a higher layer, as 'importer (line) -> imported: layer -> layer'."""
    return [f"{importer} (line {line}) -> {imported}: "
            f"{LAYER_NAMES[layer(importer)]} imports {LAYER_NAMES[layer(imported)]}"
            for importer, imports in sorted(graph.items()) for imported, line in sorted(imports.items())
            if layer(imported) > layer(importer)]


# --- the repository --------------------------------------------------------------------------

def _repository_graph() -> Graph:
    graph = import_graph(source_modules(PACKAGES))
    # A scan that found nothing would pass every check below.
    assert len(graph) > 50 and "snapflow_ros.sim.robot" in graph["snapflow_ros.sim.evaluation"], sorted(graph)
    return graph


def test_no_module_is_in_an_import_cycle():
    graph = _repository_graph()
    cycles = [describe_cycle(graph, shortest_cycle(graph, c)) for c in strongly_connected(graph)]
    assert not cycles, "import cycles (each module of the component reaches the others):\n" + "\n".join(cycles)


def test_no_arrow_points_up():
    upward = upward_arrows(_repository_graph())
    assert not upward, "imports of a higher layer (core < snapflow_distill < ros < cli):\n" + "\n".join(upward)


def test_only_the_lerobot_families_and_named_conversions_import_lerobot():
    modules = source_modules(PACKAGES)
    importers = {m for m, path in modules.items() if "lerobot" in top_level_imports(path)}
    assert importers, "no module imports lerobot at all: the scan is broken"
    assert LEROBOT_IMPORTERS <= set(modules), "an allowed importer no longer exists: drop it from the list"
    stray = sorted(m for m in importers - LEROBOT_IMPORTERS
                   if not (m == LEROBOT_FAMILIES or m.startswith(LEROBOT_FAMILIES + ".")))
    assert not stray, f"import lerobot outside {LEROBOT_FAMILIES} and {sorted(LEROBOT_IMPORTERS)}: {stray}"


# --- the checker on a package written for it --------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_a_cycle_and_an_upward_arrow(tmp_path):
    _write(tmp_path / "core", {
        "__init__.py": "",
        "sim/__init__.py": "",
        # robot -> tasks at the top, tasks -> robot inside a function, relatively: still a cycle.
        "sim/robot.py": "from snapflow_ros.sim.tasks import SimTask\n",
        "sim/tasks.py": "def load():\n    from . import robot\n",
        "sim/report.py": "import snapflow_ros.sim.tasks\n",
        # The core reaching up into the CLI (under TYPE_CHECKING: it counts).
        "bags/__init__.py": "",
        "bags/dataset.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                           "    from snapflow_ros.cli.sim import format_table\n",
        "cli/__init__.py": "",
        "cli/sim.py": "from snapflow_ros.sim import report\nimport snapflow_distill.data\n",
        "ros/__init__.py": "",
        "ros/node.py": "from ..sim.report import x\nfrom snapflow_distill import data\n",
        "ros/qos.py": "",
    })
    # Training reaching up into the ROS layer.
    _write(tmp_path / "training", {"__init__.py": "", "data.py": "from snapflow_ros.ros import qos\n"})
    graph = import_graph(source_modules({"snapflow_ros": tmp_path / "core", "snapflow_distill": tmp_path / "training"}))

    assert graph["snapflow_ros.cli.sim"] == {"snapflow_ros.sim": 1, "snapflow_ros.sim.report": 1,
                                             "snapflow_distill.data": 2}  # `from a.b import c`: a.b and a.b.c
    assert set(graph["snapflow_ros.ros.node"]) == {"snapflow_ros.sim.report", "snapflow_distill",
                                                   "snapflow_distill.data"}
    components = strongly_connected(graph)
    assert components == [["snapflow_ros.sim.robot", "snapflow_ros.sim.tasks"]]
    assert describe_cycle(graph, shortest_cycle(graph, components[0])) == (
        "snapflow_ros.sim.robot (line 1) -> snapflow_ros.sim.tasks (line 2) -> snapflow_ros.sim.robot")
    assert upward_arrows(graph) == [
        "snapflow_distill.data (line 1) -> snapflow_ros.ros: snapflow_distill imports snapflow_ros.ros",
        "snapflow_distill.data (line 1) -> snapflow_ros.ros.qos: snapflow_distill imports snapflow_ros.ros",
        "snapflow_ros.bags.dataset (line 3) -> snapflow_ros.cli.sim: core imports snapflow_ros.cli",
    ]


def test_the_checker_passes_a_tree():
    graph: Graph = {"snapflow_ros.cli.main": {"snapflow_ros.ros.node": 1, "snapflow_distill.trainer": 2},
                    "snapflow_ros.ros.node": {"snapflow_distill.trainer": 1, "snapflow_ros.sim.robot": 2},
                    "snapflow_distill.trainer": {"snapflow_ros.sim.robot": 1},
                    "snapflow_ros.sim.robot": {}}
    assert strongly_connected(graph) == [] and upward_arrows(graph) == []
