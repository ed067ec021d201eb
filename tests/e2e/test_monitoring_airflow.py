"""Real Airflow: a storm of drift decisions starts exactly one ``train_model`` run.

The lake holds 56 simulated days with the geography drift switched on for the last three, and
the mart is built, before Airflow starts. Airflow reads a temporary dags folder: the real
``monitor_drift.py`` and a stand-in ``train_model`` with the real DAG's params that only sleeps
(the dedup is under test, not training; a running stand-in exercises "no trigger while a
training runs").

Four full monitor runs decide ``retrain``: the scheduler's own run for yesterday, and manual
runs for the two days before, one of them twice (a rerun of the same interval as a new run).
Then the storm: the ``retrain`` task of every run is cleared and rerun twice, as an operator
would from the UI: twelve retrain decisions in all. Exactly one ``train_model`` run may exist.
"""

from __future__ import annotations

import datetime as dt
import shutil
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from pipelines.config import PROJECT_ROOT, load_settings
from pipelines.platform.airflow import AirflowServices
from tests.conftest import SMALL_WORLD, free_port

pytestmark = pytest.mark.airflow
HISTORY_DAYS = 56
DRIFT_DAYS = 3
STAND_IN_SECONDS = 20

STAND_IN = textwrap.dedent(
    f'''
    """Stand-in for train_model in the monitoring e2e test: the real params, no training."""
    import datetime as dt

    from airflow.sdk import Param, dag, task


    @dag(
        schedule=None,
        start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["test"],
        params={{
            "test_end": Param(None, type=["null", "string"], format="date"),
            "trials": Param(None, type=["null", "integer"], minimum=1),
            "timeout_seconds": Param(None, type=["null", "integer"], minimum=10),
            "reason": Param("manual", type="string"),
        }},
    )
    def train_model():
        @task(retries=0)
        def pretend_to_train(params=None) -> str:
            import time

            time.sleep({STAND_IN_SECONDS})
            return params["reason"]

        pretend_to_train()


    train_model()
    '''
)


class MonitoringAirflow(AirflowServices):
    """AirflowServices reading a test dags folder."""

    def __init__(self, settings, dags_folder) -> None:
        super().__init__(settings)
        self.dags_folder = dags_folder

    def env(self) -> dict[str, str]:
        env = super().env()
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(self.dags_folder)
        env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] = "5"
        # Paused until the lake is ready: Airflow starts while the test builds it.
        env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"
        return env


def _prepare_lake(settings) -> None:
    from pipelines.ingest.simulated import ingest_simulated_days
    from pipelines.transform.dbt import run_dbt_build

    start = settings.history_start_date
    ingest_simulated_days(start, start + dt.timedelta(days=HISTORY_DAYS - 1), settings)
    run_dbt_build(settings)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("monitoring-e2e")
        today = dt.date.today()
        env = {
            "FRAUD_HOME": str(home),
            "FRAUD_HISTORY_START": (today - dt.timedelta(days=HISTORY_DAYS)).isoformat(),
            "FRAUD_DRIFT_GEO_FROM": (today - dt.timedelta(days=DRIFT_DAYS)).isoformat(),
            # No champion in this world: the monitor's trigger is under test, not the bootstrap.
            "FRAUD_BOOTSTRAP_TRAINING": "false",
            "FRAUD_AIRFLOW_PORT": str(free_port()),
            "FRAUD_AIRFLOW_WORKER_LOG_PORT": str(free_port()),
            "FRAUD_AIRFLOW_TRIGGER_LOG_PORT": str(free_port()),
            **SMALL_WORLD,
        }
        for key, value in env.items():
            mp.setenv(key, value)
        settings = load_settings()
        dags = home / "dags"
        dags.mkdir()
        shutil.copy(PROJECT_ROOT / "dags" / "monitor_drift.py", dags / "monitor_drift.py")
        (dags / "train_model.py").write_text(STAND_IN)
        services = MonitoringAirflow(settings, dags)
        try:
            with ThreadPoolExecutor(1) as pool:
                starting = pool.submit(services.up, 240)
                _prepare_lake(settings)
                starting.result()
            yield services
        finally:
            services.down()


@pytest.fixture(scope="module")
def api(airflow) -> httpx.Client:
    with airflow.client() as client:
        yield client


def _runs(api: httpx.Client, dag_id: str) -> list[dict]:
    response = api.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100})
    response.raise_for_status()
    return response.json()["dag_runs"]


