"""Daily batch scoring: the day of the data interval scored by the champion, to the lake.

Skipped (not failed) while no champion exists yet. A manual run may name the day.
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from pipelines.config import get_settings
from pipelines.orchestration import DEFAULT_ARGS, FEATURES, history_start, run_day


@dag(
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=history_start(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["serving", "batch"],
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day to score (YYYY-MM-DD); empty = the run's data interval.",
        )
    },
    doc_md=__doc__,
)
def score_batch():
    @task(inlets=[FEATURES])
    def score_day(data_interval_start=None, params=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from mlflow.exceptions import MlflowException

        from serving.batch import score_day

        day = run_day(params, data_interval_start)
        try:
            result = score_day(get_settings(), day)
        except MlflowException as exc:
            raise AirflowSkipException(f"no champion to score with yet: {exc}") from exc
        return {
            "day": day.isoformat(),
            "rows": result.rows,
            "model_version": result.model_version,
            "decisions": result.decisions,
            "path": str(result.path) if result.path else None,
        }

    score_day()


score_batch()
