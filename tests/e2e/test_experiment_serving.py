"""A/B, shadow and registry outage against a real ``bentoml serve`` process.

Same world as ``test_serving.py`` (its fixture builds a fresh one for this module): real Feast
online store, real MLflow registry with two tiny torch models, ``champion`` and ``challenger``.
"""

from __future__ import annotations

import time

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.experiment.assignment import CONTROL, TREATMENT, assign
from pipelines.platform.mlflow import MlflowServer
from tests.conftest import free_port
from tests.e2e.test_serving import MAX_BATCH, _register, _tx, serve

# The module-scoped world fixture, re-exported so pytest finds it here (a fresh world).
from tests.e2e.test_serving import world as world

SHARE = 0.5


@pytest.fixture(scope="module")
def challenger(world) -> str:
    import mlflow

    settings = world["settings"]
    version = _register(settings, world["frame"], world["inputs"], scale=3.0)
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    client.set_registered_model_alias(settings.model_name, "challenger", version)
    return version


def _one_per_customer(mart: pd.DataFrame, first_id: int, n: int = 60) -> list[dict]:
    """``n`` transactions of distinct known customers (the unit of assignment)."""
    rows = mart.drop_duplicates("customer_id", keep="last").tail(n)
    txs = []
    for i, (_, row) in enumerate(rows.iterrows()):
        tx = _tx(mart, transaction_id=first_id + i)
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
    deadline = time.monotonic() + timeout
    while True:
        files = [str(p) for p in settings.predictions_dir.rglob("*.parquet")]
        if files:
            frame = pq.read_table(files).to_pandas()  # one schema for every part
            frame = frame[frame.transaction_id.isin(ids)]
            if set(frame.transaction_id) >= ids or time.monotonic() > deadline:
                return frame
        elif time.monotonic() > deadline:
            raise AssertionError("nothing logged")
        time.sleep(0.5)


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


def test_shadow_logs_both_scores_and_answers_like_the_champion_alone(world, challenger):
    settings = world["settings"]
    with serve(world["env"]) as plain:
        assert httpx.post(f"{plain.url}/model_info", json={}).json()["challenger_version"] is None
        alone = _score_all(plain.url, _one_per_customer(world["mart"], 820_000))
    with serve({**world["env"], "FRAUD_EXPERIMENT_MODE": "shadow"}) as srv:
        info = httpx.post(f"{srv.url}/model_info", json={}, timeout=10).json()
        assert (info["experiment_mode"], info["challenger_version"]) == ("shadow", challenger)
        txs = _one_per_customer(world["mart"], 830_000)
        shadowed = _score_all(srv.url, txs)

    def answer(s: dict) -> dict:
        return {k: v for k, v in s.items() if k != "transaction_id"}

    assert [answer(s) for s in shadowed] == [answer(s) for s in alone]
    assert {s["model_version"] for s in shadowed} == {"1"}
    log = _logged(settings, {t["transaction_id"] for t in txs})
    assert len(log) == len(txs)
    assert (log.shadow_model_version == challenger).all() and log.shadow_probability.notna().all()
    assert (log.variant == CONTROL).all() and (log.model_version == "1").all()
    # The challenger really scored: its scores are not the champion's.
    assert (log.shadow_probability - log.fraud_probability).abs().max() > 1e-3
    assert (log.shadow_latency_ms > 0).all()
    plain_log = _logged(settings, {820_000 + i for i in range(len(alone))})
    assert plain_log.shadow_probability.isna().all()


def test_registry_unreachable_keeps_serving_and_reports_degraded(world, challenger, tmp_path):
    """The registry behind an MLflow server that goes down while the service runs."""
    settings = world["settings"]
    registry = MlflowServer(
        home=tmp_path,
        backend_store_uri=settings.tracking_uri,
        artifacts_destination=str(tmp_path / "artifacts"),
        port=free_port(),
    )
    registry.up()
    try:
        env = {
            **world["env"],
            "FRAUD_MLFLOW_TRACKING_URI": registry.url,
            "FRAUD_EXPERIMENT_MODE": "shadow",
        }
        with serve(env) as srv:
            info = httpx.post(f"{srv.url}/reload", json={}, timeout=60).json()
            assert (info["status"], info["registry_status"]) == ("ok", "ok"), info
            assert info["challenger_version"] == challenger
            body = {"transactions": [_tx(world["mart"], transaction_id=840_000)]}
            before = httpx.post(f"{srv.url}/score", json=body, timeout=30).json()

            registry.down()
            started = time.monotonic()
            info = httpx.post(f"{srv.url}/reload", json={}, timeout=60).json()
            reload_seconds = time.monotonic() - started
            assert (info["status"], info["registry_status"]) == ("degraded", "unreachable"), info
            assert "alias lookup failed" in info["last_reload_error"]
            # Both models stay loaded: still scoring, still shadowing, still ready.
            assert (info["version"], info["challenger_version"]) == ("1", challenger)
            assert reload_seconds < 30, f"reload took {reload_seconds:.1f}s with the registry down"
            after = httpx.post(f"{srv.url}/score", json=body, timeout=30)
            assert after.status_code == 200 and after.json() == before
            assert httpx.get(f"{srv.url}/readyz", timeout=5).status_code == 200
            status = httpx.post(f"{srv.url}/model_info", json={}, timeout=10).json()["status"]
            assert status == "degraded"

            registry.up()  # back: the next check clears the degraded state
            info = httpx.post(f"{srv.url}/reload", json={}, timeout=60).json()
            assert (info["status"], info["registry_status"]) == ("ok", "ok"), info
    finally:
        registry.down()
