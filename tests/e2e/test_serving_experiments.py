"""A/B, shadow and registry outage against a real ``bentoml serve`` process.

The serving world of ``test_serving.py`` (``tests/e2e/serving_world.py``): real Feast online
store, real MLflow registry with two small torch models, ``champion`` and ``challenger``. The
shadow server reads the registry through an MLflow server, which the outage test stops.
"""

from __future__ import annotations

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.experiment.assignment import CONTROL, TREATMENT, assign
from pipelines.platform.mlflow import MlflowServer
from tests.conftest import free_port
from tests.e2e.serving_world import MAX_BATCH, register_model, serve, transaction
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("serving_env")
SHARE = 0.5


@pytest.fixture
def world(serving_world) -> dict:
    return serving_world


@pytest.fixture(scope="module")
def challenger(serving_world) -> str:
    import mlflow

    settings = serving_world["settings"]
    version = register_model(settings, serving_world["frame"], serving_world["inputs"], scale=3.0)
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    client.set_registered_model_alias(settings.model_name, "challenger", version)
    yield version
    client.delete_registered_model_alias(settings.model_name, "challenger")


@pytest.fixture(scope="module")
def registry(serving_world, tmp_path_factory) -> MlflowServer:
    """An MLflow server over the serving world's registry."""
    home = tmp_path_factory.mktemp("registry")
    server = MlflowServer(
        home=home,
        backend_store_uri=serving_world["settings"].tracking_uri,
        artifacts_destination=str(home / "artifacts"),
        port=free_port(),
    )
    try:
        server.up()
        yield server
    finally:
        server.down()


@pytest.fixture(scope="module")
def shadow(serving_world, challenger, registry):
    """The service in shadow mode, reading the registry through the MLflow server."""
    env = {
        **serving_world["env"],
        "FRAUD_MLFLOW_TRACKING_URI": registry.url,
        "FRAUD_EXPERIMENT_MODE": "shadow",
    }
    with serve(env) as server:
        yield server


def _one_per_customer(mart: pd.DataFrame, first_id: int, n: int = 60) -> list[dict]:
    """``n`` transactions of distinct known customers (the unit of assignment)."""
    rows = mart.drop_duplicates("customer_id", keep="last").tail(n)
    txs = []
    for i, (_, row) in enumerate(rows.iterrows()):
        tx = transaction(mart, transaction_id=first_id + i)
        tx.update(customer_id=int(row.customer_id), terminal_id=int(row.terminal_id))
        txs.append(tx)
    return txs


def _score_all(url: str, txs: list[dict]) -> list[dict]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(txs), MAX_BATCH):
            r = client.post("/score", json={"transactions": txs[start : start + MAX_BATCH]})
            assert r.status_code == 200, r.text
            out += r.json()
    return out


def _logged(settings, ids: set[int], timeout: float = 20) -> pd.DataFrame:
    """The prediction-log rows of ``ids``, once all of them are there."""

    def rows() -> pd.DataFrame | None:
        files = [str(p) for p in settings.predictions_dir.rglob("*.parquet")]
        if not files:
            return None
        frame = pq.read_table(files).to_pandas()  # one schema for every part
        frame = frame[frame.transaction_id.isin(ids)]
        return frame if set(frame.transaction_id) >= ids else None

    return wait_for(f"{len(ids)} transactions in the prediction log", rows, timeout, 0.5)


def test_ab_routes_the_treatment_bucket_to_the_challenger(world, challenger):
    settings = world["settings"]
    env = {
        **world["env"],
        "FRAUD_EXPERIMENT_MODE": "ab",
        "FRAUD_EXPERIMENT_TREATMENT_SHARE": str(SHARE),
    }
    with serve(env) as srv:
        info = httpx.post(f"{srv.url}/model_info", json={}, timeout=10).json()
        assert info["experiment_mode"] == "ab" and info["treatment_share"] == SHARE
        assert (info["version"], info["challenger_version"]) == ("1", challenger)
        txs = _one_per_customer(world["mart"], 810_000)
        scores = _score_all(srv.url, txs)
    expected = [assign(t["customer_id"], settings.experiment_salt, SHARE) for t in txs]
    assert {CONTROL, TREATMENT} <= set(expected)  # both arms are exercised
    assert [s["variant"] for s in scores] == expected
    for s, variant in zip(scores, expected, strict=True):
        assert s["model_version"] == (challenger if variant == TREATMENT else "1")
    log = _logged(settings, {t["transaction_id"] for t in txs}).set_index("transaction_id")
    for t, variant in zip(txs, expected, strict=True):
        row = log.loc[t["transaction_id"]]
        assert row.variant == variant
        assert row.model_version == (challenger if variant == TREATMENT else "1")
        assert row.latency_ms > 0 and not row.challenger_failed


