"""The shape of the house, measured: the apps' imports never loop, jobs sit above the services
they call, and no module or function grows past what a reader holds in their head.

The import graph is grimp's (the library behind import-linter): every import of the apps'
modules, those inside functions included, those under ``if TYPE_CHECKING:`` not (they never
run). A circle is a strongly connected part of that graph with more than one module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import grimp

BASE_DIR = Path(__file__).resolve().parent.parent
APPS = ("partners", "segments", "portal")

# Who may import a module of RQ jobs: the queueing layer above them (each app's
# ``queueing``), other job modules, RQ's cron configuration, and the entry points at the top
# (admin, views, management commands). Never a service, selector or model.
JOB_IMPORTERS = (".queueing", ".jobs", "portal.cron", ".admin", ".views", ".commands.")

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


@cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*APPS, exclude_type_checking_imports=True, cache_dir=None)


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import circles of ``graph``: Tarjan's strongly connected components, iterative (an
    app's depth would not trouble recursion, but the order must not depend on it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            step = next(imported, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.find_modules_directly_imported_by(step)))))
                elif step in on_stack:
                    low[module] = min(low[module], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                part = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    part.append(member)
                    if member == module:
                        break
                if len(part) > 1:
                    circles.append(sorted(part))
    return circles


def test_the_apps_imports_never_loop() -> None:
    assert _circles(_graph()) == []


def test_a_circle_would_be_found() -> None:
    """The check itself: a graph with a circle of three modules and one of two."""
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "e"), ("e", "d")]:
        graph.add_import(importer=importer, imported=imported)
    graph.add_import(importer="f", imported="a")
    assert sorted(_circles(graph)) == [["a", "b", "c"], ["d", "e"]]


def test_job_modules_are_imported_only_by_the_layers_above_them() -> None:
    graph = _graph()
    jobs = [m for m in graph.modules if m == "partners.jobs" or m.endswith(".jobs")]
    assert "partners.inbound.jobs" in jobs
    wrong = sorted(
        (importer, module)
        for module in jobs
        for importer in graph.find_modules_that_directly_import(module)
        if not any(part in importer or importer.endswith(part) for part in JOB_IMPORTERS)
    )
    assert wrong == []


def _app_sources() -> Iterator[Path]:
    for app in APPS:
        for path in sorted((BASE_DIR / app).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def test_no_module_of_the_apps_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(BASE_DIR)): lines
        for path in _app_sources()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_of_the_apps_is_over_80_lines() -> None:
    long = {}
    for path in _app_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = (node.end_lineno or node.lineno) - first + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(BASE_DIR)}:{node.name}"] = lines
    assert long == {}
