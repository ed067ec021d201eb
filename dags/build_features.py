"""Raw lake -> dbt (staging, marts, tests) -> Spark features -> Feast apply -> online store.

Scheduled on the raw-lake Asset: every ingest wakes it (events that arrive while it runs are
folded into the next run). Each run rebuilds from the whole lake, so it is idempotent; dbt's
tests gate everything downstream (a failed test stops the run before Spark). Emits the
``features`` Asset once the online store is fresh.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from pipelines.orchestration import DEFAULT_ARGS, FEATURES, RAW_TRANSACTIONS


@dag(
    schedule=[RAW_TRANSACTIONS],
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["features", "dbt", "spark", "feast"],
    doc_md=__doc__,
)
def build_features():
    @task
    def dbt_build() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.config import get_settings
        from pipelines.transform.dbt import DbtBuildError, run_dbt_build

        try:
            result = run_dbt_build(get_settings())
        except DbtBuildError as exc:
            # Failed data tests are deterministic: fail now, retrying cannot help.
            raise AirflowFailException(str(exc)) from exc
        return {
            "models": result.models,
            "tests_passed": result.tests_passed,
            "warnings": list(result.warnings),
            "seconds": round(result.elapsed_seconds, 1),
        }

    @task
    def spark_features() -> dict:
        from pipelines.config import get_settings
        from pipelines.features.runner import run_feature_job

        result = run_feature_job(get_settings())
        return {
            "customer_rows": result.customer_rows,
            "terminal_rows": result.terminal_rows,
            "seconds": round(result.wall_seconds, 1),
        }

    @task
    def feast_apply() -> None:
        from pipelines.config import get_settings
        from pipelines.featurestore.store import apply

        apply(get_settings())

    @task(outlets=[FEATURES])
    def materialize_online() -> str | None:
        from pipelines.config import get_settings
        from pipelines.featurestore.store import materialize_latest

        latest = materialize_latest(get_settings())
        return latest.isoformat() if latest else None

    dbt_build() >> spark_features() >> feast_apply() >> materialize_online()


build_features()
