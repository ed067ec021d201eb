"""Training end to end on a tiny world: the real chain (lake -> dbt -> Spark -> Feast) feeds
the training steps exactly as the ``train_model`` DAG calls them.

One module fixture copies the shared world (``tests/worlds.py``) and runs a first training
whose search is interrupted after two trials and resumed to three; the tests then check the
MLflow run, the registered version and its aliases, that the registered model reproduces the
logged test metrics, and that a second training on the same window is deterministic (the same
scores: the gate's interval is exactly 0, so the champion stays).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from pipelines import contracts
from pipelines.config import Settings
from pipelines.featurestore import store
from tests.worlds import TEST_END, world_copy


class Interrupt(Exception):
    """Stands for a kill of the worker in the middle of the search."""


@pytest.fixture(scope="module")
def world(shared_world, tmp_path_factory) -> Iterator[Settings]:
    """A copy of the shared world: its registry and study are this module's."""
    with world_copy(
        shared_world,
        tmp_path_factory.mktemp("training"),
        FRAUD_MAX_EPOCHS=3,
        FRAUD_TUNING_TRIALS=3,
        FRAUD_PROMOTION_FLOOR=0.05,
    ) as settings:
        yield settings


@pytest.fixture(scope="module")
def first(world) -> dict:
    """A training whose search dies after 2 trials, then resumes (as a retried task would)."""
    from pipelines.training import train

    ids = train.build_dataset(world, TEST_END, reason="test")
    run_id, workdir = ids["run_id"], ids["workdir"]

    def kill_after_two(study, trial) -> None:
        if len([t for t in study.trials if t.state.is_finished()]) >= 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.tune_model(world, run_id, workdir, n_trials=3, callbacks=(kill_after_two,))
    resumed = train.tune_model(world, run_id, workdir, n_trials=3)
    train.train_final(world, run_id, workdir)
    evaluation = train.evaluate(world, run_id, workdir)
    version = train.register(world, run_id, workdir)["version"]
    decision = train.gate(world, run_id, workdir)
    train.finish_run(world, run_id)
    return {
        "run_id": run_id,
        "workdir": workdir,
        "tuning": resumed,
        "metrics": evaluation["metrics"],
        "model_uri": evaluation["model_uri"],
        "version": version,
        "gate": decision,
    }


def test_interrupted_search_resumes_the_same_study(world, first):
    import optuna

    tuning = first["tuning"]
    assert tuning["finished_trials"] == 3
    assert tuning["trials_this_call"] == 1  # two survived the interruption
    study = optuna.load_study(study_name=tuning["study_name"], storage=world.study_storage)
    assert len([t for t in study.trials if t.state.is_finished()]) == 3


def test_run_records_lineage_metrics_children_and_artifacts(world, first):
    from pipelines.registry import tracking

    client = tracking.client(world)
    run = client.get_run(first["run_id"])
    tags = run.data.tags
    assert tags["feature_service"] == store.FEATURE_SERVICE
    assert tags["test_start"] == "2018-05-08" and tags["test_end"] == "2018-05-14"
    assert tags["train_start"] == "2018-04-24" and tags["train_end"] == "2018-04-30"
    assert tags["training_cutoff"] == "2018-05-08T00:00:00+00:00"
    assert len(tags["dataset_fingerprint"]) == 64 and len(tags["lock_hash"]) == 64
    assert tags["git_commit"]
    assert run.info.status == "FINISHED"
    for metric in ("roc_auc", "average_precision", "card_precision_at_100"):
        assert 0 <= run.data.metrics[f"test_{metric}"] <= 1
    assert "precision_at_threshold" in "".join(run.data.metrics)
    assert run.data.params["best_bins"] in {"0", "8", "16"}
    # One child run per trial (interrupted call included), each with per-epoch curves.
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{first['run_id']}'"
    )
    assert len(children) == 3
    history = client.get_metric_history(children[0].info.run_id, "validation_average_precision")
    assert len(history) >= 1 and history[0].step == 1
    # Per-epoch training curves of the final ensemble members.
    assert any(k.startswith("final_m0s0_train_loss") for k in run.data.metrics)
    listed = {a.path for a in client.list_artifacts(first["run_id"], "plots")}
    assert listed == {"plots/roc_test.png", "plots/pr_test.png", "plots/optuna_history.png"}
    assert [a.path for a in client.list_artifacts(first["run_id"], "monitoring")] == [
        "monitoring/reference_profile.bin"
    ]
    artifact_root = client.get_experiment(run.info.experiment_id).artifact_location
    assert artifact_root == (world.mlflow_dir / "artifacts").as_uri()


def test_registered_version_is_champion_with_its_tags(world, first):
    from pipelines.registry import tracking, versions

    assert first["gate"]["promote"] is True
    champion = versions.champion(world)
    assert str(champion.version) == first["version"]
    tags = tracking.client(world).get_model_version(world.model_name, first["version"]).tags
    for key in (
        "test_average_precision",
        "test_start",
        "train_start",
        "feature_service",
        "git_commit",
        "lock_hash",
        "dataset_fingerprint",
        "signature_inputs",
        "gate_reason",
    ):
        assert tags[key], key
    inputs = json.loads(tags["model_inputs"])
    assert inputs[0] == "tx_amount" and "terminal_risk_7d" in inputs
    assert set(json.loads(tags["input_baseline"])) == set(inputs)


