"""Train the fraud model: Feast training sets -> Optuna search -> final model -> test
assessment -> MLflow registry -> promotion gate; emits the ``champion_model`` Asset when the
champion alias moved.

Manual trigger with params (test window end, search budget, reason), or from another DAG with
a conf, e.g. ``TriggerDagRunOperator(trigger_dag_id="train_model", conf={"reason": "drift"})``.
Without ``test_end`` the newest day whose labels have all arrived closes the test period. A run
``monitor_drift`` triggered tags its MLflow run with the drift it answers (alert day, columns,
how many training days are from the alert day on), which the gate reads.
One run at a time: runs share the Optuna storage and move registry aliases.

Tasks hand each other the MLflow run id and the run's folder under ``<home>/training/`` (XCom);
datasets and the model travel as files in that folder. A retried ``tune`` resumes its study.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task

from pipelines.config import get_settings
from pipelines.orchestration import DEFAULT_ARGS, MODEL, history_start


@dag(
    schedule=None,
    start_date=history_start(),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["training", "optuna", "mlflow", "registry"],
    params={
        "test_end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Last day of the test period (YYYY-MM-DD); empty = newest labelled day.",
        ),
        "trials": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Finished trials the study should reach; empty = FRAUD_TUNING_TRIALS.",
        ),
        "timeout_seconds": Param(
            None,
            type=["null", "integer"],
            minimum=10,
            description="Search time budget in seconds; empty = FRAUD_TUNING_TIMEOUT_SECONDS.",
        ),
        "max_epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Epoch cap per trial; empty = FRAUD_MAX_EPOCHS.",
        ),
        "reason": Param("manual", type="string", description="Why this training runs."),
    },
    doc_md=__doc__,
)
def train_model():
    @task
    def build_dataset(params=None, dag_run=None) -> dict:
        from pipelines.monitoring.retrain import drift_of_conf
        from pipelines.training.train import build_dataset, latest_assessable_day

        settings = get_settings()
        test_end = (
            dt.date.fromisoformat(params["test_end"])
            if params and params.get("test_end")
            else latest_assessable_day(settings)
        )
        reason = (params or {}).get("reason") or "manual"
        drift = drift_of_conf(dag_run.conf if dag_run is not None else None)
        return build_dataset(settings, test_end, reason=reason, drift=drift)

    @task
    def tune(ids: dict, params=None) -> dict:
        from pipelines.training.train import tune_model

        params = params or {}
        settings = get_settings()
        if params.get("max_epochs"):
            settings = settings.model_copy(update={"max_epochs": params["max_epochs"]})
        result = tune_model(
            settings,
            ids["run_id"],
            ids["workdir"],
            n_trials=params.get("trials"),
            timeout_seconds=params.get("timeout_seconds"),
            workers=settings.tuning_workers,
        )
        return {k: result[k] for k in ("study_name", "finished_trials", "best_value")}

    @task
    def train_final(ids: dict) -> dict:
        from pipelines.training.train import train_final

        settings = get_settings()
        final = train_final(
            settings, ids["run_id"], ids["workdir"], processes=settings.final_training_processes
        )
        return {"model_uri": final["model_uri"], "members": final["members"]}

    @task
    def evaluate(ids: dict) -> dict:
        from pipelines.training.train import evaluate

        metrics = evaluate(get_settings(), ids["run_id"], ids["workdir"])["metrics"]
        return {k: v for k, v in metrics.items() if k.startswith("test_")}

    @task
    def register(ids: dict) -> dict:
        from pipelines.training.train import register

        return register(get_settings(), ids["run_id"], ids["workdir"])

    @task
    def gate(ids: dict) -> dict:
        from pipelines.training.train import finish_run, gate

        settings = get_settings()
        decision = gate(settings, ids["run_id"], ids["workdir"])
        finish_run(settings, ids["run_id"])
        return decision

    @task.short_circuit
    def champion_moved(decision: dict) -> bool:
        # Only a promotion changes what serving must load; a challenger emits nothing. (A
        # retried gate after a promotion reports "already the champion": still promoted.)
        return bool(decision["promote"])

    @task(outlets=[MODEL])
    def publish_champion(decision: dict, outlet_events=None) -> dict:
        if outlet_events is not None:
            outlet_events[MODEL].extra = {
                "version": decision["version"],
                "metric": decision["metric"],
                "value": decision["candidate_value"],
            }
        return {"version": decision["version"]}

    ids = build_dataset()
    searched = tune(ids)
    trained = train_final(ids)
    evaluated = evaluate(ids)
    registered = register(ids)
    decision = gate(ids)
    searched >> trained >> evaluated >> registered >> decision
    champion_moved(decision) >> publish_champion(decision)


train_model()
