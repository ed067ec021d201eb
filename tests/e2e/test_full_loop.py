"""The whole product under real Airflow, untouched by hand until the first served prediction.

A fresh home, a small world and a short history (protocol shrunk to 3/2/3 days so it fits):
Airflow's catchup ingests the history, the Asset chain builds the features, ``build_features``
starts the first ``train_model`` by itself, the promotion emits the model Asset, ``deploy_model``
builds and smoke-tests the Bento of version 1 and rolls the running scoring API onto it —
which answers with version 1. Nobody triggers anything.

Then the loop closes: a spending drift is switched on from today, the first live day; the
payment network replays today's payments through ``/score``; today is ingested (as the UI's
Trigger with a ``day`` does) from what the API scored, the monitor profiles exactly that traffic,
flags it and triggers ``train_model``; the retrain
(the full search, resuming the first model's study) passes the gate, ``deploy_model`` switches
the service, and the served response carries the new version; monitoring follows the new
champion. Every step is the real component: scheduler, dag-processor, triggerer, API server,
dbt, Spark, Feast, Optuna/PyTorch, MLflow, BentoML and whylogs.

The same running Airflow then answers for itself as a user meets it: the catchup and the Asset
chain that just ran are checked in the metadata; a batch failing dbt's tests stops
``build_features`` before Spark; login is required; a trigger with a ``day`` param through the
REST API and through the Trigger dialog in a real browser (headless Debian Chromium driven by
Playwright, screenshots in ``test-artifacts/airflow-ui/``) ingests that day; a bad param is
refused; ``down`` leaves no process behind. (One Airflow for all of it: starting one costs a
minute of the suite on 2 cores.)
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from pipelines.config import PROJECT_ROOT
from pipelines.lake import part_path, partition_dir, utc_today
from pipelines.platform.airflow import failure_report
from pipelines.platform.scoring import ScoringService
from pipelines.training.bootstrap import BOOTSTRAP_RUN_ID
from tests.conftest import free_port
from tests.e2e.conftest import running_airflow, wait_for_run
from tests.waiting import wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

TODAY = utc_today()
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "airflow-ui"
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
    # The service follows a challenger alias once one exists (the experiment test sets it).
    "FRAUD_EXPERIMENT_MODE": "shadow",
    "FRAUD_MONITOR_POKE_SECONDS": "15",
    # The drift retrain is scheduled for when its window holds drifted days (not the default).
    "FRAUD_RETRAIN_POLICY": "label-aware",
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
        try:
            scoring.up()  # as `make up` does: alive, not ready until a champion exists
            with airflow.client() as api:
                yield airflow, scoring, api
        finally:
            scoring.down()


needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (`make browser` installs it)",
)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def _run(api: httpx.Client, dag_id: str, run_id: str) -> dict | None:
    response = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")
    return response.json() if response.status_code == 200 else None


def _wait_for_success(api: httpx.Client, dag_id: str, run_id: str, timeout: float) -> dict:
    run = wait_for(f"{dag_id} run {run_id}", lambda: _run(api, dag_id, run_id), timeout)
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

    return wait_for(f"a successful {dag_id} run after {after}", probe, timeout)


def _champion_version(settings) -> str | None:
    from pipelines.registry.versions import champion

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
    wait_for("the scoring API to be ready", scoring.ready, timeout=120, interval=2)
    score = _served(scoring, airflow.settings)
    assert score["model_version"] == version
    assert 0.0 <= score["fraud_probability"] <= 1.0
    print(f"\nfirst served prediction {time.monotonic() - started:.0f}s after Airflow was up")


def _monitor(api: httpx.Client, day: dt.date) -> dict:
    """A manual monitor_drift run for ``day`` (as the UI's Trigger with a ``day``), finished."""
    created = api.post(
        "/dags/monitor_drift/dagRuns",
        json={"logical_date": None, "conf": {"day": day.isoformat()}},
    )
    assert created.status_code == 200, created.text
    return _wait_for_success(api, "monitor_drift", created.json()["dag_run_id"], timeout=600)


def _task(api: httpx.Client, dag_id: str, run_id: str, task_id: str) -> dict:
    response = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
    response.raise_for_status()
    return response.json()


def _rerun_retrain_decisions(api: httpx.Client, runs: list[dict]) -> None:
    """Clear the ``retrain`` task of each monitor run (as an operator would from the UI) and
    wait until each has decided again."""
    tries = {}
    for run in runs:
        tries[run["dag_run_id"]] = _task(api, "monitor_drift", run["dag_run_id"], "retrain")[
            "try_number"
        ]
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

    def decided_again() -> bool:
        for run_id, before in tries.items():
            ti = _task(api, "monitor_drift", run_id, "retrain")
            if ti["try_number"] <= before or ti["state"] not in ("success", "skipped", "failed"):
                return False
        return True

    wait_for("the cleared retrain decisions", decided_again, timeout=300, interval=2)


def _retrain_verdicts(api: httpx.Client, run_id: str) -> list[str]:
    """What the retrain task of a monitor run logged about its decision, try by try."""
    verdicts = []
    for try_number in range(1, _task(api, "monitor_drift", run_id, "retrain")["try_number"] + 1):
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


def _restart_scheduler(airflow) -> None:
    """Stop the scheduler as a crash or an upgrade would, and start it again."""
    (scheduler,) = [p for p in airflow.processes() if p.name == "airflow-scheduler"]
    assert scheduler.stop()
    scheduler.start(airflow.env(), cwd=PROJECT_ROOT)
    wait_for("Airflow healthy after the scheduler restart", airflow.healthy, 180, interval=2)


def _let_the_scheduled_day_come(airflow, run_id: str) -> None:
    """Days cannot pass in a test: the scheduled run's ``run_after`` and its logical date (the
    start day's midnight; Airflow runs no task of a future logical date) are moved back to when
    it was queued, in the metadata DB, as the calendar would have moved them."""
    import sqlite3

    with sqlite3.connect(airflow.sqlite_path, timeout=30) as db:
        moved = db.execute(
            "update dag_run set run_after = queued_at, logical_date = queued_at"
            " where dag_id = 'train_model' and run_id = ?",
            (run_id,),
        ).rowcount
    assert moved == 1


@pytest.mark.timeout(1800)
def test_drift_schedules_one_retrain_and_the_service_moves_to_the_new_champion(system):
    """Today drifts. Under the ``label-aware`` policy the monitor's ``retrain`` is a
    ``train_model`` run scheduled for the day its training window holds drifted days with their
    labels: queued with that ``run_after`` and a note, not started. The monitor decides
    ``retrain`` again six times — a rerun of the same day as a new run, each run's ``retrain``
    task cleared twice (while the retrain is scheduled, and after it trained) — and the
    scheduler is restarted: still the one scheduled run. When its day comes it trains, tagged
    with the drift it answers; it passes the gate (better than the first model beyond the
    bootstrap interval) and the service answers with the new version."""
    from pipelines import contracts
    from pipelines.monitoring import retrain
    from pipelines.monitoring.metrics_table import read_metrics
    from pipelines.monitoring.profiles import read_day
    from pipelines.monitoring.reference import load_champion
    from pipelines.monitoring.retrain import retrain_run_id
    from pipelines.registry.versions import champion as registered_champion
    from pipelines.traffic import day_payments, replay_day, scored_ids

    airflow, scoring, api = system
    settings = airflow.settings
    before = _champion_version(settings)
    assert before is not None, "needs the first model (previous test)"
    last_deploy = _runs_after(api, "deploy_model", None)[-1]["start_date"]

    # Today is the first live day, and drifted: the payment network sends today's payments to
    # /score, and what the API scored is what today's ingest writes to the lake.
    assert settings.is_live(TODAY)
    replayed = replay_day(settings, TODAY, speed=0)
    assert replayed.errors == 0 and replayed.scored == replayed.due > 0, replayed.summary()
    sent = set(day_payments(settings, TODAY).transaction_id)
    wait_for(
        "today's traffic in the prediction log", lambda: scored_ids(settings, TODAY) >= sent, 30
    )

    # Ingest today as the UI's Trigger dialog with a day would.
    created = api.post(
        "/dags/ingest_transactions/dagRuns",
        json={"logical_date": None, "conf": {"day": TODAY.isoformat()}},
    )
    assert created.status_code == 200, created.text
    ingest = wait_for_run(api, "ingest_transactions", created.json()["dag_run_id"])
    assert ingest["state"] == "success"
    # The Asset event fires when the ingest task ends, before the ingest run is marked done.
    _wait_for_next_success(api, "build_features", ingest["start_date"], timeout=600)

    folder = partition_dir(settings.raw_transactions_dir, TODAY)
    assert [p.name for p in folder.iterdir()] == ["part-scored.parquet"]
    assert set(pq.read_table(folder).column("transaction_id").to_pylist()) == sent

    first = _monitor(api, TODAY)
    assert _task(api, "monitor_drift", first["dag_run_id"], "retrain")["state"] == "success"
    scheduled = _run(api, "train_model", retrain_run_id(TODAY))
    horizon = retrain.schedule_horizon_days(
        delay_days=settings.label_delay_days,
        test_days=settings.test_days,
        drifted_days=settings.retrain_drifted_days,
    )
    run_after = dt.datetime.fromisoformat(scheduled["run_after"])
    assert scheduled["state"] == "queued" and scheduled["start_date"] is None, scheduled
    queued = dt.datetime.fromisoformat(scheduled["queued_at"])
    assert abs(run_after - queued - dt.timedelta(days=horizon)) < dt.timedelta(minutes=10)
    assert scheduled["note"].startswith("scheduled retrain: input drift"), scheduled["note"]
    assert scheduled["conf"]["plan"]["run_after"] is not None
    # What monitoring profiled of today is the replayed traffic: the lake's day as the mart
    # holds it, and the prediction log of the same payments.
    for kind in ("transactions", "predictions"):
        counts = read_day(settings, kind, TODAY).get_column("tx_amount").get_metric("counts")
        assert counts.n.value == len(sent), kind
    rerun = _monitor(api, TODAY)  # the same interval again, as a new run: no second training
    decisions = [first, rerun]
    for run in decisions:
        for branch in ("continue", "warn"):
            assert _task(api, "monitor_drift", run["dag_run_id"], branch)["state"] == "skipped"
    assert _task(api, "monitor_drift", rerun["dag_run_id"], "retrain")["state"] == "skipped"
    _rerun_retrain_decisions(api, decisions)  # while the retrain is scheduled
    _restart_scheduler(airflow)
    time.sleep(10)  # a few scheduling loops of the new scheduler
    after_restart = _run(api, "train_model", retrain_run_id(TODAY))
    assert after_restart["state"] == "queued" and after_restart["start_date"] is None
    assert after_restart["run_after"] == scheduled["run_after"]

    _let_the_scheduled_day_come(airflow, retrain_run_id(TODAY))
    retrain = _wait_for_success(api, "train_model", retrain_run_id(TODAY), timeout=1200)
    assert retrain["conf"]["source"] == "monitor_drift"
    assert retrain["conf"]["reason"].startswith("drift ")
    assert "tx_amount" in retrain["conf"]["drifted_columns"]
    after = _champion_version(settings)
    assert after is not None and int(after) > int(before), "the retrain did not pass the gate"
    tags = registered_champion(settings).tags
    # Its window ends before today's drift: it answers the drift but learned nothing of it, so
    # it had to be better beyond noise than the 1-epoch first model (no pass by chance).
    assert tags[contracts.DRIFT_ALERT_DAY_TAG] == TODAY.isoformat()
    assert "tx_amount" in tags[contracts.DRIFT_COLUMNS_TAG].split(",")
    assert tags[contracts.WINDOW_CONTAINS_DRIFT_TAG] == "false"
    assert tags["gate_rule"] == "superiority" and tags["gate_champion_version"] == before
    low, high = (float(x) for x in tags["gate_interval"].strip("[]").split(","))
    assert 0 < low <= high, tags["gate_reason"]
    print(f"\ngate: {tags['gate_reason']}")

    _rerun_retrain_decisions(api, decisions)  # after the training: the cooldown holds
    verdicts = [v for run in decisions for v in _retrain_verdicts(api, run["dag_run_id"])]
    print("\nretrain decisions:\n  " + "\n  ".join(verdicts))
    assert len(verdicts) == 6
    # Scheduled once; while it was pending, "already scheduled"; after it trained, the same
    # interval asks for the same run id again, and Airflow skips an existing run id.
    assert verdicts[0].endswith(f"scheduling one for {scheduled['conf']['plan']['on']}")
    assert sum("already scheduled or queued" in v for v in verdicts) == 3, verdicts
    trainings = [
        r for r in _runs_after(api, "train_model", None) if r["dag_run_id"] != BOOTSTRAP_RUN_ID
    ]
    assert [r["dag_run_id"] for r in trainings] == [retrain_run_id(TODAY)], trainings
    for run in decisions:
        assert _task(api, "monitor_drift", run["dag_run_id"], "retrain")["state"] == "skipped"
    # Each monitor run left its decision in the metrics table and today's report.
    table = read_metrics(settings, TODAY, TODAY, latest_run_only=False)
    today = table[table["kind"] == "decision"]
    assert len(today) == 2 and set(today["action"]) == {"retrain"}, today
    reports = settings.data_dir / "monitoring" / "reports" / f"date={TODAY}"
    assert (reports / "transactions-latest.html").exists()

    _wait_for_next_success(api, "deploy_model", last_deploy, timeout=600)
    score = _served(scoring, settings)
    assert score["model_version"] == after
    champion = load_champion(settings)
    assert champion is not None and champion.version == after  # monitoring's new reference


@pytest.mark.timeout(900)
def test_the_experiment_analysis_reads_the_replayed_traffic(system):
    """The previous champion comes back as a shadow challenger; the payment network's traffic
    of today, sent again, is scored by both models, and ``analyze_experiment``, triggered as
    the UI's Trigger with a ``day`` does, compares them on exactly that traffic: every replayed
    payment in both arms, none labelled yet (today's chargebacks arrive after the label
    delay), hence ``iterate``."""
    import json

    import mlflow

    from pipelines.contracts import CHALLENGER_ALIAS, PREVIOUS_CHAMPION_ALIAS
    from pipelines.experiment.analysis import labelled_log
    from pipelines.traffic import day_payments, replay_day

    airflow, scoring, api = system
    settings = airflow.settings
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    previous = client.get_model_version_by_alias(
        settings.model_name, PREVIOUS_CHAMPION_ALIAS
    ).version
    client.set_registered_model_alias(settings.model_name, CHALLENGER_ALIAS, previous)
    try:

        def challenger_loaded() -> bool:
            info = httpx.post(f"{scoring.url}/reload", json={}, timeout=30).json()
            return info.get("challenger_version") == str(previous)

        wait_for("the shadow challenger in the service", challenger_loaded, 60)
        # Today's payments once more (the network retrying them: same ids, same features).
        replayed = replay_day(settings, TODAY, speed=0, skip=set())
        assert replayed.errors == 0 and replayed.scored == replayed.due > 0, replayed.summary()
        sent = set(day_payments(settings, TODAY).transaction_id)

        def shadowed() -> bool:
            log = labelled_log(settings, TODAY, TODAY)
            rows = log[log["shadow_model_version"].astype("string") == str(previous)]
            return set(rows["transaction_id"]) >= sent

        wait_for("the shadow scores in the prediction log", shadowed, 30)

        created = api.post(
            "/dags/analyze_experiment/dagRuns",
            json={
                "logical_date": None,
                "conf": {"day": TODAY.isoformat(), "window_days": 1, "apply": False},
            },
        )
        assert created.status_code == 200, created.text
        run_id = created.json()["dag_run_id"]
        _wait_for_success(api, "analyze_experiment", run_id, timeout=600)
        verdict = api.get(
            f"/dags/analyze_experiment/dagRuns/{run_id}/taskInstances/analyze"
            "/xcomEntries/return_value"
        ).json()["value"]
        assert verdict["challenger_version"] == str(previous)
        record = json.loads(Path(verdict["record"]).read_text())
        assert record["mode"] == "shadow"
        assert set(record["arms"]) == {"control", "treatment"}
        for arm in record["arms"].values():
            assert arm["rows"] == len(sent) and arm["labelled"] == 0, arm
        # Nothing ships on no labels; a latency guardrail may kill (shared 2-core machine).
        assert verdict["decision"] != "ship", verdict
        if all(g["passed"] for g in record["guardrails"]):
            assert verdict["decision"] == "iterate", verdict
            assert any("labelled" in r for r in verdict["reasons"]), verdict
        assert _task(api, "analyze_experiment", run_id, "publish_champion")["state"] == "skipped"
    finally:
        client.delete_registered_model_alias(settings.model_name, CHALLENGER_ALIAS)


# --- the same Airflow, as a user meets it ------------------------------------------------------


def test_the_scheduler_backfilled_the_history_window_by_itself(system):
    airflow, _, api = system
    runs = api.get(
        "/dags/ingest_transactions/dagRuns", params={"run_type": "scheduled", "limit": 100}
    ).json()["dag_runs"]
    days = {dt.datetime.fromisoformat(r["data_interval_start"]).date() for r in runs}
    history = {TODAY - dt.timedelta(days=back) for back in range(1, HISTORY_DAYS + 1)}
    assert history <= days, sorted(history - days)
    assert all(r["state"] == "success" for r in runs if r["state"] != "running"), runs
    for day in history:
        path = part_path(airflow.settings.raw_transactions_dir, day, "simulated")
        assert pq.read_table(path).num_rows > 0
    # Each ingest's raw-lake event names the days it wrote (informative: build_features plans
    # from the lake's state).
    events = api.get(
        "/assets/events", params={"source_dag_id": "ingest_transactions", "limit": 200}
    ).json()["asset_events"]
    named = {day for e in events for day in (e.get("extra") or {}).get("days", [])}
    assert {d.isoformat() for d in history} <= named, sorted(named)


def test_features_were_built_by_asset_events_alone(system):
    """Nobody triggered build_features: the raw-lake Asset events of the ingest runs did."""
    airflow, _, api = system
    runs = _runs_after(api, "build_features", None)
    assert runs and all(r["run_type"] == "asset_triggered" for r in runs), runs
    events = api.get("/assets/events", params={"source_dag_id": "build_features"}).json()
    assert events["total_entries"] >= 1  # the features Asset was emitted
    features = airflow.settings.features_dir
    tables = (
        "customer_features",
        "terminal_features",
        "terminal_label_features",
        "customer_terminal_features",
    )
    for table in tables:
        assert pq.read_table(features / table).num_rows > 0
    assert (airflow.settings.feast_dir / "online.db").exists()


def _wait_until_idle(api: httpx.Client, dag_id: str, timeout: float = 600) -> None:
    def idle() -> bool:
        runs = api.get(f"/dags/{dag_id}/dagRuns", params={"state": ["queued", "running"]})
        return runs.json()["total_entries"] == 0

    wait_for(f"no {dag_id} run in progress", idle, timeout, interval=3)


def test_a_bad_batch_stops_build_features_before_spark(system):
    """A batch that fails dbt's tests fails the run at dbt_build; Spark never sees it."""
    import pyarrow as pa

    from pipelines.ingest import schema
    from pipelines.lake import write_parquet_atomic

    airflow, _, api = system
    settings = airflow.settings
    _wait_until_idle(api, "build_features")  # no build in flight may touch the tables meanwhile
    customer_table = settings.features_dir / "customer_features"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in customer_table.rglob("*.parquet"))
    day = utc_today()
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


