"""Raw lake -> dbt (staging, marts, tests) -> Spark features -> Feast apply -> online store.

Scheduled on the raw-lake Asset: every ingest wakes it (events that arrive while it runs are
folded into the next run). The events are not trusted to say what changed: ``plan`` compares
the raw lake with the state the last completed run recorded (``pipelines/featurestore/
changes.py``), dbt and the Spark job rebuild the days from the earliest changed one on, and
``record_build`` records the new state once the online store is loaded, so a failed or merged
run leaves the days to the next one and no day is ever skipped. Nothing runs when nothing
changed. The Trigger form's ``full_refresh`` rebuilds every day, ``rebuild_from`` the days
from that one on. dbt's tests gate everything downstream (a failed test stops the run before
Spark). Emits the ``features`` Asset once the online store is fresh.

Beside the feature path, ``dbt_docs`` publishes the dbt docs site (lineage graph, model and
column docs) that ``make up`` serves: a failure there never holds back the features.

A fresh system trains its first model by itself: after each run, ``first_model_needed`` checks
(``pipelines/training/bootstrap.py``) that no champion exists, no training is active and the
labelled history covers the protocol; then ``train_first_model`` triggers ``train_model`` with
a quick budget, under one fixed run id so it happens once. Its log says why it did not.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from pipelines.config import get_settings
from pipelines.monitoring.retrain import TRAIN_DAG_ID
from pipelines.orchestration import (
    DEFAULT_ARGS,
    FEATURES,
    RAW_TRANSACTIONS,
    event_days,
    history_start,
)
from pipelines.training.bootstrap import BOOTSTRAP_RUN_ID


@dag(
    schedule=[RAW_TRANSACTIONS],
    start_date=history_start(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    # The trigger's conf is the XCom dict of first_model_needed, not its string rendering.
    render_template_as_native_obj=True,
    tags=["features", "dbt", "spark", "feast"],
    params={
        "full_refresh": Param(False, type="boolean", description="Rebuild every day."),
        "rebuild_from": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Rebuild the days from this one on (YYYY-MM-DD), whatever changed.",
        ),
    },
    doc_md=__doc__,
)
def build_features():
    @task.short_circuit
    def plan(params=None, ti=None, triggering_asset_events=None) -> bool:
        import datetime as dt

        from pipelines.featurestore.changes import plan_build

        since = params.get("rebuild_from")
        planned = plan_build(
            get_settings(),
            full=bool(params.get("full_refresh")),
            since=dt.date.fromisoformat(since) if since else None,
        )
        named = event_days((triggering_asset_events or {}).get(RAW_TRANSACTIONS, []))
        # What the events said, beside what the lake says: only the lake is trusted.
        print(f"the triggering events named days {[str(d) for d in named]}")
        print(f"plan: {planned.reason}")
        ti.xcom_push(key="since", value=planned.since.isoformat() if planned.since else None)
        ti.xcom_push(key="full", value=planned.full)
        ti.xcom_push(key="snapshot", value=planned.snapshot)
        return not planned.up_to_date

    @task
    def dbt_build(ti=None) -> dict:
        import datetime as dt

        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.transform.dbt import DbtBuildError, run_dbt_build

        since = ti.xcom_pull(task_ids="plan", key="since")
        try:
            result = run_dbt_build(
                get_settings(),
                since=dt.date.fromisoformat(since) if since else None,
                full_refresh=bool(ti.xcom_pull(task_ids="plan", key="full")),
            )
        except DbtBuildError as exc:
            # Failed data tests are deterministic: fail now, retrying cannot help.
            raise AirflowFailException(str(exc)) from exc
        return {
            "models": result.models,
            "tests_passed": result.tests_passed,
            "since": since,
            "warnings": list(result.warnings),
            "seconds": round(result.elapsed_seconds, 1),
        }

    @task
    def spark_features(ti=None) -> dict:
        import datetime as dt

        from pipelines.features.runner import run_feature_job

        since = ti.xcom_pull(task_ids="plan", key="since")
        result = run_feature_job(
            get_settings(), since=dt.date.fromisoformat(since) if since else None
        )
        return {
            "since": since,
            "rows_written": {name: table.rows_written for name, table in result.tables.items()},
            "rows": {name: table.rows for name, table in result.tables.items()},
            "seconds": round(result.wall_seconds, 1),
        }

    @task
    def feast_apply() -> bool:
        from pipelines.featurestore.store import apply

        # Skipped (False) when the registry already holds these definitions.
        return apply(get_settings())

    @task(outlets=[FEATURES])
    def materialize_online() -> str | None:
        from pipelines.featurestore.store import materialize_latest

        latest = materialize_latest(get_settings())
        return latest.isoformat() if latest else None

    @task
    def record_build(ti=None) -> None:
        from pipelines.featurestore.changes import record_snapshot

        record_snapshot(get_settings(), ti.xcom_pull(task_ids="plan", key="snapshot"))

    @task.short_circuit
    def first_model_needed(ti=None) -> bool:
        from pipelines.monitoring.retrain import ACTIVE_STATES, TRAIN_DAG_ID
        from pipelines.training.bootstrap import first_model_verdict

        active = ti.get_dr_count(dag_id=TRAIN_DAG_ID, states=list(ACTIVE_STATES))
        verdict = first_model_verdict(get_settings(), active)
        print(f"first model: {verdict.reason}")
        ti.xcom_push(key="conf", value=verdict.conf)
        return verdict.train

    train_first_model = TriggerDagRunOperator(
        task_id="train_first_model",
        trigger_dag_id=TRAIN_DAG_ID,
        trigger_run_id=BOOTSTRAP_RUN_ID,
        conf="{{ ti.xcom_pull(task_ids='first_model_needed', key='conf') }}",
        skip_when_already_exists=True,
        wait_for_completion=False,
        openlineage_inject_parent_info=False,
    )

    @task
    def dbt_docs() -> dict:
        # Its own task, not part of dbt_build: a docs failure shows (and retries) on its own
        # without re-running the build, and it runs beside Spark, off the features' path
        # (~4 s CPU in a fresh task process).
        from pipelines.transform.dbt import generate_docs

        result = generate_docs(get_settings())
        return {
            "nodes": result.nodes,
            "seconds": round(result.elapsed_seconds, 1),
            "site": str(result.path),
        }

    built = plan() >> dbt_build()
    materialized = built >> spark_features() >> feast_apply() >> materialize_online()
    materialized >> record_build()
    materialized >> first_model_needed() >> train_first_model
    built >> dbt_docs()


build_features()
