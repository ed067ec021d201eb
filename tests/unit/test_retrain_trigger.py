"""``monitor_drift``'s retrain task (``DeduplicatedTriggerDagRunOperator.execute``) against a
ledger of ``train_model`` runs standing in for the metadata DB (the Task SDK's ``get_dr_count``
filters, as the execution API applies them). The real operator under real Airflow is the
full-loop test's; here the policy's cases run day by day, fast."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from airflow.sdk.exceptions import AirflowSkipException, DagRunTriggerException

from pipelines.monitoring import retrain
from pipelines.monitoring.monitor import retrain_plan
from pipelines.monitoring.policy import MonitorDecision
from pipelines.monitoring.trigger import DeduplicatedTriggerDagRunOperator

DAY = dt.date(2018, 6, 1)
DRIFT = MonitorDecision("retrain", ("critical drift: tx_amount",), ("tx_amount",), ("critical",))
DROP = MonitorDecision("retrain", ("average precision dropped",), (), (retrain.PERFORMANCE_RULE,))


@dataclass
class Run:
    run_id: str
    logical_date: dt.datetime
    run_after: dt.datetime
    state: str = "queued"
    note: str | None = None


class Ledger:
    """``train_model``'s runs, and the task instance the operator talks to."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.payload: dict = {}

    def xcom_pull(self, task_ids: str) -> dict:
        return self.payload

    def xcom_push(self, key: str, value: object) -> None:
        pass

    def get_dr_count(self, dag_id, logical_dates=None, run_ids=None, states=None) -> int:
        return sum(
            (logical_dates is None or r.logical_date in logical_dates)
            and (states is None or r.state in states)
            for r in self.runs
        )

    def start_due(self, now: dt.datetime) -> None:
        """The scheduler: a queued run starts once its run_after has passed."""
        for r in self.runs:
            if r.state == "queued" and r.run_after <= now:
                r.state = "running"


@pytest.fixture
def monitor(make_settings, monkeypatch):
    """``decide(day, decision, now)``: the retrain task of one monitor run; returns the run it
    created, or None (skipped). Label-aware at the product's delay and test days."""
    settings = make_settings(retrain_policy="label-aware", retrain_drifted_days=3)
    monkeypatch.setattr("pipelines.registry.versions.champion", lambda s: object())
    ledger = Ledger()

    def decide(day: dt.date, decision: MonitorDecision, now: dt.datetime) -> Run | None:
        plan = retrain_plan(settings, day, decision, now)
        conf = retrain.retrain_conf(day, list(decision.reasons), [], 7, None, plan)
        ledger.payload = {"day": day.isoformat(), "retrain_plan": plan, "retrain_conf": conf}
        ledger.start_due(now)
        monkeypatch.setattr("pipelines.monitoring.trigger.utc_now", lambda: now)
        task = DeduplicatedTriggerDagRunOperator(
            task_id="retrain", payload_task_id="compute_drift", cooldown_days=7
        )
        try:
            task.execute({"ti": ledger, "task_instance": ledger})
        except AirflowSkipException:
            return None
        except DagRunTriggerException as trigger:
            if any(r.run_id == trigger.dag_run_id for r in ledger.runs):
                return None  # skip_when_already_exists
            run = Run(
                trigger.dag_run_id,
                trigger.logical_date,
                trigger.run_after or now,
                note=trigger.note,
            )
            ledger.runs.append(run)
            return run
        raise AssertionError("the task neither triggered nor skipped")

    decide.ledger = ledger
    return decide


def morning(day: dt.date) -> dt.datetime:
    """When the monitor of ``day`` runs: the next morning, after that day's ingest."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1), dt.UTC)


def test_an_input_drift_alert_schedules_one_retrain_for_when_its_labels_cover_a_window(monitor):
    run = monitor(DAY, DRIFT, morning(DAY))
    on = retrain.drifted_window_day(DAY, delay_days=7, test_days=7, drifted_days=3)
    assert run is not None and run.run_id == retrain.retrain_run_id(DAY)
    # Not started now: queued until the morning of its day, listed under that date, and why.
    assert run.run_after == morning(DAY) + (on - DAY)
    assert run.logical_date == dt.datetime.combine(on + dt.timedelta(days=1), dt.time(), dt.UTC)
    assert run.note.startswith("scheduled retrain: input drift") and str(on) in run.note
    monitor.ledger.start_due(morning(DAY) + dt.timedelta(days=1))
    assert run.state == "queued"
    # The storm that follows (drift every day, and a rerun of the first day) adds nothing.
    for i in range(1, 15):
        day = DAY + dt.timedelta(days=i)
        assert monitor(day, DRIFT, morning(day)) is None
    assert monitor(DAY, DRIFT, morning(DAY + dt.timedelta(days=3))) is None
    assert [r.run_id for r in monitor.ledger.runs] == [run.run_id]
    monitor.ledger.start_due(run.run_after)
    assert run.state == "running"


def test_a_labelled_performance_drop_retrains_now_beside_a_scheduled_retrain(monitor):
    scheduled = monitor(DAY, DRIFT, morning(DAY))
    day = DAY + dt.timedelta(days=8)  # the drifted day's labels are in: performance dropped
    now_run = monitor(day, DROP, morning(day))
    assert now_run is not None and now_run.run_after == morning(day) and now_run.note is None
    assert now_run.logical_date == retrain.trigger_logical_date(morning(day))
    # Within the cooldown of that training nothing more starts now; the schedule stands.
    later = day + dt.timedelta(days=1)
    assert monitor(later, DROP, morning(later)) is None
    assert {r.run_id for r in monitor.ledger.runs} == {scheduled.run_id, now_run.run_id}


def test_a_backfill_whose_drifted_labels_are_in_the_lake_retrains_now(make_settings, tmp_path):
    from pipelines.transform.mart import mart_day_file

    settings = make_settings(retrain_policy="label-aware")
    newest = DAY + dt.timedelta(days=40)  # the lake is far ahead of the monitored day
    mart_day_file(settings, newest).parent.mkdir(parents=True)
    mart_day_file(settings, newest).touch()
    plan = retrain_plan(settings, DAY, DRIFT, morning(newest))
    assert plan is not None and plan["run_after"] is None


def test_first_alert_and_other_actions(make_settings):
    settings = make_settings(retrain_policy="first-alert")
    plan = retrain_plan(settings, DAY, DRIFT, morning(DAY))
    assert plan == {"on": DAY.isoformat(), "reason": "first alert: retrain now", "run_after": None}
    assert retrain_plan(settings, DAY, MonitorDecision("warn", ("x",)), morning(DAY)) is None