def test_registered_model_reproduces_the_logged_test_metrics(world, first):
    import mlflow.pyfunc

    from pipelines import metrics
    from pipelines.registry import tracking
    from pipelines.training import dataset
    from pipelines.training.train import workdir_of

    tracking.use_tracking(world)
    data = dataset.load(workdir_of(world, first["run_id"]) / "data")
    test = data.frames["test"]
    model = mlflow.pyfunc.load_model(f"models:/{world.model_name}@champion")
    scores = model.predict(test[data.inputs].astype("float64")).to_numpy().ravel()
    got = metrics.ranking_metrics(test.tx_day, test.customer_id, test.tx_fraud, scores)
    for name, value in got.items():
        assert value == pytest.approx(first["metrics"][f"test_{name}"], abs=1e-9), name
    # The raw torch module is there too, with its operating threshold.
    import mlflow.pytorch

    scorer = mlflow.pytorch.load_model(f"models:/{world.model_name}@champion")
    assert scorer.inputs == data.inputs and 0 < scorer.threshold < 1


def test_same_window_again_is_deterministic_and_a_tie_keeps_the_champion(world, first):
    from pipelines.registry import versions
    from pipelines.training.train import run_training

    again = run_training(world, TEST_END, reason="test again")
    assert again.study["trials_this_call"] == 0  # the study already has its 3 trials
    for name in ("test_roc_auc", "test_average_precision", "test_card_precision_at_100"):
        assert again.metrics[name] == pytest.approx(first["metrics"][name], abs=1e-12)
    assert again.version != first["version"]
    # The same scores on the same window: a difference of exactly 0, inside any interval.
    assert again.gate["promote"] is False and "not shown better" in again.gate["reason"]
    assert (again.gate["interval_low"], again.gate["interval_high"]) == (0.0, 0.0)
    assert str(versions.champion(world).version) == first["version"]
    challenger = versions.version_by_alias(world, contracts.CHALLENGER_ALIAS)
    assert str(challenger.version) == again.version


def test_cli_shows_the_registry_and_rolls_back(world, first):
    from typer.testing import CliRunner

    from pipelines.training.cli import registry_app

    runner = CliRunner()
    shown = runner.invoke(registry_app, ["show", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["aliases"]["champion"] == int(first["version"])
    table = runner.invoke(registry_app, ["show"], env={"COLUMNS": "300"})
    assert table.exit_code == 0 and "superiority: +0.000 [+0.000, +0.000]" in table.output
    # The first champion replaced nothing: rollback refuses with a clear message.
    refused = runner.invoke(registry_app, ["rollback"])
    assert refused.exit_code == 1 and "nothing to restore" in refused.output


_DAG_TEST = """
import json, sys
from airflow.utils import db
db.resetdb()
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["train_model"]
run = dag.test(run_conf=json.loads(sys.argv[2]))
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
print("RESULT " + json.dumps({"state": str(run.state), "tasks": states}))
"""


def test_the_dag_runs_every_step_with_a_conf(world, first):
    """``dag.test()`` in a fresh Airflow home with the conf ``monitor_drift`` sends: XComs,
    params, the drift lineage on the run and the short circuit for real."""
    import datetime as dt
    import subprocess
    import sys

    from pipelines.config import PROJECT_ROOT
    from pipelines.monitoring.retrain import retrain_conf
    from pipelines.platform.airflow import AirflowServices
    from pipelines.registry import tracking, versions
    from pipelines.training.train import split_for

    before = versions.describe(world)["versions"]
    # A drift alerted on the day before the training window's last day.
    alert = split_for(world, TEST_END).train_end - dt.timedelta(days=1)
    drift = retrain_conf(alert, ["critical drift: tx_amount"], ["tx_amount"], 7)
    conf = {**drift, "test_end": TEST_END.isoformat(), "trials": 3}
    dag_file = str(PROJECT_ROOT / "dags" / "train_model.py")
    done = subprocess.run(
        [sys.executable, "-c", _DAG_TEST, dag_file, json.dumps(conf)],
        env=AirflowServices(world).env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["state"] == "success", result
    tasks = result["tasks"]
    for task in ("build_dataset", "tune", "train_final", "evaluate", "register", "gate"):
        assert tasks[task] == "success", (task, tasks)
    # Same window, same finished study: a tie, so the champion stays and no Asset is emitted.
    assert tasks["publish_champion"] == "skipped"
    after = versions.describe(world)
    assert len(after["versions"]) == len(before) + 1
    newest = after["versions"][-1]
    assert newest["tags"]["reason"] == drift["reason"]
    run_tags = tracking.client(world).get_run(newest["tags"]["run_id"]).data.tags
    for tags in (newest["tags"], run_tags):
        assert tags[contracts.DRIFT_ALERT_DAY_TAG] == alert.isoformat()
        assert tags[contracts.DRIFT_COLUMNS_TAG] == "tx_amount"
        assert tags[contracts.DRIFTED_TRAINING_DAYS_TAG] == "2"
        assert tags[contracts.WINDOW_CONTAINS_DRIFT_TAG] == "true"
    # The champion was trained on the same window, drifted days included: superiority.
    assert newest["tags"]["gate_rule"] == "superiority"
    assert newest["tags"]["gate_decision"] == contracts.CHALLENGER_ALIAS
    assert str(after["aliases"]["champion"]) == first["version"]
