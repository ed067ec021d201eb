"""End-to-end fixtures: real Airflow on a temporary home and free ports, and the scoring API's
world and server (one of each for the serving modules), all stopped afterwards."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import httpx
import pytest

from pipelines.config import get_settings, load_settings
from pipelines.lake import utc_today
from pipelines.platform.airflow import AirflowServices
from pipelines.platform.runtime import initialise
from pipelines.platform.scoring import BentoProcess
from tests.conftest import SMALL_WORLD, free_port
from tests.e2e.serving_world import build_serving_world, serve
from tests.waiting import wait_for


@pytest.fixture(scope="package")
def serving_world(shared_world, tmp_path_factory) -> dict:
    """A copy of the shared world with version 1 of a small model as the champion."""
    return build_serving_world(shared_world, tmp_path_factory.mktemp("serving"))


@pytest.fixture
def serving_env(serving_world, monkeypatch) -> Iterator[None]:
    """The serving world's variables in os.environ for one test (in-process calls read them)."""
    for key, value in serving_world["env"].items():
        if key.startswith(("FRAUD_", "BENTOML_")):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="package")
def scoring_server(serving_world) -> Iterator[BentoProcess]:
    """One ``bentoml serve`` of the serving world for every test that can share it."""
    with serve(serving_world["env"]) as server:
        yield server


@contextlib.contextmanager
def running_airflow(home, history_days: int = 2, **env: str) -> Iterator[AirflowServices]:
    """Airflow (api-server, scheduler, dag-processor, triggerer) on ``home``, then down."""
    with pytest.MonkeyPatch.context() as mp:
        start = utc_today() - dt.timedelta(days=history_days)
        values = {
            "FRAUD_HOME": str(home),
            "FRAUD_HISTORY_START": start.isoformat(),
            "FRAUD_AIRFLOW_PORT": str(free_port()),
            "FRAUD_AIRFLOW_WORKER_LOG_PORT": str(free_port()),
            "FRAUD_AIRFLOW_TRIGGER_LOG_PORT": str(free_port()),
            **SMALL_WORLD,
            **env,
        }
        for key, value in values.items():
            mp.setenv(key, value)
        services = AirflowServices(initialise(load_settings()))  # as `make up` starts
        try:
            services.up(timeout=240)
            yield services
        finally:
            services.down()


def wait_for_run(api: httpx.Client, dag_id: str, run_id: str, timeout: float = 240) -> dict:
    """Poll a DAG run until it ends (success or failed)."""

    def finished() -> dict | None:
        run = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()
        return run if run["state"] in ("success", "failed") else None

    return wait_for(f"{dag_id} run {run_id} to end", finished, timeout, interval=2)
