"""Real Airflow: scheduler, dag-processor, triggerer and API server on a temporary home.

Drives the system as a user does: logs in to the REST API (the UI's own API), triggers
``ingest_transactions`` with a param as the UI's Trigger dialog does, and watches the runs the
scheduler creates by itself from the catchup window.
"""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pyarrow.parquet as pq
import pytest

from pipelines.lake import part_path
from tests.e2e.conftest import failure_report, running_airflow, wait_for_run

pytestmark = pytest.mark.airflow
HISTORY_DAYS = 2


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    with running_airflow(tmp_path_factory.mktemp("airflow-e2e"), HISTORY_DAYS) as services:
        yield services


@pytest.fixture(scope="module")
def api(airflow) -> httpx.Client:
    with airflow.client() as client:
        yield client


def test_login_is_required(airflow):
    anonymous = httpx.get(f"{airflow.base_url}/api/v2/dags", timeout=10)
    assert anonymous.status_code in (401, 403)
    bad = httpx.post(
        f"{airflow.base_url}/auth/token",
        json={"username": airflow.login().username, "password": "wrong"},
        timeout=10,
    )
    assert bad.status_code in (401, 403)


def test_scheduler_backfills_the_history_window_by_itself(airflow, api):
    deadline = time.monotonic() + 240
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = api.get(
            "/dags/ingest_transactions/dagRuns", params={"run_type": "scheduled"}
        ).json()["dag_runs"]
        if len(runs) >= HISTORY_DAYS and all(r["state"] == "success" for r in runs):
            break
        assert not any(r["state"] == "failed" for r in runs), runs
        time.sleep(2)
    assert len(runs) >= HISTORY_DAYS and all(r["state"] == "success" for r in runs), runs
    settings = airflow.settings
    for run in runs:
        day = dt.datetime.fromisoformat(run["data_interval_start"]).date()
        path = part_path(settings.raw_transactions_dir, day, "simulated")
        assert pq.read_table(path).num_rows > 0


def test_trigger_with_a_day_param_as_the_ui_does(airflow, api):
    day = dt.date.today().isoformat()  # inside the simulated calendar, not yet scheduled
    assert api.patch("/dags/ingest_transactions", json={"is_paused": False}).status_code == 200
    created = api.post(
        "/dags/ingest_transactions/dagRuns",
        json={"logical_date": None, "conf": {"day": day}},
    )
    assert created.status_code == 200, created.text
    run = wait_for_run(api, "ingest_transactions", created.json()["dag_run_id"])
    assert run["state"] == "success"
    path = part_path(airflow.settings.raw_transactions_dir, dt.date.fromisoformat(day), "simulated")
    table = pq.read_table(path)
    assert table.num_rows > 0
    assert {d.date().isoformat() for d in table.column("tx_datetime").to_pylist()} == {day}
    # The task's return value is what the UI shows as its XCom.
    xcom = api.get(
        f"/dags/ingest_transactions/dagRuns/{run['dag_run_id']}/taskInstances/ingest_day"
        "/xcomEntries/return_value"
    ).json()
    assert xcom["value"]["transactions"] == table.num_rows


def test_invalid_param_is_refused_before_anything_runs(api):
    refused = api.post(
        "/dags/ingest_transactions/dagRuns",
        json={"logical_date": None, "conf": {"day": "not-a-date"}},
    )
    assert refused.status_code == 400, refused.text


def test_ingest_wakes_build_features_through_the_asset(airflow, api):
    """Nobody triggers build_features: the raw-lake Asset events of the ingest runs do."""
    deadline = time.monotonic() + 420
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = api.get("/dags/build_features/dagRuns").json()["dag_runs"]
        if any(r["state"] == "success" for r in runs):
            break
        failed = [r["dag_run_id"] for r in runs if r["state"] == "failed"]
        if failed:
            reports = [failure_report(api, "build_features", run_id) for run_id in failed]
            raise AssertionError("\n".join(reports))
        time.sleep(3)
    assert any(r["state"] == "success" for r in runs), runs
    assert all(r["run_type"] == "asset_triggered" for r in runs)
    events = api.get("/assets/events", params={"source_dag_id": "build_features"}).json()
    assert events["total_entries"] >= 1  # the features Asset was emitted
    features = airflow.settings.features_dir
    for table in ("customer_features", "terminal_features", "customer_terminal_features"):
        assert pq.read_table(features / table).num_rows > 0
    assert (airflow.settings.feast_dir / "online.db").exists()


def test_a_bad_batch_stops_build_features_before_spark(airflow, api):
    """A batch that fails dbt's tests fails the run at dbt_build; Spark never sees it."""
    import pyarrow as pa

    from pipelines.ingest import schema
    from pipelines.lake import write_parquet_atomic

    settings = airflow.settings
    customer_table = settings.features_dir / "customer_features"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in customer_table.rglob("*.parquet"))
    day = dt.date.today()
    bad = pa.Table.from_pylist(
        [
            {
                "transaction_id": 10**15,
                "tx_datetime": dt.datetime.combine(day, dt.time(12), dt.UTC),
                "customer_id": 1,
                "terminal_id": 1,
                "tx_amount": -50.0,
            }
        ],
        schema=schema.TRANSACTIONS,
    )
    bad_file = part_path(settings.raw_transactions_dir, day, "bad-batch")
    write_parquet_atomic(bad, bad_file)
    try:
        created = api.post("/dags/build_features/dagRuns", json={"logical_date": None})
        assert created.status_code == 200, created.text
        run = wait_for_run(api, "build_features", created.json()["dag_run_id"])
        assert run["state"] == "failed"
        tis = api.get(f"/dags/build_features/dagRuns/{run['dag_run_id']}/taskInstances").json()[
            "task_instances"
        ]
        states = {ti["task_id"]: ti["state"] for ti in tis}
        assert states["dbt_build"] == "failed"
        assert states["spark_features"] == "upstream_failed"
        assert states["materialize_online"] == "upstream_failed"
        after = sorted((p.name, p.stat().st_mtime_ns) for p in customer_table.rglob("*.parquet"))
        assert after == before  # nothing downstream changed
    finally:
        bad_file.unlink()


def test_down_stops_every_process_it_started(airflow):
    pids = [p.pid() for p in airflow.processes()]
    assert all(pids)
    stopped = airflow.down()
    assert len(stopped) == 4
    import psutil

    assert not any(psutil.pid_exists(pid) for pid in pids)
