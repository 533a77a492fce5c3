"""The import graph points one way (docs/architecture.md "Layers"): every module's imports, lazy ones
inside functions included, go to its own layer or a lower one, never up and never in a cycle.

    apps        cli, up, serve, client, status, stack, demo, live_replay, replay_commands
    simulator   sim (uses the services' pure rules; no service imports it)
    services    collector, forecaster, scheduler, router, actuator
    shared      runtime, policy, placement, traces, kube (import no service)
    physics     emulator
    base        ebbflow itself, v1 (generated protos)

Services do not import each other, except a service's pure rule another one applies (ALLOWED below).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import ebbflow

PACKAGE = Path(ebbflow.__file__).parent

LAYERS: dict[str, int] = {
    "ebbflow": 0,
    "ebbflow.v1": 0,
    "ebbflow.keda": 0,
    "ebbflow.emulator": 1,
    "ebbflow.runtime": 2,
    "ebbflow.policy": 2,
    "ebbflow.placement": 2,
    "ebbflow.traces": 2,
    "ebbflow.kube": 2,
    "ebbflow.collector": 3,
    "ebbflow.forecaster": 3,
    "ebbflow.scheduler": 3,
    "ebbflow.router": 3,
    "ebbflow.actuator": 3,
    "ebbflow.sim": 4,
    "ebbflow.live_replay": 5,
    "ebbflow.status": 5,
    "ebbflow.stack": 5,
    "ebbflow.serve": 5,
    "ebbflow.up": 5,
    "ebbflow.monitoring": 5,
    "ebbflow.client": 5,
    "ebbflow.demo": 5,
    "ebbflow.replay_commands": 5,
    "ebbflow.cli": 5,
}
SERVICES = {name for name, layer in LAYERS.items() if layer == 3}

ALLOWED: set[tuple[str, str]] = set()
"""(importer, imported) unit pairs allowed across services."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The top-level unit a module belongs to: ebbflow.scheduler.core -> ebbflow.scheduler."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, (ast.Name, ast.Attribute)) and ast.unparse(node.test).endswith("TYPE_CHECKING")


def imports() -> dict[str, set[str]]:
    """Every ebbflow module and the ebbflow modules it imports (at any depth, lazily or not)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        if "v1" in path.relative_to(PACKAGE).parts[:1]:
            continue
        module = module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        graph[module]
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue  # `if TYPE_CHECKING:` imports are for annotations; they never run
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[module].update(t for t in targets if t == "ebbflow" or t.startswith("ebbflow."))
    return graph


def unit_edges() -> dict[str, set[str]]:
    """Imports between units, one edge per (importer unit, imported unit), with the modules that make it."""
    graph = imports()
    modules = set(graph)
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for target in targets:
            # `from ebbflow.x import y` names y; it is a module when one by that name exists.
            if target not in modules and target.rpartition(".")[0] in modules | {"ebbflow"}:
                target = target if target in modules else target.rpartition(".")[0]
            if unit_of(module) != unit_of(target) and target != "ebbflow":
                edges[unit_of(module)].add(unit_of(target))
    return edges


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(m) for m in imports()}
    assert units - set(LAYERS) == set(), "a new package or top-level module: give it a layer in LAYERS and docs/architecture.md"


def test_imports_point_down_or_sideways_within_a_layer_never_up() -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in unit_edges().items() for b in targets if LAYERS.get(b, 0) > LAYERS.get(a, 0))
    assert upward == []


def test_services_do_not_import_each_other() -> None:
    across = sorted(
        f"{a} -> {b}"
        for a, targets in unit_edges().items()
        for b in targets
        if a in SERVICES and b in SERVICES and (a, b) not in ALLOWED
    )
    assert across == []


def module_edges() -> dict[str, set[str]]:
    """Imports between modules (a name imported from a module counts as that module)."""
    graph = imports()
    modules = set(graph)
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for target in targets:
            target = target if target in modules else target.rpartition(".")[0]
            if target in modules and target != module and not module.startswith(target + "."):
                edges[module].add(target)
    return edges


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycles() -> None:
    edges = module_edges()
    reach = {module: reachable(edges, module) for module in edges}
    cycles = sorted({tuple(sorted(m for m in reach if module in reach[m] and m in reach[module])) for module in reach if module in reach[module]})
    assert cycles == [], "modules that import each other, directly or through others"
