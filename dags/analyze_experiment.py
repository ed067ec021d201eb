"""Daily analysis of the running A/B or shadow experiment: challenger vs champion.

Joins the prediction log with the labels that have arrived, compares the variants (AP, CP@k,
latency and error-rate guardrails) with a customer bootstrap, and records ship / iterate / kill
(JSON under ``<home>/experiments/decisions/``, ``experiment_*`` tags on the challenger).
``ship`` moves the champion alias to the challenger and emits the model Asset, so
``deploy_model`` switches the service; ``kill`` removes the challenger alias. Skipped while the
registry has no challenger. Params: the window, the last day, and a dry-run switch.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from pipelines.config import get_settings
from pipelines.orchestration import DEFAULT_ARGS, MODEL, history_start, run_day


@dag(
    schedule=CronDataIntervalTimetable("0 7 * * *", timezone="UTC"),
    start_date=history_start(),
    catchup=False,
    # One decision at a time: a ship moves the aliases the next analysis reads.
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["experiment", "ab-test", "serving"],
    params={
        "window_days": Param(
            get_settings().experiment_window_days,
            type="integer",
            minimum=1,
            description="Days analysed.",
        ),
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Last day of the window (YYYY-MM-DD); empty = the run's interval end.",
        ),
        "apply": Param(True, type="boolean", description="Act on ship / kill (else dry run)."),
    },
    doc_md=__doc__,
)
def analyze_experiment():
    @task
    def analyze(data_interval_end=None, params=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.experiment.analysis import analyze

        params = params or {}
        # Without a day (a manual run with no logical date) the analysis takes the newest.
        day = run_day(params, data_interval_end) if params.get("day") or data_interval_end else None
        result = analyze(
            get_settings(), day, params.get("window_days"), apply=params.get("apply", True)
        )
        if result is None:
            raise AirflowSkipException("no challenger in the registry: nothing to analyse")
        for reason in result.reasons:
            print(f"{result.decision}: {reason}")
        return {
            "decision": result.decision,
            "reasons": result.reasons,
            "action": result.action,
            "record": result.record,
            "champion_version": result.champion_version,
            "challenger_version": result.challenger_version,
        }

    @task.short_circuit
    def shipped(result: dict) -> bool:
        # Only a ship changes what serving must load (deploy_model runs on the Asset).
        return result["decision"] == "ship" and result["action"].startswith("promoted")

    @task(outlets=[MODEL])
    def publish_champion(result: dict, outlet_events=None) -> dict:
        if outlet_events is not None:
            outlet_events[MODEL].extra = {
                "version": result["challenger_version"],
                "source": "experiment",
            }
        return {"version": result["challenger_version"]}

    result = analyze()
    shipped(result) >> publish_champion(result)


analyze_experiment()