def test_login_is_required(system):
    airflow, _, _ = system
    anonymous = httpx.get(f"{airflow.base_url}/api/v2/dags", timeout=10)
    assert anonymous.status_code in (401, 403)
    bad = httpx.post(
        f"{airflow.base_url}/auth/token",
        json={"username": airflow.login().username, "password": "wrong"},
        timeout=10,
    )
    assert bad.status_code in (401, 403)


def test_trigger_with_a_day_param_as_the_ui_does(system):
    airflow, _, api = system
    day = TODAY.isoformat()  # not a scheduled interval yet
    assert api.patch("/dags/ingest_transactions", json={"is_paused": False}).status_code == 200
    # The feature path on a new raw-lake Asset event was checked above; here (and in the
    # browser) only the ingest is, and a Spark build beside it would only take the CPU.
    assert api.patch("/dags/build_features", json={"is_paused": True}).status_code == 200
    created = api.post(
        "/dags/ingest_transactions/dagRuns",
        json={"logical_date": None, "conf": {"day": day}},
    )
    assert created.status_code == 200, created.text
    run = wait_for_run(api, "ingest_transactions", created.json()["dag_run_id"])
    assert run["state"] == "success"
    # Today is live: its transactions are the payments the API scored (the drift test's).
    path = part_path(airflow.settings.raw_transactions_dir, dt.date.fromisoformat(day), "scored")
    table = pq.read_table(path)
    assert table.num_rows > 0
    assert {d.date().isoformat() for d in table.column("tx_datetime").to_pylist()} == {day}
    # The task's return value is what the UI shows as its XCom.
    xcom = api.get(
        f"/dags/ingest_transactions/dagRuns/{run['dag_run_id']}/taskInstances/ingest_day"
        "/xcomEntries/return_value"
    ).json()
    assert xcom["value"]["transactions"] == table.num_rows
    assert xcom["value"]["source"] == "scored"