def test_shadow_logs_both_scores_and_answers_like_the_champion_alone(
    world, challenger, scoring_server, shadow
):
    settings = world["settings"]
    plain = scoring_server  # the same world, no experiment
    assert httpx.post(f"{plain.url}/model_info", json={}).json()["challenger_version"] is None
    # The same payments to both servers: the second scoring of each is a retry, which sees the
    # card's state as the first did (every scored payment joins its card's state).
    txs = _one_per_customer(world["mart"], 830_000)
    alone = _score_all(plain.url, txs)
    info = httpx.post(f"{shadow.url}/model_info", json={}, timeout=10).json()
    assert (info["experiment_mode"], info["challenger_version"]) == ("shadow", challenger)
    shadowed = _score_all(shadow.url, txs)
    assert [s["model_version"] for s in shadowed] == ["1"] * len(txs)

    def answer(s: dict) -> dict:  # the state's age moved: the first scoring wrote the state
        return {k: v for k, v in s.items() if k != "feature_age_seconds"}

    assert [answer(s) for s in shadowed] == [answer(s) for s in alone]  # the champion decides

    def both_logged() -> pd.DataFrame | None:
        log = _logged(settings, {t["transaction_id"] for t in txs})
        return log if log.shadow_model_version.notna().sum() == len(txs) else None

    log = wait_for("the shadow server's rows in the prediction log", both_logged, 20, 0.5)
    plain_log = log[log.shadow_model_version.isna()]
    log = log[log.shadow_model_version.notna()]
    assert len(log) == len(plain_log) == len(txs)
    assert (log.shadow_model_version == challenger).all() and log.shadow_probability.notna().all()
    assert (log.variant == CONTROL).all() and (log.model_version == "1").all()
    # The challenger really scored: its scores are not the champion's.
    assert (log.shadow_probability - log.fraud_probability).abs().max() > 1e-3
    assert (log.shadow_latency_ms > 0).all()
    assert plain_log.shadow_probability.isna().all()


def test_registry_unreachable_keeps_serving_and_reports_degraded(
    world, challenger, registry, shadow
):
    """The registry behind the MLflow server goes down while the service runs, then returns."""
    info = httpx.post(f"{shadow.url}/reload", json={}, timeout=60).json()
    assert (info["status"], info["registry_status"]) == ("ok", "ok"), info
    assert info["challenger_version"] == challenger
    body = {"transactions": [transaction(world["mart"], transaction_id=840_000)]}
    before = httpx.post(f"{shadow.url}/score", json=body, timeout=30).json()

    registry.down()
    # A reload that hung on the dead registry would time this request out.
    info = httpx.post(f"{shadow.url}/reload", json={}, timeout=60).json()
    assert (info["status"], info["registry_status"]) == ("degraded", "unreachable"), info
    assert "alias lookup failed" in info["last_reload_error"]
    # Both models stay loaded: still scoring, still shadowing, still ready.
    assert (info["version"], info["challenger_version"]) == ("1", challenger)
    after = httpx.post(f"{shadow.url}/score", json=body, timeout=30)
    assert after.status_code == 200 and after.json() == before
    assert httpx.get(f"{shadow.url}/readyz", timeout=5).status_code == 200
    status = httpx.post(f"{shadow.url}/model_info", json={}, timeout=10).json()["status"]
    assert status == "degraded"

    registry.up()  # back: the next check clears the degraded state
    info = httpx.post(f"{shadow.url}/reload", json={}, timeout=60).json()
    assert (info["status"], info["registry_status"]) == ("ok", "ok"), info
