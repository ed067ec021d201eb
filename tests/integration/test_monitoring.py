"""Drift monitoring on simulated data: simulator -> raw lake -> dbt mart -> whylogs -> decision.

One drift-free world of 69 days (300 customers) is built once. Each drift scenario is that
world with the scenario switched on from ``SWITCH``: the history before the switch is copied
(it was ingested before anyone switched anything on), the days from the switch are ingested
with the scenario on, and dbt rebuilds the mart. The reference is the training period
``REFERENCE`` (a champion trained on it), as the DAG would take it from the champion.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path

import pytest

from pipelines.config import Settings
from pipelines.ingest.daily import ingest_days
from pipelines.lake import days_between
from pipelines.monitoring import retrain
from pipelines.monitoring.metrics_table import read_metrics
from pipelines.monitoring.monitor import run_monitor
from pipelines.monitoring.profiles import profiles_dir
from pipelines.transform.dbt import run_dbt_build

FIRST_DAY = dt.date(2018, 4, 1)
# Windows of 30 days in the context columns: the reference starts once they are full.
REFERENCE = (dt.date(2018, 5, 1), dt.date(2018, 5, 7))
SWITCH = dt.date(2018, 5, 20)
QUIET_DAYS = days_between(dt.date(2018, 5, 8), dt.date(2018, 6, 8))  # 32 monitored days
SCENARIOS = {
    "spending": "drift_spending_from",
    "card_testing": "drift_new_fraud_from",
    "geography": "drift_geo_from",
}


def _settings(home: Path, **drift: dt.date) -> Settings:
    # Every path explicit and no env file: nothing can point a test at a real lake.
    return Settings(
        _env_file=None,
        home=home,
        data_dir=home / "data",
        warehouse_path=home / "warehouse" / "fraud.duckdb",
        n_customers=300,
        n_terminals=600,
        history_start=FIRST_DAY,
        label_delay_days=7,
        mlflow_tracking_uri=f"sqlite:///{home / 'no-mlflow' / 'mlflow.db'}",
        **drift,
    )


@pytest.fixture(scope="module")
def quiet_world(tmp_path_factory) -> Settings:
    settings = _settings(tmp_path_factory.mktemp("monitor-quiet"))
    ingest_days(FIRST_DAY, QUIET_DAYS[-1], settings)
    run_dbt_build(settings)
    return settings


def _drifted_world(quiet: Settings, home: Path, scenario: str) -> Settings:
    settings = _settings(home, **{SCENARIOS[scenario]: SWITCH})
    last_label_day = SWITCH - dt.timedelta(days=settings.label_delay_days + 1)
    for table, last in (
        (quiet.raw_transactions_dir, SWITCH - dt.timedelta(days=1)),
        (quiet.raw_labels_dir, last_label_day),
    ):
        target = settings.lake_dir / table.relative_to(quiet.lake_dir)
        for part in sorted(table.glob("date=*")):
            if dt.date.fromisoformat(part.name.removeprefix("date=")) <= last:
                shutil.copytree(part, target / part.name)
    # Profiles of the days before the switch are the same data: reuse them.
    if profiles_dir(quiet, "transactions").is_dir():
        shutil.copytree(
            profiles_dir(quiet, "transactions"),
            profiles_dir(settings, "transactions"),
            ignore=lambda d, names: [n for n in names if n >= f"date={SWITCH}"],
        )
    ingest_days(SWITCH, SWITCH + dt.timedelta(days=1), settings)
    run_dbt_build(settings)
    return settings


def _monitor(settings: Settings, day: dt.date, *, reports: bool = False):
    return run_monitor(
        settings,
        day,
        reference_window=REFERENCE,
        champion=None,
        write_reports=reports,
        run_id=f"test__{day}",
    )


def test_no_retrain_over_32_drift_free_days(quiet_world):
    actions: Counter[str] = Counter()
    false_alarms: Counter[str] = Counter()
    for day in QUIET_DAYS:
        result = _monitor(quiet_world, day)
        actions[result.decision.action] += 1
        for c in result.scores.columns:
            if c.policy and c.severity != "none":
                false_alarms[f"{c.column} ({c.severity})"] += 1
    policy_columns = sorted({c.column for c in result.scores.columns if c.policy})
    print(f"\n{len(QUIET_DAYS)} drift-free days: decisions {dict(actions)}")
    for name in policy_columns:
        hits = sum(n for k, n in false_alarms.items() if k.startswith(f"{name} "))
        print(f"  false alarms {name}: {hits}")
    assert actions["retrain"] == 0, false_alarms
    # The table has one latest run per monitored day, queryable over time.
    table = read_metrics(quiet_world, QUIET_DAYS[0], QUIET_DAYS[-1])
    decisions = table[table["kind"] == "decision"]
    assert len(decisions) == len(QUIET_DAYS)
    assert set(decisions["action"]) <= {"continue", "warn"}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_drift_scenario_is_flagged_on_its_first_day(quiet_world, tmp_path, scenario):
    settings = _drifted_world(quiet_world, tmp_path / scenario, scenario)
    days = [
        SWITCH - dt.timedelta(days=2),
        SWITCH - dt.timedelta(days=1),
        SWITCH,
        SWITCH + dt.timedelta(days=1),
    ]
    results = {day: _monitor(settings, day, reports=day == SWITCH) for day in days}
    actions = {day: r.decision.action for day, r in results.items()}
    print(f"\n{scenario}: " + ", ".join(f"{d}: {a}" for d, a in actions.items()))
    for day, r in results.items():
        print(f"  {day} {r.decision.action}: {'; '.join(r.decision.reasons)}")

    assert actions[days[0]] == actions[days[1]] == "continue"
    assert actions[SWITCH] != "continue", "not flagged on the first drifted day"
    # Retrained on the first day, or on the second when a moderate drift persists.
    assert "retrain" in (actions[SWITCH], actions[days[3]])

    # Exactly one training for the consecutive retrain decisions (the DAG's dedup rules, with
    # the monitor of day d running on the morning of d + 1).
    runs: dict[str, dt.datetime] = {}
    for day, action in actions.items():
        now = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1), dt.UTC)
        recent = [
            d
            for d in runs.values()
            if d in retrain.cooldown_logical_dates(now, settings.retrain_cooldown_days)
        ]
        if action == "retrain" and not recent and retrain.retrain_run_id(day) not in runs:
            runs[retrain.retrain_run_id(day)] = retrain.trigger_logical_date(now)
    assert len(runs) == 1

    report = results[SWITCH].reports["transactions"]
    assert report.exists() and "<html" in report.read_text()[:2000].lower()
    table = read_metrics(settings, SWITCH, SWITCH)
    drifted = results[SWITCH].decision.drifted_columns
    psi_rows = table[(table["metric"] == "psi") & table["column"].isin(drifted)]
    assert len(psi_rows) and set(psi_rows["severity"]) <= {"warning", "critical"}


# --- the prediction log: inputs as served, prediction drift, performance -------------------


def _log_predictions(settings: Settings, days: list[dt.date], noisy_from: dt.date | None) -> None:
    """A prediction log as serving writes it, for the mart's transactions of ``days``: a good
    model (frauds score high) before ``noisy_from``, scores unrelated to fraud from it."""
    import duckdb
    import numpy as np

    from pipelines.transform.mart import mart_files
    from serving.prediction_log import PredictionLog

    with duckdb.connect() as con:
        mart = con.execute(
            "select transaction_id, tx_datetime, customer_id, terminal_id, tx_amount, tx_fraud "
            "from read_parquet(?, hive_partitioning = false) "
            "where tx_datetime >= ? and tx_datetime < ? order by tx_datetime",
            [
                mart_files(settings),
                dt.datetime.combine(days[0], dt.time(), dt.UTC),
                dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time(), dt.UTC),
            ],
        ).df()
    rng = np.random.default_rng(7)
    fraud = mart["tx_fraud"].fillna(0).to_numpy()
    good = np.clip(
        0.03 + 0.85 * fraud * rng.uniform(0.6, 1.0, len(mart)) + rng.beta(1, 30, len(mart)), 0, 1
    )
    noisy = rng.uniform(0, 1, len(mart))
    tx_day = mart["tx_datetime"].dt.date.to_numpy()
    score = np.where((tx_day >= noisy_from) if noisy_from else False, noisy, good)
    log = PredictionLog(settings.predictions_dir, flush_seconds=3600)
    log.append(
        [
            {
                "transaction_id": int(row.transaction_id),
                "tx_datetime": row.tx_datetime.to_pydatetime(),
                "customer_id": int(row.customer_id),
                "terminal_id": int(row.terminal_id),
                "tx_amount": float(row.tx_amount),
                "feature_customer_nb_tx_1d_now": int(rng.poisson(3)),
                "feature_terminal_risk_7d": float(rng.beta(1, 50)),
                "fraud_probability": float(p),
                "decision": "block" if p >= 0.8 else "review" if p >= 0.3 else "approve",
                "model_version": "1",
                "unknown_customer": False,
                "unknown_terminal": bool(rng.random() < 0.01),
                "request_time": dt.datetime.now(dt.UTC),
            }
            for row, p in zip(mart.itertuples(), score, strict=True)
        ]
    )
    log.close()


def test_prediction_drift_and_performance_from_the_prediction_log(quiet_world, tmp_path):
    """A healthy model passes; the same days scored by a broken model retrain it."""
    from pipelines.monitoring.data import read_labelled_scores
    from pipelines.monitoring.performance import evaluate, labelled_window
    from pipelines.monitoring.reference import Champion

    settings = _settings(tmp_path / "served")
    shutil.copytree(quiet_world.home, settings.home)
    day = dt.date(2018, 5, 21)
    _log_predictions(settings, days_between(REFERENCE[0], day), None)
    # The champion's training-time figures: what the good model scores on the labelled window.
    first, last = labelled_window(day, settings.label_delay_days)
    labelled = read_labelled_scores(settings, first, last, "1")
    figures = evaluate(
        list(labelled["tx_day"]),
        labelled["customer_id"].tolist(),
        labelled["tx_fraud"].astype(int).tolist(),
        labelled["score"].tolist(),
    )
    champion = Champion("fraud-detector", "1", None, figures, *REFERENCE)

    def monitor():
        result = run_monitor(
            settings, day, reference_window=REFERENCE, champion=champion, run_id="test-served"
        )
        served = {c.column: c for c in result.scores.columns if c.kind == "predictions"}
        metrics = {p.metric: p for p in result.scores.performance}
        print(f"\n{day}: {result.decision.action} {result.decision.reasons}")
        assert {"tx_amount", "customer_nb_tx_1d_now", "terminal_risk_7d"} <= set(served)
        assert set(metrics) == {"roc_auc", "average_precision", "card_precision_at_100"}
        assert (metrics["roc_auc"].first_day, metrics["roc_auc"].last_day) == (first, last)
        baseline = next(r for r in result.scores.references if r.source == "score-baseline")
        assert (baseline.first_day, baseline.last_day) == REFERENCE  # v1's first 7 days
        # Model inputs move in neither case: only the model does.
        inputs = [c for c in served.values() if c.policy and c.column != "fraud_probability"]
        assert [c.column for c in inputs if c.severity != "none"] == []
        return result, served, metrics

    healthy, served, metrics = monitor()
    assert healthy.decision.action == "continue", healthy.decision.reasons
    assert served["fraud_probability"].severity == "none"
    assert abs(metrics["average_precision"].degradation) < 1e-9
    assert healthy.reports["predictions"].exists()

    # The same days scored by a model that lost its signal, from the 8th on.
    for part in settings.predictions_dir.glob("date=*"):
        if part.name >= "date=2018-05-08":
            shutil.rmtree(part)
    _log_predictions(settings, days_between(dt.date(2018, 5, 8), day), dt.date(2018, 5, 8))
    degraded, served, metrics = monitor()
    assert degraded.decision.action == "retrain"
    assert served["fraud_probability"].severity == "critical"
    assert metrics["average_precision"].severity == "critical"
    assert {"critical-column", "performance"} <= set(degraded.decision.rules)


def test_the_monitor_commands(quiet_world, monkeypatch):
    from typer.testing import CliRunner

    from pipelines.config import get_settings
    from pipelines.monitoring.cli import monitor_app

    s = quiet_world
    for key, value in {
        "COLUMNS": 200,  # rich wraps tables at the terminal width
        "FRAUD_HOME": s.home,
        "FRAUD_DATA_DIR": s.data_dir,
        "FRAUD_WAREHOUSE_PATH": s.warehouse_path,
        "FRAUD_MLFLOW_TRACKING_URI": s.tracking_uri,
        "FRAUD_HISTORY_START": FIRST_DAY,
        "FRAUD_N_CUSTOMERS": 300,
        "FRAUD_N_TERMINALS": 600,
    }.items():
        monkeypatch.setenv(key, str(value))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        out = runner.invoke(monitor_app, ["profile", "--day", "2018-05-21"])
        assert out.exit_code == 0, out.output
        assert "transactions: " in out.output and "predictions: no data" in out.output
        out = runner.invoke(
            monitor_app,
            [
                "drift",
                "--day",
                "2018-05-21",
                "--reference-start",
                "2018-05-01",
                "--reference-end",
                "2018-05-07",
                "--all",
            ],
        )
        assert out.exit_code == 0, out.output
        assert "decision: continue" in out.output and "customer_terminal_is_new" in out.output
        assert "transactions report: " in out.output
        out = runner.invoke(
            monitor_app, ["report", "--start", "2018-05-20", "--column", "tx_amount"]
        )
        assert out.exit_code == 0, out.output
        assert "2018-05-21" in out.output and "continue" in out.output
        out = runner.invoke(monitor_app, ["drift", "--day", "2019-01-01"])
        assert out.exit_code == 1 and "no transactions" in out.output
    finally:
        get_settings.cache_clear()