def test_invalid_param_is_refused_before_anything_runs(system):
    _, _, api = system
    refused = api.post(
        "/dags/ingest_transactions/dagRuns",
        json={"logical_date": None, "conf": {"day": "not-a-date"}},
    )
    assert refused.status_code == 400, refused.text


@needs_chromium
def test_in_a_browser_login_trigger_with_params_and_watch_the_run_succeed(system, page):
    airflow, _, api = system
    runs = api.get("/dags/ingest_transactions/dagRuns").json()["dag_runs"]
    before = {r["dag_run_id"] for r in runs}  # the REST trigger above ran the same day
    login = airflow.login()
    page.goto(f"{airflow.base_url}/")
    page.fill("input[name=username]", login.username)
    page.fill("input[name=password]", login.password)
    page.screenshot(path=ARTIFACTS / "01-login.png")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "login" not in url)

    page.goto(f"{airflow.base_url}/dags/ingest_transactions")
    page.get_by_test_id("trigger-dag-button").click()
    # The DAG's params render as a form under "Run Parameters" (a date picker for "day").
    day_field = page.locator("#element_day")
    if not day_field.is_visible():
        page.get_by_text("Run Parameters").click()
    day = TODAY.isoformat()
    day_field.fill(day)
    page.screenshot(path=ARTIFACTS / "02-trigger-dialog.png")
    page.get_by_test_id("trigger-dag-submit").click()

    def finished_manual_run() -> dict | None:
        runs = api.get("/dags/ingest_transactions/dagRuns").json()["dag_runs"]
        manual = [r for r in runs if r["run_type"] == "manual" and r["dag_run_id"] not in before]
        done = manual and manual[-1]["state"] in ("success", "failed")
        return manual[-1] if done else None

    run = wait_for("the run the Trigger dialog created", finished_manual_run, 240, interval=2)
    assert run["conf"] == {"day": day}
    assert run["state"] == "success"
    path = part_path(airflow.settings.raw_transactions_dir, dt.date.fromisoformat(day), "scored")
    assert path.exists()

    page.goto(f"{airflow.base_url}/dags/ingest_transactions/runs/{run['dag_run_id']}")
    page.get_by_text("success").first.wait_for()
    page.screenshot(path=ARTIFACTS / "03-run-succeeded.png")


def test_down_stops_every_process_it_started(system):
    airflow, _, _ = system
    pids = [p.pid() for p in airflow.processes()]
    assert all(pids)
    stopped = airflow.down()
    assert len(stopped) == 4
    import psutil

    assert not any(psutil.pid_exists(pid) for pid in pids)
