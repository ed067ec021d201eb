"""MLflow tracking and model registry on PostgreSQL, through the tracking server.

The server is started natively with the command the compose ``mlflow`` service runs; the
client side only knows the server's URL, as training and serving do in production.
"""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.pyfunc import PythonModel
from typer.testing import CliRunner

from pipelines.platform.cli import services_app
from pipelines.platform.mlflow import MlflowServer
from tests.conftest import free_port
from tests.production.conftest import pg_url, query

MODEL = "fraud-detector-prodtest"


class Doubler(PythonModel):
    """A stand-in model: the registry is under test here, not training."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return model_input * 2


@pytest.fixture(scope="module")
def server(tmp_path_factory, fresh_database):
    database = fresh_database("mlflow")
    home = tmp_path_factory.mktemp("mlflow-pg")
    mlflow_server = MlflowServer(
        home=home,
        backend_store_uri=pg_url(database),
        artifacts_destination=str(home / "artifacts"),
        port=free_port(),
    )
    try:
        mlflow_server.up(timeout=180)
        yield mlflow_server, database
    finally:
        mlflow_server.down()


def test_run_registered_version_and_alias_live_in_postgres(server, monkeypatch, tmp_path):
    import mlflow
    import mlflow.pyfunc

    mlflow_server, database = server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.chdir(tmp_path)  # nothing may land in ./mlruns of the checkout
    # Earlier tests in the same process may have set MLflow's process-wide URIs (training
    # does, as a real task process should); those beat the environment, so set ours and
    # restore theirs afterwards.
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    try:
        _log_register_and_load(mlflow_server, database)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def _log_register_and_load(mlflow_server, database) -> None:
    import mlflow
    import mlflow.pyfunc
    from mlflow import MlflowClient

    experiment = mlflow.create_experiment("fraud-prodtest")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_params({"hidden": 32, "lr": 0.001})
        mlflow.log_metrics({"average_precision": 0.71, "roc_auc": 0.93})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Doubler(),
            registered_model_name=MODEL,
            # Explicit requirements: inference by import scanning costs ~10 s.
            pip_requirements=["mlflow"],
        )
    client = MlflowClient()
    version = info.registered_model_version
    assert str(version) == "1"
    client.set_registered_model_alias(MODEL, "champion", str(version))

    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == str(version)  # MLflow returns int or str by client path
    assert champion.run_id == run.info.run_id
    assert client.get_run(run.info.run_id).data.metrics["average_precision"] == 0.71
    # The artifact went through the server's proxy and comes back by alias.
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    assert model.predict(pd.DataFrame({"x": [1.0, 2.5]}))["x"].tolist() == [2.0, 5.0]
    assert any((mlflow_server.home / "artifacts").rglob("MLmodel"))

    # And it all sits in the PostgreSQL database, not in some local SQLite file.
    assert query(database, "select name, version from model_versions") == [(MODEL, 1)]
    assert query(database, "select name, alias, version from registered_model_aliases") == [
        (MODEL, "champion", 1)
    ]
    assert ("average_precision",) in query(database, "select key from metrics")


def test_training_registers_its_logged_model_through_the_server(server, make_settings, tmp_path):
    """``register_version`` (the train_model DAG's register step) with an MLflow 3 logged
    model's ``models:/m-<id>`` URI: the server refuses that source without its model id."""
    import mlflow
    import mlflow.pyfunc

    from pipelines.registry.versions import register_version

    mlflow_server, database = server
    settings = make_settings(
        mlflow_tracking_uri=mlflow_server.url, model_name="fraud-detector-registertest"
    )
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    try:
        mlflow.set_tracking_uri(mlflow_server.url)
        with mlflow.start_run() as run:
            info = mlflow.pyfunc.log_model(
                name="model", python_model=Doubler(), pip_requirements=["mlflow"]
            )
        assert info.model_uri.startswith("models:/m-")
        version = register_version(settings, info.model_uri, run.info.run_id, {"why": "test"})
        # A retried task gets the same version back, not a duplicate.
        assert register_version(settings, info.model_uri, run.info.run_id, {}) == version
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    rows = query(
        database,
        "select version from model_versions where name = 'fraud-detector-registertest'",
    )
    assert rows == [(int(version),)]


def test_the_compose_healthcheck_passes_natively(server):
    mlflow_server, _ = server
    ok = CliRunner().invoke(services_app, ["http-ok", f"{mlflow_server.url}/health"])
    assert ok.exit_code == 0, ok.output
    closed = CliRunner().invoke(services_app, ["http-ok", f"http://127.0.0.1:{free_port()}/"])
    assert closed.exit_code == 1


def test_down_stops_the_server(server):
    mlflow_server, _ = server
    pid = mlflow_server.process().pid()
    assert pid is not None
    assert mlflow_server.down()
    assert mlflow_server.process().pid() is None
