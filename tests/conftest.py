"""Shared fixtures: every test gets its own runtime home, so nothing touches ./var."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.config import Settings, get_settings, load_settings
from pipelines.platform.process import free_port as free_port
from tests.worlds import build_world

# Small worlds keep the suite fast; the handbook-size check sets its own sizes.
SMALL_WORLD = {"FRAUD_N_CUSTOMERS": "300", "FRAUD_N_TERMINALS": "600"}


@pytest.fixture
def make_settings(tmp_path, monkeypatch) -> Callable[..., Settings]:
    """Settings on a temporary home; keyword arguments become FRAUD_* environment variables."""

    def factory(**overrides: object) -> Settings:
        env = {"FRAUD_HOME": str(tmp_path / "home"), "FRAUD_HISTORY_START": "2018-04-01"}
        env |= SMALL_WORLD
        env |= {f"FRAUD_{k.upper()}": str(v) for k, v in overrides.items()}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return load_settings()

    yield factory
    get_settings.cache_clear()


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def shared_world(tmp_path_factory) -> Path:
    """The home of the suite's shared world (``tests/worlds.py``), built once per session.
    Read it in place; a module that writes takes a ``world_copy``."""
    return build_world(tmp_path_factory.mktemp("world"))


_DESCRIBE_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get(sys.argv[2])
print(json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "max_active_runs": dag.max_active_runs if dag else None,
    "catchup": dag.catchup if dag else None,
    "schedule": type(dag.timetable).__name__ if dag else None,
    "params": {k: dag.params[k] for k in dag.params.keys()} if dag else {},
    "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} if dag else {},
    "outlets": {
        t.task_id: [getattr(o, "name", str(o)) for o in t.outlets] for t in dag.tasks
    } if dag else {},
}))
"""


def describe_dag(home, dag_file: str, dag_id: str) -> dict:
    """What Airflow's DagBag parses from ``dags/<dag_file>``, in a subprocess with Airflow's
    environment on ``home``: import errors, schedule, params (defaults), tasks, outlets."""
    import json
    import subprocess
    import sys

    from pipelines.config import PROJECT_ROOT
    from pipelines.platform.airflow import AirflowServices

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_HOME", str(home))
        mp.setenv("FRAUD_HISTORY_START", "2018-04-01")
        env = AirflowServices(load_settings()).env()
    out = subprocess.run(
        [sys.executable, "-c", _DESCRIBE_DAG, str(PROJECT_ROOT / "dags" / dag_file), dag_id],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
