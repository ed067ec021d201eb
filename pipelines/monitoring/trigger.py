"""The ``retrain`` task of ``monitor_drift``: TriggerDagRunOperator with the dedup rules.

Imported by the DAG file at parse time: only Airflow and ``retrain`` (stdlib and the settings) here.

Why a subclass and not a branch before a plain trigger: the check ("is a training queued,
running, or within the cooldown?") and the trigger must be one step, else two monitor runs can
both pass the check before either triggers. One task instance at a time across all runs
(``max_active_tis_per_dag=1``) makes check-then-trigger atomic with respect to other monitor
runs; the deterministic run id covers anything else (a manual rerun, a retry).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

from pipelines.monitoring.retrain import (
    ACTIVE_STATES,
    TRAIN_DAG_ID,
    cooldown_logical_dates,
    retrain_run_id,
    schedule_horizon_days,
    scheduled_logical_dates,
    trigger_logical_date,
    trigger_verdict,
)


def utc_now() -> dt.datetime:
    """The wall clock the dedup rules read (a test sets its own)."""
    return dt.datetime.now(dt.UTC)


class DeduplicatedTriggerDagRunOperator(TriggerDagRunOperator):
    """Trigger ``train_model`` for the monitored day found in ``payload_task_id``'s XCom
    (keys ``day`` and ``retrain_conf``), unless the dedup rules say no (then: skipped)."""

    def __init__(
        self,
        *,
        payload_task_id: str,
        cooldown_days: int,
        trigger_dag_id: str = TRAIN_DAG_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_active_tis_per_dag", 1)
        super().__init__(
            trigger_dag_id=trigger_dag_id,
            skip_when_already_exists=True,
            # Never wait: the training takes long, and dag.test() hangs on waiting for it.
            wait_for_completion=False,
            openlineage_inject_parent_info=False,
            **kwargs,
        )
        self.payload_task_id = payload_task_id
        self.cooldown_days = cooldown_days

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.config import get_settings
        from pipelines.registry.versions import champion

        settings = get_settings()
        ti = context["ti"]
        payload = ti.xcom_pull(task_ids=self.payload_task_id)
        day = dt.date.fromisoformat(payload["day"])
        plan = payload.get("retrain_plan") or {}
        run_after = dt.datetime.fromisoformat(plan["run_after"]) if plan.get("run_after") else None
        now = utc_now()
        horizon = schedule_horizon_days(
            delay_days=settings.label_delay_days,
            test_days=settings.test_days,
            drifted_days=settings.retrain_drifted_days,
        )
        # Pending scheduled retrains: queued runs of a logical date from today on (a triggered
        # run's logical date is midnight of the day it starts).
        scheduled = ti.get_dr_count(
            dag_id=self.trigger_dag_id,
            logical_dates=scheduled_logical_dates(now, horizon),
            states=["queued"],
        )
        active = ti.get_dr_count(dag_id=self.trigger_dag_id, states=list(ACTIVE_STATES))
        recent = ti.get_dr_count(
            dag_id=self.trigger_dag_id,
            logical_dates=cooldown_logical_dates(now, self.cooldown_days),
        )
        verdict = trigger_verdict(
            active - scheduled,
            recent,
            self.cooldown_days,
            champion_exists=champion(settings) is not None,
            bootstrap_training=settings.bootstrap_training,
            scheduled_runs=scheduled,
            schedule_on=dt.date.fromisoformat(plan["on"]) if run_after else None,
        )
        self.log.info("retrain for %s: %s", day, verdict.reason)
        if not verdict.trigger:
            raise AirflowSkipException(verdict.reason)
        self.trigger_run_id = retrain_run_id(day)
        self.logical_date = trigger_logical_date(run_after or now)
        if run_after is not None:
            # Queued now, started by the scheduler from run_after on; the UI shows the note.
            self.run_after = run_after
            self.note = f"scheduled retrain: {plan['reason']}"
        self.conf = payload["retrain_conf"]
        super().execute(context)
