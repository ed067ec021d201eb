"""Daily drift monitoring: whylogs profiles of the day vs the champion's training reference.

For its data interval (one day): wait until the mart holds the day, profile it (transactions
with their context columns, and the prediction log), compute drift (KS / chi-square / PSI),
data quality and, once labels have arrived, model performance against the champion; append the
run to the drift-metrics table and save the whylogs HTML drift report; then branch on the
decision policy (``pipelines/monitoring/policy.py``): continue / warn / retrain. ``retrain``
trains when the retrain policy says (``FRAUD_RETRAIN_POLICY``; ``label-aware``: an input-drift
alert schedules a queued ``train_model`` run that starts once the training window holds the
drifted days with their labels, a labelled performance drop trains now), at most once per
cooldown, never while a training is queued or running, with at most one retrain scheduled, and
never twice for a rerun of the same interval. A manual run may name the day with ``day``.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from pipelines.config import get_settings
from pipelines.monitoring.trigger import DeduplicatedTriggerDagRunOperator
from pipelines.orchestration import DEFAULT_ARGS, history_start, run_day


@dag(
    schedule=CronDataIntervalTimetable(get_settings().monitor_schedule, timezone="UTC"),
    start_date=history_start(),
    catchup=False,
    # Runs in order: each decision sees the trigger (and metrics) of the one before.
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["monitoring", "whylogs", "drift"],
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day to monitor (YYYY-MM-DD); empty = the run's data interval.",
        )
    },
    doc_md=__doc__,
)
def monitor_drift():
    @task.sensor(
        poke_interval=get_settings().monitor_poke_seconds, timeout=12 * 3600, mode="reschedule"
    )
    def wait_for_data(data_interval_start=None, params=None) -> bool:
        from pipelines.monitoring.data import mart_has_day

        return mart_has_day(get_settings(), run_day(params, data_interval_start))

    @task
    def profile_day(data_interval_start=None, params=None) -> dict:
        from pipelines.monitoring.profiles import profile_day

        day = run_day(params, data_interval_start)
        paths = profile_day(get_settings(), day)
        return {
            "day": day.isoformat(),
            "profiles": {k: str(v) if v else None for k, v in paths.items()},
        }

    @task
    def compute_drift(profiled: dict) -> dict:
        from pipelines.monitoring.monitor import compute_scores, retrain_plan
        from pipelines.monitoring.policy import decide
        from pipelines.monitoring.retrain import retrain_conf

        settings = get_settings()
        day = dt.date.fromisoformat(profiled["day"])
        scores = compute_scores(settings, day)
        decision = decide(scores)
        plan = retrain_plan(settings, day, decision)
        tx_reference = next((r for r in scores.references if r.kind == "transactions"), None)
        return {
            "day": day.isoformat(),
            "scores": scores.to_dict(),
            "decision": decision.to_dict(),
            "retrain_plan": plan,
            "retrain_conf": retrain_conf(
                day,
                list(decision.reasons),
                list(decision.drifted_columns),
                settings.label_delay_days,
                tx_reference.to_dict() if tx_reference else None,
                plan,
            ),
        }

    @task
    def publish_report(result: dict, run_id=None) -> dict:
        from pipelines.monitoring.monitor import publish
        from pipelines.monitoring.policy import MonitorDecision
        from pipelines.monitoring.scores import DriftScores

        metrics_path, reports = publish(
            get_settings(),
            DriftScores.from_dict(result["scores"]),
            MonitorDecision.from_dict(result["decision"]),
            run_id,
        )
        for kind, path in reports.items():
            print(f"{kind} drift report: {path}")
        return {"metrics": str(metrics_path), "reports": {k: str(v) for k, v in reports.items()}}

    @task.branch
    def decide(result: dict) -> str:
        decision = result["decision"]
        for reason in decision["reasons"]:
            print(f"{decision['action']}: {reason}")
        return decision["action"]

    @task
    def warn(result: dict) -> None:
        import logging

        for reason in result["decision"]["reasons"]:
            logging.getLogger("monitor_drift").warning("%s: %s", result["day"], reason)

    profiled = profile_day()
    wait_for_data() >> profiled
    result = compute_drift(profiled)
    published = publish_report(result)
    branch = decide(result)
    published >> branch
    branch >> [
        EmptyOperator(task_id="continue"),
        warn(result),
        DeduplicatedTriggerDagRunOperator(
            task_id="retrain",
            payload_task_id="compute_drift",
            cooldown_days=get_settings().retrain_cooldown_days,
        ),
    ]


monitor_drift()
