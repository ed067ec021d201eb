"""The whole product under real Airflow, untouched by hand until the first served prediction.

A fresh home, a small world and a short history (protocol shrunk to 3/2/3 days so it fits):
Airflow's catchup ingests the history, the Asset chain builds the features, ``build_features``
starts the first ``train_model`` by itself, the promotion emits the model Asset, ``deploy_model``
builds and smoke-tests a Bento and switches the running ``bentoml serve`` — which then answers
with version 1. Nobody triggers anything.

Then the loop closes: a spending drift is switched on from today; today is ingested (as the UI's
Trigger with a ``day`` does), the monitor flags it and triggers ``train_model``; the retrain
(the full search, resuming the first model's study) passes the gate, ``deploy_model`` switches
the service, and the served response carries the new version; monitoring follows the new
champion. Every step is the real component: scheduler, dag-processor, triggerer, API server,
dbt, Spark, Feast, Optuna/PyTorch, MLflow, BentoML and whylogs.
"""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from pipelines.platform.scoring import ScoringService
from pipelines.training.bootstrap import BOOTSTRAP_RUN_ID
from tests.conftest import free_port
from tests.e2e.conftest import failure_report, running_airflow, wait_for_run

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

TODAY = dt.date.today()
# 3 train + 2 delay + 3 test days, the model-selection split before them, and the label delay.
HISTORY_DAYS = 16
ENV = {
    "FRAUD_TRAIN_DAYS": "3",
    "FRAUD_TEST_DAYS": "3",
    "FRAUD_LABEL_DELAY_DAYS": "2",
    # The first model is the quick one (1 trial, 1 epoch): the drift retrain must beat it.
    "FRAUD_BOOTSTRAP_TRIALS": "1",
    "FRAUD_BOOTSTRAP_MAX_EPOCHS": "1",
    "FRAUD_TUNING_TRIALS": "4",
    "FRAUD_MAX_EPOCHS": "8",
    "FRAUD_TORCH_THREADS": "1",
    # A few dozen test frauds in this world: the floor of the real-size default means nothing.
    "FRAUD_PROMOTION_FLOOR": "0.05",
    "FRAUD_MODEL_POLL_SECONDS": "5",
    "FRAUD_MONITOR_POKE_SECONDS": "15",
    # The drift the loop must catch: from today, half the customers spend three times more.
    "FRAUD_DRIFT_SPENDING_FROM": TODAY.isoformat(),
    "FRAUD_DRIFT_SPENDING_SHARE": "0.5",
    "FRAUD_DRIFT_SPENDING_FACTOR": "3",
}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    home = tmp_path_factory.mktemp("full-loop")
    env = {**ENV, "FRAUD_SERVING_PORT": str(free_port())}
    with running_airflow(home, HISTORY_DAYS, **env) as airflow:
        scoring = ScoringService(airflow.settings)
        scoring.up()  # as `make up` does: alive, not ready until a champion exists
        try:
            with airflow.client() as api:
                yield airflow, scoring, api
        finally:
            scoring.down()


