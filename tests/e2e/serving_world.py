"""The world of the scoring-API tests: a copy of the shared world with small models registered.

The models are small networks fitted here on the Feast training features, logged and
registered through MLflow with the tags serving relies on (the real training path has its own
tests, and the full loop serves the champion it trains). Version 1 is the ``champion``; tests
that move the alias put it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from pipelines.config import Settings
from pipelines.featurestore import store
from pipelines.platform.scoring import SERVICE, BentoProcess
from pipelines.transform.mart import read_export
from tests.worlds import world_copy

MAX_BATCH = 5
ENV = {
    "FRAUD_MAX_BATCH_SIZE": str(MAX_BATCH),
    "FRAUD_MODEL_POLL_SECONDS": "3600",  # swaps in these tests come from /reload
    "FRAUD_PREDICTION_LOG_FLUSH_SECONDS": "0.5",
}


def register_model(settings: Settings, frame: pd.DataFrame, inputs: list[str], scale: float) -> str:
    """Fit a tiny torch model, log and register it, return its version."""
    import mlflow
    import torch

    torch.manual_seed(0)
    x = torch.tensor(frame[inputs].fillna(0).to_numpy(), dtype=torch.float32)
    mean, std = x.mean(0), x.std(0) + 1e-6
    y = torch.tensor(frame["tx_fraud"].to_numpy(), dtype=torch.float32)
    net = torch.nn.Linear(len(inputs), 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net((x - mean) / std).squeeze(1) * scale, y
        )
        loss.backward()
        opt.step()

    class Scorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.mean, self.std, self.scale = net, mean, std, scale

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            z = torch.nan_to_num((inputs - self.mean) / self.std)
            return torch.sigmoid(self.net(z) * self.scale)

    from pipelines.registry import tracking

    # tracking.client sets both process-wide URIs (an earlier test may have pointed them
    # elsewhere; log_model follows the globals); the project's experiment keeps the artifacts
    # under the home, not in ./mlruns of the working directory.
    client = tracking.client(settings)
    with mlflow.start_run(experiment_id=tracking.experiment_id(settings)):
        info = mlflow.pytorch.log_model(
            Scorer(),
            name="model",
            pip_requirements=["torch"],
            serialization_format="pickle",
            registered_model_name=settings.model_name,
        )
    version = str(info.registered_model_version)
    client.set_model_version_tag(settings.model_name, version, "model_inputs", json.dumps(inputs))
    client.set_model_version_tag(
        settings.model_name, version, "feature_service", store.FEATURE_SERVICE
    )
    client.set_model_version_tag(settings.model_name, version, "metric.average_precision", "0.5")
    baseline = {c: float(frame[c].median()) for c in inputs}
    client.set_model_version_tag(
        settings.model_name, version, "input_baseline", json.dumps(baseline)
    )
    return version


def build_serving_world(shared_world: Path, home: Path) -> dict:
    """Copy the shared world to ``home``, load its online store, register version 1 as the
    champion; returns what the tests use: settings, the environment of the servers, the
    labelled training frame, the model inputs and the mart."""
    import mlflow

    extra = {**ENV, "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(home / "bentoml")}
    with world_copy(shared_world, home, **extra) as settings:
        store.materialize_latest(settings)
        mart = read_export(settings)
        labelled = mart[mart.tx_fraud.notna()]
        features = store.historical_features(settings, store.training_entities(labelled))
        frame = features.merge(labelled[["transaction_id", "tx_fraud"]], on="transaction_id")
        service = store.get_store(settings).get_feature_service(store.FEATURE_SERVICE)
        names = [f.name for p in service.feature_view_projections for f in p.features]
        inputs = ["tx_amount", *names]
        version = register_model(settings, frame, inputs, scale=1.0)
        mlflow.MlflowClient(
            settings.tracking_uri, settings.tracking_uri
        ).set_registered_model_alias(settings.model_name, "champion", version)
        return {
            "settings": settings,
            "env": {**os.environ},
            "frame": frame,
            "inputs": inputs,
            "mart": mart,
        }


def serve(env: dict[str, str]) -> BentoProcess:
    """The scoring service as a real ``bentoml serve`` process, ready."""
    return BentoProcess(SERVICE, env, Path(env["FRAUD_HOME"]) / "logs")


def transaction(mart: pd.DataFrame, i: int = 0, **changes) -> dict:
    """A request for the ``i``-th newest customer and terminal of the mart, five minutes after
    that transaction; ``changes`` override fields."""
    row = mart.iloc[-1 - i]
    tx = {
        "transaction_id": 900_000 + i,
        "customer_id": int(row.customer_id),
        "terminal_id": int(row.terminal_id),
        "tx_amount": 42.5,
        "tx_datetime": (row.tx_datetime + pd.Timedelta(minutes=5)).isoformat(),
    }
    tx.update(changes)
    return tx
