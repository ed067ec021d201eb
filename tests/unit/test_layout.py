"""The package layout: no import cycle between modules or between packages.

Every import counts, at module top or inside a function, under ``TYPE_CHECKING`` too: an
import inside a function hides a cycle from Python at import time, not from the reader. What
DAG files may import at parse time is tested in ``tests/test_dag_integrity.py``.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT

ROOTS = ("pipelines", "serving", "feature_repo")


def _modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in sorted((PROJECT_ROOT / root).rglob("*.py")):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> set[str]:
    """The project modules ``module`` imports (a name imported from a package counts as its
    submodule when there is one)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


GRAPH = {module: _imported(module, path) for module, path in MODULES.items()}


def package_of(module: str) -> str:
    """``pipelines.<sub>`` for a module of a subpackage, else the module itself (the root
    modules of ``pipelines``) or its top folder (``serving``, ``feature_repo``)."""
    parts = module.split(".")
    if parts[0] != "pipelines":
        return parts[0]
    is_package = MODULES[module].name == "__init__.py"
    return ".".join(parts[:2]) if len(parts) > 2 or (len(parts) == 2 and is_package) else module


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return list(error.args[1])
    return None


def test_the_graph_sees_the_project():
    assert "pipelines.registry.promotion" in GRAPH["pipelines.training.train"]
    assert "pipelines.features.job" in GRAPH["feature_repo.feature_views"]


def test_no_import_cycle_between_modules():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        mine = package_of(module)
        packages.setdefault(mine, set()).update(
            package_of(t) for t in targets if package_of(t) != mine
        )
    cycle = _cycle(packages)
    assert cycle is None, "package cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    "graph, expected",
    [({"a": {"b"}, "b": {"a"}}, {"a", "b"}), ({"a": {"b"}, "b": set()}, None)],
)
def test_the_cycle_check_finds_a_cycle(graph, expected):
    found = _cycle(graph)
    assert (set(found) if found else None) == expected


def _documented_rules() -> dict[str, set[str] | None]:
    """docs/architecture.md's table: package -> the packages it may import (None: any)."""
    rules: dict[str, set[str] | None] = {}
    for line in (PROJECT_ROOT / "docs" / "architecture.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        folder = cells[0].strip("`").rstrip("/").removesuffix(".py").replace("/", ".")
        may = cells[2]
        rules[folder] = (
            None
            if may == "any"
            else {
                name if name in {"serving", "feature_repo"} else f"pipelines.{name}"
                for name in (n.strip().strip("`") for n in may.split(","))
                if name and name != "—"
            }
        )
    return rules


def test_every_package_imports_only_what_docs_architecture_allows():
    rules = _documented_rules()
    packages = {package_of(m) for m in GRAPH}
    undocumented = packages - set(rules) - {"pipelines", "pipelines.__main__"}
    assert undocumented == set(), f"packages missing from docs/architecture.md: {undocumented}"
    broken = []
    for module, targets in GRAPH.items():
        allowed = rules.get(package_of(module))
        if allowed is None:
            continue
        for target in sorted(targets):
            if package_of(target) not in allowed | {package_of(module)}:
                broken.append(f"{module} imports {target}")
    assert broken == [], "imports docs/architecture.md does not allow:\n" + "\n".join(broken)


# Modules that import inside functions, and why. Everywhere else imports sit at module top.
LAZY_IMPORTS = {
    # DAG files import these at parse time (tests/test_dag_integrity.py: nothing heavy).
    "pipelines.config": "DAG parse time",
    "pipelines.orchestration": "DAG parse time",
    "pipelines.monitoring.retrain": "DAG parse time",
    "pipelines.monitoring.trigger": "DAG parse time",
    "pipelines.training.bootstrap": "DAG parse time",
    # A command imports what it runs: `--help` and the service entry points start fast.
    "pipelines.cli": "CLI startup",
    "pipelines.platform.cli": "CLI startup",
    "pipelines.training.cli": "CLI startup",
    "pipelines.monitoring.cli": "CLI startup",
    "pipelines.experiment.cli": "CLI startup",
    # BentoML's convention: the service's workers load torch, Feast and MLflow in __init__, so
    # `bentoml build` and the server's parent, which import the module, start fast.
    "serving.service": "bentoml build and the server's parent import it",
    # Shipped alone to a Spark cluster, and imported by Feast's views and serving for its
    # constants: PySpark only where the job runs.
    "pipelines.features.job": "PySpark on the cluster path only",
    # Feast serializes the on-demand transform with its body: its imports travel inside it.
    "feature_repo.transaction_features": "Feast serializes the transform",
    # The one place whylogs is imported from: its numpy shim runs first.
    "pipelines.monitoring.whylogs_compat": "whylogs' numpy shim first",
    # matplotlib's backend must be chosen before pyplot is imported.
    "pipelines.training.artifacts": "matplotlib backend first",
}


def _function_imports(path: Path) -> list[str]:
    """Imports inside functions, except whylogs' (always after whylogs_compat's shim) and
    optional ones inside ``try``."""
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        guarded = {
            id(node)
            for block in ast.walk(function)
            if isinstance(block, ast.Try)
            for node in ast.walk(block)
        }
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in guarded:
                text = ast.unparse(node)
                if "whylogs" not in text:
                    found.append(f"{function.name}: {text}")
    return found


def test_imports_sit_at_module_top_except_where_a_reason_is_listed():
    inside = {
        module: found
        for module, path in MODULES.items()
        if module not in LAZY_IMPORTS and (found := _function_imports(path))
    }
    assert inside == {}, f"imports inside functions outside LAZY_IMPORTS: {inside}"
