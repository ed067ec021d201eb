"""The scoring API as a client sees it: a real ``bentoml serve`` process, real Feast online
store, real MLflow registry (SQLite), over HTTP.

The world and the server are the e2e package's (``tests/e2e/serving_world.py``): a copy of the
shared world with small registered models, one server shared with the experiment tests.
"""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.featurestore import store
from tests.e2e.serving_world import MAX_BATCH, register_model, serve, transaction
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("serving_env")


@pytest.fixture
def world(serving_world) -> dict:
    return serving_world


@pytest.fixture
def server(scoring_server):
    return scoring_server


@pytest.fixture
def champion_restored(world, server):
    """Put version 1 back as the champion after a test that moves the alias."""
    yield
    import mlflow

    settings = world["settings"]
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    client.set_registered_model_alias(settings.model_name, "champion", "1")
    assert httpx.post(f"{server.url}/reload", json={}, timeout=60).json()["version"] == "1"


def test_score_one_and_many(server, world):
    batch = [transaction(world["mart"], i) for i in range(3)]
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
        json={"transactions": [transaction(world["mart"])], "explain": True},
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
    tx = transaction(world["mart"])
    if "drop" in change:
        del tx[change["drop"]]
    else:
        tx.update(change)
    r = httpx.post(f"{server.url}/score", json={"transactions": [tx]}, timeout=10)
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    assert field in r.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_non_finite_amount_is_refused(server, world, literal):
    body = json.dumps({"transactions": [transaction(world["mart"], tx_amount=0.5)]})
    body = body.replace('"tx_amount": 0.5', f'"tx_amount": {literal}')
    assert literal in body
    r = httpx.post(
        f"{server.url}/score", content=body, headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500 and "tx_amount" in r.text, r.text


@pytest.mark.parametrize("size", [0, MAX_BATCH + 1])
def test_empty_or_oversized_batch_is_refused(server, world, size):
    batch = [transaction(world["mart"], i) for i in range(size)]
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
    tx = transaction(world["mart"], customer_id=10**9, terminal_id=10**9)
    r = httpx.post(f"{server.url}/score", json={"transactions": [tx]}, timeout=10)
    assert r.status_code == 200, r.text
    s = r.json()[0]
    assert s["unknown_customer"] is True and s["unknown_terminal"] is True
    assert s["feature_age_seconds"] is None
    assert 0 <= s["fraud_probability"] <= 1


def test_every_scored_transaction_reaches_the_prediction_log(server, world):
    ids = list(range(700_000, 700_004))
    batch = [transaction(world["mart"], i, transaction_id=tid) for i, tid in enumerate(ids)]
    assert httpx.post(f"{server.url}/score", json={"transactions": batch}).status_code == 200
    folder = world["settings"].predictions_dir

    def all_logged() -> bool:
        files = list(folder.rglob("*.parquet"))
        logged = pq.read_table(files).column("transaction_id").to_pylist() if files else []
        return set(ids) <= set(logged)

    wait_for("the batch in the prediction log", all_logged, timeout=20, interval=0.5)
    log = pq.read_table(list(folder.rglob("*.parquet"))).to_pandas()
    row = log[log.transaction_id == ids[0]].iloc[0]
    assert row.model_version == "1" and "feature_customer_nb_tx_1d_now" in log.columns


@pytest.mark.usefixtures("champion_restored")
def test_champion_hot_swap_and_refusal_of_a_broken_version(server, world):
    import mlflow

    settings = world["settings"]
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    v2 = register_model(settings, world["frame"], world["inputs"], scale=2.0)
    client.set_registered_model_alias(settings.model_name, "champion", v2)
    info = httpx.post(f"{server.url}/reload", json={}, timeout=60).json()
    assert info.get("version") == v2, (info, server.tail())
    scored = httpx.post(f"{server.url}/score", json={"transactions": [transaction(world["mart"])]})
    assert scored.json()[0]["model_version"] == v2

    # A version whose tags do not say what it eats is refused; v2 keeps serving.
    v3 = register_model(settings, world["frame"], world["inputs"], scale=1.0)
    client.delete_model_version_tag(settings.model_name, v3, "model_inputs")
    client.set_registered_model_alias(settings.model_name, "champion", v3)
    info = httpx.post(f"{server.url}/reload", json={}, timeout=60).json()
    assert info["version"] == v2
    assert f"version {v3} refused" in info["last_reload_error"]
    scored = httpx.post(f"{server.url}/score", json={"transactions": [transaction(world["mart"])]})
    assert scored.status_code == 200 and scored.json()[0]["model_version"] == v2
    client.set_registered_model_alias(settings.model_name, "champion", "1")
    assert httpx.post(f"{server.url}/reload", json={}, timeout=60).json()["version"] == "1"


def test_api_key_when_configured(world):
    with serve({**world["env"], "FRAUD_SERVING_API_KEY": "s3cret"}) as srv:
        body = {"transactions": [transaction(world["mart"])]}
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


def test_served_score_equals_the_offline_score_for_the_same_state(server, world):
    """Online (Feast online store) and offline (historical retrieval) paths agree exactly."""
    from serving.model import load_champion

    settings, mart = world["settings"], world["mart"]
    httpx.post(f"{server.url}/reload", json={}, timeout=60)
    # A card the other tests never paid with: every scored payment joins its card's state.
    touched = set(mart.tail(100).customer_id)
    last = mart[~mart.customer_id.isin(touched)].iloc[-1]
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


@pytest.mark.usefixtures("champion_restored")
def test_hot_swap_under_concurrent_requests_fails_no_request(server, world):
    import concurrent.futures as cf
    import threading

    import mlflow

    settings = world["settings"]
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    before = httpx.post(f"{server.url}/model_info", json={}).json()["version"]
    new = register_model(settings, world["frame"], world["inputs"], scale=3.0)
    stop = threading.Event()
    seen: list[list[tuple[int, str]]] = [[] for _ in range(4)]  # per client, in order

    def hammer(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/score", json={"transactions": [transaction(world["mart"], worker)]})
                answer = r.json()[0]["model_version"] if r.is_success else ""
                seen[worker].append((r.status_code, answer))

    def answered_by(version: str, since: list[int]) -> bool:
        return all(any(v == version for _, v in s[n:]) for s, n in zip(seen, since, strict=True))

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer, i) for i in range(4)]
        wait_for(
            "every client served by the old version",
            lambda: answered_by(before, [0] * 4),
            timeout=60,
            interval=0.05,
        )
        client.set_registered_model_alias(settings.model_name, "champion", new)
        assert httpx.post(f"{server.url}/reload", json={}, timeout=60).json()["version"] == new
        swapped = [len(s) for s in seen]
        wait_for(
            "every client served by the new version",
            lambda: answered_by(new, swapped),
            timeout=60,
            interval=0.05,
        )
        stop.set()
        for future in futures:
            future.result()
    results = [item for s in seen for item in s]
    assert all(status == 200 for status, _ in results), {s for s, _ in results}
    # Each client sends its next request after the previous answer: once the new version
    # answered a client, the old one never answers it again.
    for answers in seen:
        versions = [v for _, v in answers]
        assert before not in versions[versions.index(new) :]
