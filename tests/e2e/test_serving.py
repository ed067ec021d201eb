"""The scoring API as a client sees it: a real ``bentoml serve`` process, real Feast online
store, real MLflow registry (SQLite), over HTTP.

The model is a small network fitted here on the Feast training features of a tiny world, logged
and registered through MLflow with the tags serving relies on; the full training pipeline has
its own tests.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings, load_settings
from pipelines.features.build import build_features
from pipelines.featurestore import store
from pipelines.ingest.simulated import ingest_simulated_days
from pipelines.platform.scoring import SERVICE, BentoProcess
from pipelines.transform.dbt import mart_file

FIRST_DAY = dt.date(2018, 4, 1)
N_DAYS = 30
MAX_BATCH = 5


def _register(settings: Settings, frame: pd.DataFrame, inputs: list[str], scale: float) -> str:
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

    from pipelines.training import tracking

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


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("serving")
    env = {
        "FRAUD_HOME": str(home),
        "FRAUD_N_CUSTOMERS": "200",
        "FRAUD_N_TERMINALS": "400",
        "FRAUD_HISTORY_START": FIRST_DAY.isoformat(),
        "FRAUD_MAX_BATCH_SIZE": str(MAX_BATCH),
        "FRAUD_MODEL_POLL_SECONDS": "3600",  # swaps in these tests come from /reload
        "FRAUD_PREDICTION_LOG_FLUSH_SECONDS": "0.5",
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_HOME": str(home / "bentoml"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        settings = load_settings()
        ingest_simulated_days(FIRST_DAY, FIRST_DAY + dt.timedelta(days=N_DAYS - 1), settings)
        build_features(settings)
        mart = pq.read_table(mart_file(settings)).to_pandas()
        labelled = mart[mart.tx_fraud.notna()]
        features = store.historical_features(settings, store.training_entities(labelled))
        frame = features.merge(labelled[["transaction_id", "tx_fraud"]], on="transaction_id")
        fs = store.get_store(settings)
        service = fs.get_feature_service(store.FEATURE_SERVICE)
        names = [f.name for p in service.feature_view_projections for f in p.features]
        inputs = ["tx_amount", *names]
        version = _register(settings, frame, inputs, scale=1.0)
        import mlflow

        mlflow.MlflowClient(
            settings.tracking_uri, settings.tracking_uri
        ).set_registered_model_alias(settings.model_name, "champion", version)
        yield {
            "settings": settings,
            "env": {**os.environ},
            "frame": frame,
            "inputs": inputs,
            "mart": mart,
        }


def serve(env: dict[str, str]) -> BentoProcess:
    """The scoring service as a real ``bentoml serve`` process, ready."""
    return BentoProcess(SERVICE, env, Path(env["FRAUD_HOME"]) / "logs")


@pytest.fixture(scope="module")
def server(world):
    with serve(world["env"]) as srv:
        yield srv


def _tx(mart: pd.DataFrame, i: int = 0, **changes) -> dict:
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


def test_score_one_and_many(server, world):
    batch = [_tx(world["mart"], i) for i in range(3)]
    r = httpx.post(f"{server.url}/score", json={"transactions": batch}, timeout=30)
    assert r.status_code == 200, r.text
    scores = r.json()
    assert [s["transaction_id"] for s in scores] == [t["transaction_id"] for t in batch]
    for s in scores:
        assert 0 <= s["fraud_probability"] <= 1
        assert s["decision"] in ("approve", "review", "block")
        assert s["model_name"] == world["settings"].model_name and s["model_version"] == "1"
        assert s["unknown_customer"] is False and s["feature_age_seconds"] is not None


def test_explain_names_the_top_features(server, world):
    r = httpx.post(
        f"{server.url}/score",
        json={"transactions": [_tx(world["mart"])], "explain": True},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    explanation = r.json()[0]["explanation"]
    assert 1 <= len(explanation) <= 5
    assert set(explanation) <= set(world["inputs"])
    magnitudes = [abs(v) for v in explanation.values()]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_model_info(server, world):
    r = httpx.post(f"{server.url}/model_info", json={}, timeout=10)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["name"] == world["settings"].model_name
    assert (info["version"], info["alias"]) == ("1", "champion")
    assert info["feature_service"] == store.FEATURE_SERVICE
    assert info["metrics"] == {"average_precision": 0.5}
    assert info["registry_status"] == "ok"


def test_framework_health_and_metrics_endpoints(server):
    assert httpx.get(f"{server.url}/livez", timeout=5).status_code == 200
    assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", timeout=5)
    assert metrics.status_code == 200 and "bentoml_service_request" in metrics.text


FUTURE = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).isoformat()
BAD_INPUTS = {
    "missing field": ({"drop": "customer_id"}, "customer_id"),
    "wrong type": ({"terminal_id": "abc"}, "terminal_id"),
    "negative amount": ({"tx_amount": -1}, "tx_amount"),
    "unparseable time": ({"tx_datetime": "yesterday at noon"}, "tx_datetime"),
    "far-future time": ({"tx_datetime": FUTURE}, "tx_datetime"),
    "unknown field": ({"merchant": "x"}, "merchant"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_invalid_transaction_is_a_4xx_naming_the_field(server, world, case):
    change, field = BAD_INPUTS[case]
    tx = _tx(world["mart"])
    if "drop" in change:
        del tx[change["drop"]]
    else:
        tx.update(change)
    r = httpx.post(f"{server.url}/score", json={"transactions": [tx]}, timeout=10)
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    assert field in r.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_non_finite_amount_is_refused(server, world, literal):
    body = json.dumps({"transactions": [_tx(world["mart"], tx_amount=0.5)]})
    body = body.replace('"tx_amount": 0.5', f'"tx_amount": {literal}')
    assert literal in body
    r = httpx.post(
        f"{server.url}/score", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500 and "tx_amount" in r.text, r.text


@pytest.mark.parametrize("size", [0, MAX_BATCH + 1])
def test_empty_or_oversized_batch_is_refused(server, world, size):
    batch = [_tx(world["mart"], i) for i in range(size)]
    r = httpx.post(f"{server.url}/score", json={"transactions": batch}, timeout=10)
    assert 400 <= r.status_code < 500 and "transactions" in r.text, r.text


def test_malformed_json_and_huge_body_are_4xx(server):
    r = httpx.post(
        f"{server.url}/score", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500
    r = httpx.post(
        f"{server.url}/score",
        content=b'{"transactions": [' + b" " * 10_000_000 + b"]}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and "request body" in r.text


def test_unknown_customer_and_terminal_get_defaults_and_flags(server, world):
    tx = _tx(world["mart"], customer_id=10**9, terminal_id=10**9)
    r = httpx.post(f"{server.url}/score", json={"transactions": [tx]}, timeout=10)
    assert r.status_code == 200, r.text
    s = r.json()[0]
    assert s["unknown_customer"] is True and s["unknown_terminal"] is True
    assert s["feature_age_seconds"] is None
    assert 0 <= s["fraud_probability"] <= 1


def test_every_scored_transaction_reaches_the_prediction_log(server, world):
    ids = list(range(700_000, 700_004))
    batch = [_tx(world["mart"], i, transaction_id=tid) for i, tid in enumerate(ids)]
    assert httpx.post(f"{server.url}/score", json={"transactions": batch}).status_code == 200
    folder = world["settings"].predictions_dir
    deadline = time.monotonic() + 20
    logged: set[int] = set()
    while time.monotonic() < deadline and not set(ids) <= logged:
        files = list(folder.rglob("*.parquet"))
        if files:
            logged = set(pq.read_table(files).column("transaction_id").to_pylist())
        time.sleep(0.5)
    assert set(ids) <= logged
    log = pq.read_table(list(folder.rglob("*.parquet"))).to_pandas()
    row = log[log.transaction_id == ids[0]].iloc[0]
    assert row.model_version == "1" and "feature_customer_nb_tx_1d_now" in log.columns


def test_champion_hot_swap_and_refusal_of_a_broken_version(server, world):
    import mlflow

    settings = world["settings"]
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    v2 = _register(settings, world["frame"], world["inputs"], scale=2.0)
    client.set_registered_model_alias(settings.model_name, "champion", v2)
    info = httpx.post(f"{server.url}/reload", json={}, timeout=60).json()
    assert info.get("version") == v2, (info, server.tail())
    scored = httpx.post(f"{server.url}/score", json={"transactions": [_tx(world["mart"])]})
    assert scored.json()[0]["model_version"] == v2

    # A version whose tags do not say what it eats is refused; v2 keeps serving.
    v3 = _register(settings, world["frame"], world["inputs"], scale=1.0)
    client.delete_model_version_tag(settings.model_name, v3, "model_inputs")
    client.set_registered_model_alias(settings.model_name, "champion", v3)
    info = httpx.post(f"{server.url}/reload", json={}, timeout=60).json()
    assert info["version"] == v2
    assert f"version {v3} refused" in info["last_reload_error"]
    scored = httpx.post(f"{server.url}/score", json={"transactions": [_tx(world["mart"])]})
    assert scored.status_code == 200 and scored.json()[0]["model_version"] == v2
    client.set_registered_model_alias(settings.model_name, "champion", "1")
    assert httpx.post(f"{server.url}/reload", json={}, timeout=60).json()["version"] == "1"


def test_api_key_when_configured(world):
    with serve({**world["env"], "FRAUD_SERVING_API_KEY": "s3cret"}) as srv:
        body = {"transactions": [_tx(world["mart"])]}
        assert httpx.post(f"{srv.url}/score", json=body).status_code == 401
        wrong = httpx.post(f"{srv.url}/score", json=body, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401 and "X-API-Key" in wrong.text
        ok = httpx.post(f"{srv.url}/score", json=body, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200, ok.text
        assert httpx.get(f"{srv.url}/readyz").status_code == 200  # probes need no key


def test_batch_scoring_writes_a_whole_day_idempotently(world):
    from serving.batch import score_day

    settings = world["settings"]
    mart = world["mart"]
    day = mart.tx_date.iloc[-1]
    first = score_day(settings, day)
    assert first.rows == int((mart.tx_date == day).sum()) > 0
    table = pq.read_table(first.path).to_pandas()
    assert set(table.transaction_id) == set(mart[mart.tx_date == day].transaction_id)
    assert table.fraud_probability.between(0, 1).all()
    high = table.fraud_probability >= settings.block_threshold
    assert (table.decision[high] == "block").all()
    again = score_day(settings, day)
    assert again.path == first.path
    rescored = pq.read_table(again.path).to_pandas()
    pd.testing.assert_series_equal(rescored.fraud_probability, table.fraud_probability)


def test_deploy_builds_smoke_tests_and_switches_the_running_service(server, world, monkeypatch):
    import mlflow

    from serving.deploy import build_bento, smoke_test_bento, switch_running_service

    settings = world["settings"]
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    version = str(client.get_model_version_by_alias(settings.model_name, "champion").version)
    tag = build_bento(version)
    assert tag.endswith(f"model-v{version}")
    score = smoke_test_bento(tag, _tx(world["mart"]))
    assert score["model_version"] == version
    monkeypatch.setenv("FRAUD_SERVING_PORT", str(server.port))
    info = switch_running_service(load_settings())
    assert info is not None and info["version"] == version


def test_served_score_equals_the_offline_score_for_the_same_state(server, world):
    """Online (Feast online store) and offline (historical retrieval) paths agree exactly."""
    from serving.model import load_champion

    settings, mart = world["settings"], world["mart"]
    httpx.post(f"{server.url}/reload", json={}, timeout=60)
    last = mart.iloc[-1]
    when = mart.tx_datetime.max() + pd.Timedelta(minutes=5)  # after every materialized row
    tx = {
        "transaction_id": 123_456,
        "customer_id": int(last.customer_id),
        "terminal_id": int(last.terminal_id),
        "tx_amount": 77.7,
        "tx_datetime": when.isoformat(),
    }
    served = httpx.post(f"{server.url}/score", json={"transactions": [tx]}).json()[0]

    model = load_champion(settings.tracking_uri, settings.model_name)
    assert served["model_version"] == model.version
    request = pd.DataFrame([{**tx, "tx_datetime": when}])
    offline = store.historical_features(
        settings, store.training_entities(request), model.feature_service
    )
    offline_score = model.predict(offline[model.inputs].astype("float64"))[0]
    assert served["fraud_probability"] == pytest.approx(offline_score, abs=1e-6)


def test_hot_swap_under_concurrent_requests_fails_no_request(server, world):
    import concurrent.futures as cf
    import threading

    import mlflow

    settings = world["settings"]
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    before = httpx.post(f"{server.url}/model_info", json={}).json()["version"]
    new = _register(settings, world["frame"], world["inputs"], scale=3.0)
    stop = threading.Event()

    def hammer(worker: int) -> list[tuple[int, str]]:
        seen = []
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/score", json={"transactions": [_tx(world["mart"], worker)]})
                seen.append((r.status_code, r.json()[0]["model_version"] if r.is_success else ""))
        return seen

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer, i) for i in range(4)]
        time.sleep(1)
        client.set_registered_model_alias(settings.model_name, "champion", new)
        assert httpx.post(f"{server.url}/reload", json={}, timeout=60).json()["version"] == new
        time.sleep(1)
        stop.set()
        results = [item for f in futures for item in f.result()]
    assert all(status == 200 for status, _ in results), {s for s, _ in results}
    versions = [v for _, v in results]
    assert {before, new} <= set(versions)
    # Once the new version answered, the old one never came back.
    assert before not in versions[versions.index(new) :] or len(futures) > 1
