"""Airflow's LocalExecutor, with the pipeline's libraries imported before its workers fork.

On Linux every Airflow task runs in a process forked from a LocalExecutor worker, itself forked
from the scheduler when the executor starts. A library the scheduler has imported is therefore
already in every task's memory; one it has not is imported again by every task. MLflow alone
(with the SQLAlchemy stores and Alembic migrations its SQLite client loads) costs a task about
10 s of CPU on a busy 2-core machine and 0.4 s once imported in the parent. Imported here once
per scheduler start, the libraries the tasks use cost a task nothing.

Only imports happen here: no client, session, thread or file is created before the fork.
"""

from __future__ import annotations

import importlib
import time

from airflow.executors.local_executor import LocalExecutor

# What the tasks in dags/ import (directly or through pipelines/ and serving/), heaviest first.
PRELOADED_MODULES = (
    "torch",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.pytorch",
    "feast",
    "dbt.cli.main",
    "pipelines.monitoring.whylogs_compat:import_whylogs",  # numpy 2 alias, no telemetry
    "optuna",
    "pandas",
    "pyarrow.parquet",
    "duckdb",
    "sklearn.metrics",
    "pyspark.sql",
)


def preload(modules: tuple[str, ...] = PRELOADED_MODULES) -> dict[str, str]:
    """Import ``modules`` into this process; returns the ones that failed, with the error.

    An entry ``module:function`` is imported by calling ``function`` of ``module`` (a library
    this project imports through its own helper). A module that cannot be imported is left to
    the task that needs it, which then reports the error in its own log.
    """
    failed = {}
    for name in modules:
        module, _, function = name.partition(":")
        try:
            imported = importlib.import_module(module)
            if function:
                getattr(imported, function)()
        except Exception as exc:  # any import error is the task's to report
            failed[name] = f"{type(exc).__name__}: {exc}"
    return failed


class PreloadedLocalExecutor(LocalExecutor):
    """``LocalExecutor`` whose workers, and so the tasks they fork, start with
    ``PRELOADED_MODULES`` imported."""

    def start(self) -> None:
        if self.is_mp_using_fork:  # spawned workers would import everything afresh anyway
            started = time.monotonic()
            failed = preload()
            self.log.info(
                "preloaded %d modules for the task processes in %.1f s",
                len(PRELOADED_MODULES) - len(failed),
                time.monotonic() - started,
            )
            for name, error in failed.items():
                self.log.warning("could not preload %s (%s)", name, error)
        super().start()
