"""The apps depend one way, and no module leans on a function-local import to dodge a cycle.

The order, lowest first: tasks_app's core (choices, models, lifecycle) ← workers_app ← chatops_app
← integrations_app; vibe_project's operations page reads them all. A module may import from its
own layer or a lower one; workers_app.models may take only the core's leaves (choices, ages).
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
