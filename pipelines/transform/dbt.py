"""Run the dbt project in process: raw lake Parquet -> DuckDB warehouse -> Parquet marts.

``dbtRunner`` instead of a ``dbt`` subprocess: a later invocation in the same process costs
~0.3 s instead of a ~5 s CLI start. The marts' paths and readers are in ``mart`` (no dbt
import), for the light processes that need them.

The project reads its paths from ``FRAUD_WAREHOUSE_PATH`` and ``FRAUD_LAKE_DIR``; they are set
from the Settings object for the duration of the call, so the project runs the same from here,
from the dbt CLI or from Cosmos as long as those two variables are exported.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dbt.cli.main import dbtRunner

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.lake import copy_atomic
from pipelines.transform.mart import docs_dir, marts_path

log = logging.getLogger(__name__)

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
# DuckDB's COPY writes "tmp_<file>" beside the target, then renames it over the target.
_DUCKDB_TMP_PREFIX = "tmp_"
# dbtRunner is not thread-safe and the env vars below are process-wide: one build at a time.
_INVOKE_LOCK = threading.Lock()


class DbtBuildError(RuntimeError):
    """dbt build did not complete: a model or test failed, or dbt itself could not run."""

    def __init__(self, message: str, failures: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True)
class DbtBuildResult:
    models: int  # models built
    tests_passed: int
    tests_warned: int  # severity=warn tests that found rows (e.g. raw duplicates)
    skipped: int
    warnings: tuple[str, ...]  # names of the warning tests
    elapsed_seconds: float
    mart_path: Path  # directory of the fct_transactions export (what Spark reads)


def _state_dir(settings: Settings) -> Path:
    # target/ and logs/ beside the warehouse, not in the repo: the checkout may be read-only,
    # and two warehouses (tests, environments) must not share partial-parse state.
    return settings.warehouse_path.parent / f"{settings.warehouse_path.stem}_dbt"


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set env vars for the duration of the block, then restore the previous values."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _remove_stale_tmp_exports(settings: Settings) -> None:
    # A build killed mid-COPY leaves tmp_<mart>.parquet behind; a directory reader (Spark)
    # would read it as a second copy of the mart.
    if not settings.marts_dir.is_dir():
        return
    for stale in settings.marts_dir.glob(f"*/date=*/{_DUCKDB_TMP_PREFIX}*.parquet"):
        log.warning("removing stale export %s", stale)
        stale.unlink(missing_ok=True)


def _release_warehouse() -> None:
    """Close the DuckDB connection dbt-duckdb keeps in a class attribute after the invocation.

    dbt-duckdb 1.11.1 leaves it open when the build returns, so the file stays locked for every
    other process (dbt CLI, a notebook, the next task) until this one exits.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager as manager
    except ImportError:  # adapter not loaded: nothing to release
        return
    with manager._LOCK:
        env, manager._ENV = manager._ENV, None
    if env is not None:
        try:
            env.close()
        except Exception:  # a failed close must not hide the build's own outcome
            log.warning("could not close the DuckDB connection of dbt", exc_info=True)


def _dbt_args(settings: Settings, *command: str) -> list[str]:
    """Project, profile and state locations shared by every invocation (build, docs)."""
    state = _state_dir(settings)
    return [
        *command,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(state / "target"),
        "--log-path",
        str(state / "logs"),
        "--no-use-colors",
    ]


def _dbt_env(settings: Settings) -> dict[str, str]:
    return {
        "FRAUD_WAREHOUSE_PATH": str(settings.warehouse_path),
        "FRAUD_LAKE_DIR": str(settings.lake_dir),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    }


