"""The code depends one way, and no module leans on a function-local import to dodge a cycle.

Four layers, lowest first; a module imports only from its own layer or a lower one:

1. the core: tasks_app's vocabularies, models, lifecycle, pipeline and read helpers, and the
   Worker row (workers_app.models, which takes only the core's leaves);
2. the workers' machinery: the rest of workers_app (runtime, workspaces, agents, delivery);
3. the doors: the pages, the admin, the action table, the commands, and all of chatops_app;
4. GitHub: integrations_app.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("tasks_app", "workers_app", "chatops_app", "integrations_app", "vibe_project")
# What each app must never import.
FORBIDDEN = {
    "tasks_app": ("chatops_app", "integrations_app"),
    "workers_app": ("chatops_app", "integrations_app"),
    "chatops_app": ("integrations_app",),
}
# Modules of tasks_app and workers_app that are doors (layer 3), by name or prefix.
DOORS = (
    "tasks_app.actions",
    "tasks_app.admin",
    "tasks_app.board_forms",
    "tasks_app.dashboard",
    "tasks_app.first_login",
    "tasks_app.forms",
    "tasks_app.history_views",
    "tasks_app.management",
    "tasks_app.stages",
    "tasks_app.tables",
    "tasks_app.templatetags",
    "tasks_app.urls",
    "tasks_app.views",
    "workers_app.admin",
    "workers_app.management",
    "workers_app.tables",
    "workers_app.urls",
    "workers_app.views",
)


def layer(module: str) -> int:
    app = module.split(".")[0]
    if app == "integrations_app":
        return 4
    if app in ("chatops_app", "vibe_project") or any(
        module == door or module.startswith(door + ".") for door in DOORS
    ):
        return 3
    if app == "workers_app" and module != "workers_app.models":
        return 2
    return 1


def _modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(module: str, path: Path) -> set[str]:
    """Product modules this one imports when it is loaded (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)

    visit(tree.body)
    return {name for name in names if name in MODULES and name != module}


GRAPH = {module: _top_level_imports(module, path) for module, path in MODULES.items()}


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_an_app_imports_nothing_from_the_apps_above_it(app):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.split(".")[0] == app
        for target in targets
        if target.split(".")[0] in FORBIDDEN[app]
    )
    assert not wrong, wrong


def test_a_module_imports_only_from_its_own_layer_or_lower():
    upward = sorted(
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(module)
    )
    assert not upward, upward


def test_the_worker_row_takes_only_the_cores_leaves():
    from_core = {t for t in GRAPH["workers_app.models"] if t.startswith("tasks_app")}
    assert from_core <= {"tasks_app", "tasks_app.choices", "tasks_app.ages"}, from_core


@pytest.mark.parametrize("leaf", ["tasks_app.choices", "tasks_app.ages"])
def test_the_leaves_import_no_product_module(leaf):
    assert GRAPH[leaf] == set()


def test_no_import_cycles_between_product_modules():
    """A cycle would force a function-local import somewhere; find any with a depth-first walk."""
    done: set[str] = set()
    cycles = []

    def walk(module: str, trail: list[str]) -> None:
        if module in trail:
            cycles.append(" → ".join([*trail[trail.index(module) :], module]))
            return
        if module in done:
            return
        for target in sorted(GRAPH[module]):
            # Importing a package's submodule loads the package first: follow both.
            walk(target, [*trail, module])
        done.add(module)

    for module in sorted(GRAPH):
        walk(module, [])
    assert not cycles, cycles[:5]
