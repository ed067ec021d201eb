"""The deployed artifact is the Bento: what the deploy builds and smoke-tests is what serves,
a deploy rolls the running service onto it without dropping or failing a request (an overload
refusal while the new workers load is retried, as the API documents), and the previous Bento
comes back on a rollback (rebuilt if it was pruned).

Real ``bentoml build``, real servers (``serving/serve.py`` as ``make up`` starts it), the
serving world's MLflow registry and Feast online store.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import httpx
import mlflow
import pytest

from pipelines.config import get_settings, load_settings
from pipelines.platform.scoring import ScoringService, deployed_bentos, running_server
from serving.bento import bento_tag
from serving.deploy import (
    build_bento,
    deploy,
    deploy_version,
    prune_bentos,
    smoke_test_bento,
)
from tests.conftest import free_port
from tests.e2e.serving_world import register_model, transaction
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("serving_env")


@pytest.fixture
def settings(serving_world, monkeypatch):
    monkeypatch.setenv("FRAUD_SERVING_PORT", str(free_port()))
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def scoring(settings, serving_world, scoring_server):
    """``make up``'s scoring service on the serving world; champion v1 again afterwards (the
    package's shared source-tree server follows the alias)."""
    service = ScoringService(settings)
    yield service
    service.down()
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    client.set_registered_model_alias(settings.model_name, "champion", "1")
    httpx.post(f"{scoring_server.url}/reload", json={}, timeout=60).raise_for_status()


def info(service: ScoringService) -> dict:
    r = httpx.post(f"{service.url}/model_info", json={}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_tested_bento_serves_and_a_deploy_rolls_onto_the_next_with_no_failed_request(
    settings, scoring, serving_world, monkeypatch
):
    mart = serving_world["mart"]
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)

    # Before any deploy `make up` holds the port from the source tree and serves nothing.
    assert scoring.up() == "serving.service:FraudScoringService"
    refused = httpx.post(f"{scoring.url}/score", json={"transactions": [transaction(mart)]})
    assert refused.status_code == 503 and "no Bento is deployed yet" in refused.text
    assert not scoring.ready()

    # The first deploy rolls the waiting workers onto the Bento of v1.
    first = build_bento(settings, "1")
    assert first == bento_tag("1")
    # Where clients need an API key (compose does), the Bento's server needs it from the
    # smoke test as well (the unkeyed smoke test runs on the next Bento).
    with monkeypatch.context() as keyed_env:
        keyed_env.setenv("FRAUD_SERVING_API_KEY", "smoke-key")
        keyed = load_settings()
        assert keyed.serving_api_key == "smoke-key"
        assert smoke_test_bento(keyed, first, transaction(mart))["model_version"] == "1"
    workers = deploy(settings, first)
    assert workers and {(w["version"], w["bento"]) for w in workers} == {("1", first)}
    assert len(workers) == settings.serving_workers
    assert (info(scoring)["bento"], info(scoring)["version"]) == (first, "1")

    # The Bento pins its version: the alias moving does not change what it serves.
    v2 = register_model(settings, serving_world["frame"], serving_world["inputs"], scale=3.0)
    client.set_registered_model_alias(settings.model_name, "champion", v2)
    reloaded = httpx.post(f"{scoring.url}/reload", json={}, timeout=60).json()
    assert (reloaded["bento"], reloaded["version"]) == (first, "1")
    second = build_bento(settings, v2)
    smoke_test_bento(settings, second, transaction(mart))

    # Four clients, 200 requests a second in all (the rate the service is sized for), keep
    # their connections open through the roll.
    stop = threading.Event()
    seen: list[list[tuple[int, str]]] = [[] for _ in range(4)]

    # A client as the API documents it: an overload refusal (503 with Retry-After) is retried
    # after its delay. While the new workers load, a busy machine may refuse a payment whose
    # batch waited too long; what must not happen is a dropped connection or any other error.
    refusals: list[str] = []

    def client(k: int) -> None:
        with httpx.Client(base_url=scoring.url, timeout=30) as c:
            while not stop.wait(0.02):
                payment = {"transactions": [transaction(mart, k)]}
                r = c.post("/score", json=payment)
                while r.status_code == 503 and r.json()["error"].startswith("overloaded"):
                    refusals.append(r.json()["error"])
                    time.sleep(float(r.headers["Retry-After"]))
                    r = c.post("/score", json=payment)
                version = r.json()[0]["model_version"] if r.is_success else r.text
                seen[k].append((r.status_code, version))

    def all_answered_since(counts: list[int]) -> bool:
        for future in futures:  # a dropped connection ends its client: say so at once
            if future.done():
                future.result()
        return all(len(s) > n for s, n in zip(seen, counts, strict=True))

    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, k) for k in range(4)]
        try:
            wait_for("every client answered", lambda: all_answered_since([0] * 4), timeout=60)
            workers = deploy(settings, second)
            rolled = [len(s) for s in seen]
            wait_for(
                "every client answered after the roll",
                lambda: all_answered_since(rolled),
                timeout=60,
                interval=0.05,
            )
        finally:
            stop.set()
        for future in futures:
            future.result()
    answers = [a for s in seen for a in s]
    assert {status for status, _ in answers} == {200}, [a for a in answers if a[0] != 200]
    assert len(refusals) < len(answers) / 10, refusals  # a moment of overload, not an outage
    assert {version for _, version in answers} <= {"1", v2}
    assert {(w["version"], w["bento"]) for w in workers or []} == {(v2, second)}
    for s, n in zip(seen, rolled, strict=True):  # once rolled, the old Bento answers no more
        assert {version for _, version in s[n:]} == {v2}
    assert (info(scoring)["bento"], info(scoring)["version"]) == (second, v2)
    assert deployed_bentos(settings) == [first, second]

    # `make up` after a restart serves the newest deployed Bento.
    scoring.down()
    assert scoring.up() == second
    wait_for("the restarted service is ready", scoring.ready, timeout=120)
    assert info(scoring)["bento"] == second

    # Pruning keeps only the newest deployed Bentos; a rollback rebuilds what was pruned.
    assert prune_bentos(settings.model_copy(update={"bentos_kept": 1})) == [first]
    tag, workers = deploy_version(settings, "1")
    assert tag == first and {w["bento"] for w in workers or []} == {first}
    assert (info(scoring)["bento"], info(scoring)["version"]) == (first, "1")
    assert running_server(settings)["target"] == first  # its record says what it serves now
    assert deployed_bentos(settings) == [second, first]

    # A Bento whose workers cannot serve (its version is not in the registry) is removed
    # again, its deploy fails and is taken back, and the deployed one keeps serving.
    broken = build_bento(settings, "999")
    with pytest.raises(RuntimeError, match=r"new workers could not load v999"):
        deploy(settings, broken)
    assert deployed_bentos(settings) == [second, first]
    assert (info(scoring)["bento"], info(scoring)["version"]) == (first, "1")
    ok = httpx.post(f"{scoring.url}/score", json={"transactions": [transaction(mart)]})
    assert ok.status_code == 200 and ok.json()[0]["model_version"] == "1"