def run_dbt_build(
    settings: Settings,
    select: str | None = None,
    *,
    since: dt.date | None = None,
    full_refresh: bool = False,
) -> DbtBuildResult:
    """``dbt build`` (models and their tests, in DAG order); raises DbtBuildError on any failure.

    ``since``: rebuild the days from that one on (``--vars {since: ...}``): the models read
    those raw day partitions only and the export rewrites those days only. Without it every
    day is read again; ``full_refresh`` rebuilds the warehouse tables from scratch.
    A failing test stops its downstream models (dbt skips them), so a bad raw file never reaches
    the exported mart: the previous export stays in place.
    """
    if not any(settings.raw_transactions_dir.glob("date=*/*.parquet")):
        raise DbtBuildError(
            f"no raw transactions under {settings.raw_transactions_dir}: ingest at least one day "
            "before building the warehouse"
        )
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    state = _state_dir(settings)
    args = _dbt_args(settings, "build")
    if select:
        args += ["--select", select]
    if since is not None:
        args += ["--vars", json.dumps({"since": since.isoformat()})]
    if full_refresh:
        args.append("--full-refresh")
    started = time.monotonic()
    with _INVOKE_LOCK, _environment(_dbt_env(settings)):
        _remove_stale_tmp_exports(settings)
        try:
            outcome = dbtRunner().invoke(args)
        finally:
            _release_warehouse()
    elapsed = time.monotonic() - started

    results = list(getattr(outcome.result, "results", None) or [])
    failures: list[str] = []
    skipped: list[str] = []
    warnings: list[str] = []
    models = tests_passed = 0
    for res in results:
        node = res.node
        kind, name, status = str(node.resource_type), node.name, str(res.status)
        if status in ("error", "fail"):
            failures.append(f"{kind} {name} [{status}]: {(res.message or '').strip()}")
        elif status == "skipped":
            skipped.append(f"{kind} {name}")
        elif status == "warn":
            warnings.append(name)
        elif kind == "model" and status == "success":
            models += 1
        elif kind == "test" and status == "pass":
            tests_passed += 1

    if outcome.exception is not None or failures or not outcome.success:
        lines = [f"dbt build failed after {elapsed:.1f}s"]
        if outcome.exception is not None:
            lines.append(f"dbt could not run: {outcome.exception}")
        if failures:
            lines.append(f"{len(failures)} failing node(s):")
            lines += [f"  - {f}" for f in failures]
        if skipped:
            lines.append(f"skipped because of them: {', '.join(skipped)}")
        lines.append(f"details: {state / 'logs' / 'dbt.log'}")
        raise DbtBuildError("\n".join(lines), tuple(failures))

    if warnings:
        log.warning("dbt build passed with warnings: %s", ", ".join(warnings))
    log.info("dbt build: %d models, %d tests passed in %.1fs", models, tests_passed, elapsed)
    return DbtBuildResult(
        models=models,
        tests_passed=tests_passed,
        tests_warned=len(warnings),
        skipped=len(skipped),
        warnings=tuple(warnings),
        elapsed_seconds=elapsed,
        mart_path=marts_path(settings),
    )


# --- docs site -------------------------------------------------------------------------------
# What the dbt docs single-page app needs: the app itself and the two artifacts it fetches.
# index.html goes last, so the "no docs yet" placeholder is only replaced once both exist.
DOCS_FILES = ("manifest.json", "catalog.json", "index.html")


@dataclass(frozen=True)
class DbtDocsResult:
    path: Path  # the published site (docs_dir)
    nodes: int  # models, seeds and snapshots in the catalog
    sources: int
    elapsed_seconds: float


def generate_docs(settings: Settings) -> DbtDocsResult:
    """``dbt docs generate`` over the built warehouse, published to ``docs_dir(settings)``.

    Same project, profile, target and state folders as the build, so partial parsing makes it
    cheap right after one. The catalog (tables and column types) is read from the DuckDB file;
    the lineage graph comes from the manifest. Raises DbtBuildError when dbt fails.
    """
    if not settings.warehouse_path.exists():
        raise DbtBuildError(
            f"no warehouse at {settings.warehouse_path}: run the dbt build before the docs"
        )
    target = _state_dir(settings) / "target"
    started = time.monotonic()
    with _INVOKE_LOCK, _environment(_dbt_env(settings)):
        try:
            outcome = dbtRunner().invoke(_dbt_args(settings, "docs", "generate"))
        finally:
            _release_warehouse()
    elapsed = time.monotonic() - started
    catalog = outcome.result
    errors = list(getattr(catalog, "errors", None) or [])
    if outcome.exception is not None or not outcome.success or errors:
        detail = outcome.exception or "; ".join(map(str, errors)) or "unsuccessful"
        raise DbtBuildError(f"dbt docs generate failed after {elapsed:.1f}s: {detail}")

    site = docs_dir(settings)
    site.mkdir(parents=True, exist_ok=True)
    for name in DOCS_FILES:
        # Copy then rename: the docs server never hands out a half-written file.
        copy_atomic(target / name, site / name)
    result = DbtDocsResult(
        path=site,
        nodes=len(catalog.nodes),
        sources=len(catalog.sources),
        elapsed_seconds=elapsed,
    )
    log.info(
        "dbt docs: %d nodes, %d sources in %.1fs -> %s", result.nodes, result.sources, elapsed, site
    )
    return result