def _wait_for(describe: str, probe, timeout: float, interval: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {describe}")


def _run(api: httpx.Client, dag_id: str, run_id: str) -> dict | None:
    response = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
    return response.json() if response.status_code == 200 else None


def _wait_for_success(api: httpx.Client, dag_id: str, run_id: str, timeout: float) -> dict:
    run = _wait_for(f"{dag_id} run {run_id}", lambda: _run(api, dag_id, run_id), timeout)
    run = wait_for_run(api, dag_id, run_id, timeout=timeout)
    assert run["state"] == "success", failure_report(api, dag_id, run_id)
    return run


def _runs_after(api: httpx.Client, dag_id: str, after: str | None) -> list[dict]:
    runs = api.get(f"/dags/{dag_id}/dagRuns", params={"order_by": "start_date"}).json()
    return [r for r in runs["dag_runs"] if after is None or (r["start_date"] or "") > after]


def _wait_for_next_success(api: httpx.Client, dag_id: str, after: str | None, timeout: float):
    """The first run of ``dag_id`` started after ``after`` that succeeded (none may fail)."""

    def probe() -> dict | None:
        runs = _runs_after(api, dag_id, after)
        failed = [r for r in runs if r["state"] == "failed"]
        assert not failed, "\n".join(failure_report(api, dag_id, r["dag_run_id"]) for r in failed)
        return next((r for r in runs if r["state"] == "success"), None)

    return _wait_for(f"a successful {dag_id} run after {after}", probe, timeout)


def _champion_version(settings) -> str | None:
    from pipelines.registry.gate import champion

    current = champion(settings)
    return str(current.version) if current is not None else None


def _served(scoring: ScoringService, settings) -> dict:
    from pipelines.demo import sample_transactions

    transaction = sample_transactions(settings, 1)[0]  # the newest transaction of the mart
    response = httpx.post(f"{scoring.url}/score", json={"transactions": [transaction]}, timeout=30)
    assert response.status_code == 200, response.text
    (score,) = response.json()
    return score


@pytest.mark.timeout(1800)
def test_a_fresh_system_trains_deploys_and_serves_its_first_model_by_itself(system):
    airflow, scoring, api = system
    started = time.monotonic()
    assert not scoring.ready()  # alive, but nothing to serve yet

    first = _wait_for_success(api, "train_model", BOOTSTRAP_RUN_ID, timeout=1200)
    assert first["run_type"] == "operator_triggered"  # by build_features, not by hand
    assert first["conf"]["reason"] == "bootstrap: first model"
    triggered = []
    for run in _runs_after(api, "build_features", None):
        tis = api.get(f"/dags/build_features/dagRuns/{run['dag_run_id']}/taskInstances").json()
        triggered += [
            ti
            for ti in tis["task_instances"]
            if ti["task_id"] == "train_first_model" and ti["state"] == "success"
        ]
    assert len(triggered) == 1  # one first model, however many feature builds ran
    version = _champion_version(airflow.settings)
    assert version is not None

    deployed = _wait_for_next_success(api, "deploy_model", None, timeout=600)
    assert deployed["run_type"] == "asset_triggered"
    _wait_for("the scoring API to be ready", scoring.ready, timeout=120, interval=2)
    score = _served(scoring, airflow.settings)
    assert score["model_version"] == version
    assert 0.0 <= score["fraud_probability"] <= 1.0
    print(f"\nfirst served prediction {time.monotonic() - started:.0f}s after Airflow was up")


@pytest.mark.timeout(1800)
def test_drift_retrains_and_the_service_moves_to_the_new_champion(system):
    from pipelines.monitoring.reference import load_champion
    from pipelines.monitoring.retrain import retrain_run_id

    airflow, scoring, api = system
    settings = airflow.settings
    before = _champion_version(settings)
    assert before is not None, "needs the first model (previous test)"
    last_deploy = _runs_after(api, "deploy_model", None)[-1]["start_date"]

    # Today is drifted; ingest it as the UI's Trigger dialog with a day would.
    created = api.post(
        "/dags/ingest_transactions/dagRuns",
        json={"logical_date": None, "conf": {"day": TODAY.isoformat()}},
    )
    assert created.status_code == 200, created.text
    ingest = wait_for_run(api, "ingest_transactions", created.json()["dag_run_id"])
    assert ingest["state"] == "success"
    # The Asset event fires when the ingest task ends, before the ingest run is marked done.
    _wait_for_next_success(api, "build_features", ingest["start_date"], timeout=600)

    created = api.post(
        "/dags/monitor_drift/dagRuns",
        json={"logical_date": None, "conf": {"day": TODAY.isoformat()}},
    )
    assert created.status_code == 200, created.text
    monitor = _wait_for_success(api, "monitor_drift", created.json()["dag_run_id"], timeout=600)
    tis = api.get(f"/dags/monitor_drift/dagRuns/{monitor['dag_run_id']}/taskInstances").json()[
        "task_instances"
    ]
    states = {ti["task_id"]: ti["state"] for ti in tis}
    assert states["retrain"] == "success", states  # the branch taken, and the trigger fired

    retrain = _wait_for_success(api, "train_model", retrain_run_id(TODAY), timeout=1200)
    assert retrain["conf"]["source"] == "monitor_drift"
    assert "tx_amount" in retrain["conf"]["drifted_columns"]
    after = _champion_version(settings)
    assert after is not None and int(after) > int(before), "the retrain did not pass the gate"

    _wait_for_next_success(api, "deploy_model", last_deploy, timeout=600)
    score = _served(scoring, settings)
    assert score["model_version"] == after
    champion = load_champion(settings)
    assert champion is not None and champion.version == after  # monitoring's new reference
