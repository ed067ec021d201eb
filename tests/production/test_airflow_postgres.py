"""Airflow with its metadata on PostgreSQL and the LocalExecutor: two DAG runs in parallel.

The same ``AirflowServices`` as ``make up`` and the e2e suite, on a temporary home, free ports
and a fresh database; only ``FRAUD_AIRFLOW_DATABASE_URL`` differs from the embedded profile.
"""

from __future__ import annotations

import datetime as dt

import httpx
import psutil
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.lake import part_path, utc_today
from pipelines.platform.airflow import AirflowServices
from pipelines.platform.cli import AIRFLOW_HEALTH_KEY, services_app
from pipelines.platform.executor import PRELOADED_MODULES
from tests.conftest import free_port
from tests.production.conftest import pg_url, profile, query
from tests.waiting import wait_for

pytestmark = pytest.mark.airflow
TODAY = utc_today()
DAG = "ingest_transactions"


@pytest.fixture(scope="module")
def airflow_pg(tmp_path_factory, fresh_database):
    database = fresh_database("airflow")
    with profile(
        FRAUD_HOME=tmp_path_factory.mktemp("airflow-pg"),
        FRAUD_AIRFLOW_DATABASE_URL=pg_url(database),
        # History starts today: no catchup run competes with the two runs the test triggers.
        FRAUD_HISTORY_START=TODAY.isoformat(),
        FRAUD_SIM_START=(TODAY - dt.timedelta(days=30)).isoformat(),
        FRAUD_AIRFLOW_PORT=free_port(),
        FRAUD_AIRFLOW_WORKER_LOG_PORT=free_port(),
        FRAUD_AIRFLOW_TRIGGER_LOG_PORT=free_port(),
    ) as settings:
        services = AirflowServices(settings)
        try:
            services.up(timeout=300)
            yield services, database
        finally:
            services.down()


@pytest.fixture(scope="module")
def api(airflow_pg) -> httpx.Client:
    services, _ = airflow_pg
    with services.client() as client:
        # Parsed DAGs appear within the dag-processor's refresh interval.
        wait_for(
            "the DAGs to be parsed",
            lambda: all(
                client.get(f"/dags/{d}").status_code == 200 for d in (DAG, "build_features")
            ),
            timeout=120,
            interval=2,
        )
        # The raw-lake Asset would wake build_features (dbt + Spark): not what is tested here.
        for dag_id in ("build_features", "ingest_landing"):
            assert client.patch(f"/dags/{dag_id}", json={"is_paused": True}).status_code == 200
        yield client


def _wait_for_runs(api: httpx.Client, run_ids: list[str], timeout: float = 240) -> list[dict]:
    def finished() -> list[dict] | None:
        runs = [api.get(f"/dags/{DAG}/dagRuns/{r}").json() for r in run_ids]
        return runs if all(r["state"] in ("success", "failed") for r in runs) else None

    return wait_for(f"{DAG} runs {run_ids} to end", finished, timeout)


def test_metadata_lives_in_postgres_and_the_scheduler_uses_the_local_executor(airflow_pg, api):
    services, database = airflow_pg
    dags = {row[0] for row in query(database, "select dag_id from dag")}
    assert {DAG, "build_features", "ingest_landing"} <= dags
    running = query(
        database, "select count(*) from job where job_type = 'SchedulerJob' and state = 'running'"
    )
    assert running == [(1,)]
    scheduler = next(p for p in services.processes() if p.name == "airflow-scheduler")
    preloaded = "modules for the task processes"

    # The scheduler is healthy before its executor starts: the preload line comes up to ~30 s
    # after `up` returns on a busy machine.
    def log_with_preload() -> str | None:
        text = scheduler.log_file.read_text()
        return text if preloaded in text else None

    log = wait_for("the executor to report its preload", log_with_preload, timeout=180)
    assert "Loaded executor: ::pipelines.platform.executor.PreloadedLocalExecutor" in log, log
    # Every module imported in the scheduler before the workers forked: none left to the tasks.
    assert f"preloaded {len(PRELOADED_MODULES)} {preloaded}" in log, log

    # The executor's workers (one per slot), which fork the tasks, hold the libraries already.
    # They are forked just after the preload line is logged, so wait for them to appear.
    def warm_workers() -> list[psutil.Process] | None:
        children = psutil.Process(scheduler.pid()).children()
        warm = [c for c in children if _has_libtorch(c)]
        return warm if len(warm) >= services.settings.airflow_parallelism else None

    wait_for("the executor's workers to fork", warm_workers, timeout=60)


def _has_libtorch(process: psutil.Process) -> bool:
    try:
        return any("libtorch_cpu" in m.path for m in process.memory_maps())
    except psutil.NoSuchProcess:
        return False


def test_two_dag_runs_execute_in_parallel(airflow_pg, api):
    services, _ = airflow_pg
    days = [TODAY - dt.timedelta(days=2), TODAY - dt.timedelta(days=1)]
    run_ids = []
    for day in days:
        created = api.post(
            f"/dags/{DAG}/dagRuns",
            json={"logical_date": None, "conf": {"day": day.isoformat()}},
        )
        assert created.status_code == 200, created.text
        run_ids.append(created.json()["dag_run_id"])

    runs = _wait_for_runs(api, run_ids)
    assert [r["state"] for r in runs] == ["success", "success"], runs
    spans = []
    for run_id in run_ids:
        ti = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/ingest_day").json()
        spans.append(
            (dt.datetime.fromisoformat(ti["start_date"]), dt.datetime.fromisoformat(ti["end_date"]))
        )
    (start_a, end_a), (start_b, end_b) = spans
    # Overlapping intervals: each task started before the other one ended.
    assert start_a < end_b and start_b < end_a, spans
    for day in days:
        path = part_path(services.settings.raw_transactions_dir, day, "simulated")
        assert pq.read_table(path).num_rows > 0


@pytest.mark.parametrize("component", list(AIRFLOW_HEALTH_KEY))
def test_the_compose_healthcheck_passes_natively(airflow_pg, component):
    result = CliRunner().invoke(services_app, ["airflow-health", component])
    assert result.exit_code == 0, result.output


def test_down_stops_every_process(airflow_pg):
    services, database = airflow_pg
    pids = [p.pid() for p in services.processes()]
    assert all(pids)
    assert len(services.down()) == 4
    assert not any(psutil.pid_exists(pid) for pid in pids)
    # The database is still there (dropped at the end of the session), the server is not.
    assert query(database, "select count(*) from dag_run")[0][0] >= 2