def _wait_for_dag(api: httpx.Client, dag_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.get(f"/dags/{dag_id}").status_code == 200:
            return
        time.sleep(2)
    raise AssertionError(f"{dag_id} was not parsed within {timeout}s")


def _wait_until_done(api: httpx.Client, expected: int, timeout: float = 300) -> list[dict]:
    """Monitor runs once ``expected`` exist and none is queued or running."""
    deadline = time.monotonic() + timeout
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = _runs(api, "monitor_drift")
        if len(runs) >= expected and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(2)
    raise AssertionError(f"monitor runs not done after {timeout}s: {runs}")


def _task_states(api: httpx.Client, run_id: str) -> dict[str, dict]:
    tis = api.get(f"/dags/monitor_drift/dagRuns/{run_id}/taskInstances").json()
    return {ti["task_id"]: ti for ti in tis["task_instances"]}


def _retrain_verdicts(api: httpx.Client, run_id: str, tries: int) -> list[str]:
    """What the retrain task logged about its decision, try by try."""
    verdicts = []
    for try_number in range(1, tries + 1):
        response = api.get(
            f"/dags/monitor_drift/dagRuns/{run_id}/taskInstances/retrain/logs/{try_number}"
        )
        if response.status_code != 200:
            continue
        for entry in response.json().get("content", []):
            event = entry.get("event", "") if isinstance(entry, dict) else str(entry)
            if event.startswith("retrain for"):
                verdicts.append(event)
    return verdicts


def test_a_storm_of_retrain_decisions_triggers_one_training(airflow, api):
    for dag_id in ("monitor_drift", "train_model"):
        _wait_for_dag(api, dag_id)
        assert api.patch(f"/dags/{dag_id}", json={"is_paused": False}).status_code == 200

    today = dt.date.today()
    for back in (3, 2, 2):  # day -2 twice: a rerun of the same interval, as a new run
        day = today - dt.timedelta(days=back)
        response = api.post(
            "/dags/monitor_drift/dagRuns",
            json={"logical_date": None, "conf": {"day": day.isoformat()}},
        )
        assert response.status_code == 200, response.text
    runs = _wait_until_done(api, expected=4)
    assert [r["state"] for r in runs] == ["success"] * 4, runs
    for run in runs:
        tasks = _task_states(api, run["dag_run_id"])
        assert tasks["continue"]["state"] == "skipped", tasks["continue"]
        assert tasks["warn"]["state"] == "skipped", tasks["warn"]
        assert tasks["retrain"]["state"] in ("success", "skipped")
    first_wave = [_task_states(api, r["dag_run_id"])["retrain"]["state"] for r in runs]
    assert first_wave.count("success") == 1, first_wave

    # The storm continues: retrain decisions rerun (cleared as from the UI) until ten in all.
    decisions = len(runs)
    for wave in (runs, runs[:2]):
        for run in wave:
            cleared = api.post(
                "/dags/monitor_drift/clearTaskInstances",
                json={
                    "dry_run": False,
                    "only_failed": False,
                    "task_ids": ["retrain"],
                    "dag_run_id": run["dag_run_id"],
                },
            )
            assert cleared.status_code == 200, cleared.text
            decisions += 1
        runs = _wait_until_done(api, expected=4)
        assert [r["state"] for r in runs] == ["success"] * 4, runs
    assert decisions == 10

    verdicts = []
    for run in runs:
        retrain_ti = _task_states(api, run["dag_run_id"])["retrain"]
        assert retrain_ti["state"] == "skipped" and retrain_ti["try_number"] >= 2, retrain_ti
        verdicts += _retrain_verdicts(api, run["dag_run_id"], retrain_ti["try_number"])
    print(f"\n{decisions} retrain decisions:\n  " + "\n  ".join(verdicts))
    assert sum("no training running" in v for v in verdicts) == 1

    training = _runs(api, "train_model")
    assert len(training) == 1, training
    conf = training[0]["conf"]
    assert conf["reason"].startswith("drift ")
    assert "customer_terminal_is_new" in conf["drifted_columns"]
    assert training[0]["dag_run_id"].startswith("drift_retrain__")

    # Each run left its row in the metrics table and its report where the README says.
    from pipelines.monitoring.metrics_table import read_metrics

    table = read_metrics(airflow.settings, latest_run_only=False)
    decisions = table[table["kind"] == "decision"]
    assert len(decisions) == 4 and set(decisions["action"]) == {"retrain"}
    reports = airflow.settings.data_dir / "monitoring" / "reports"
    assert len(list(reports.glob("date=*/transactions-latest.html"))) == 3
