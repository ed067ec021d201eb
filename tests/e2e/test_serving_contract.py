"""The scoring API at its shipped defaults (two workers, admission limit, payment age limit)
against a real ``bentoml serve``: its published contract, overload, a worker crash, reload.

The server runs on the serving world with the defaults the world overrides put back (payments
older than 30 days refused); its requests pay with cards no other test uses (ids from
``CARD``), so the online state the other serving tests read is untouched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings
from pipelines.lake import day_files
from tests.e2e.serving_world import register_model, serve
from tests.waiting import wait_for

CARD = 7_000_000  # customer and transaction ids of this module start here
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,"
CHECKS += "negative_data_rejection"


@pytest.fixture(scope="module")
def server(serving_world):
    env = dict(serving_world["env"])
    env.pop("FRAUD_SERVING_MAX_PAYMENT_AGE_DAYS")  # the shipped default
    env.pop("FRAUD_MAX_BATCH_SIZE")
    with serve(env) as server:
        yield server


@pytest.fixture(scope="module")
def settings(serving_world) -> Settings:
    return serving_world["settings"]


def _payment(i: int, age: dt.timedelta = dt.timedelta(0)) -> dict:
    return {
        "transaction_id": CARD + i,
        "customer_id": CARD + i % 50,
        "terminal_id": 1 + i % 7,
        "tx_amount": 12.5 + i % 9,
        "tx_datetime": (dt.datetime.now(dt.UTC) - age).isoformat(),
    }


def _workers(server) -> list[psutil.Process]:
    return psutil.Process(server.proc.pid).children(recursive=True)


def _reload(server) -> dict:
    response = httpx.post(f"{server.url}/reload", json={}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _logged_ids(settings: Settings) -> set[int]:
    files = day_files(settings.predictions_dir, dt.datetime.now(dt.UTC).date())
    return set(pq.read_table(files).column("transaction_id").to_pylist()) if files else set()


def test_the_published_openapi_holds_for_every_generated_request(server, tmp_path):
    """schemathesis generates requests from ``/docs.json`` (valid and invalid) for every
    operation: no 5xx, every response as published, every status code published, every
    schema-invalid request refused."""
    schemathesis = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{server.url}/docs.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "100",
            "--seed",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "text/plain", "application/x-www-form-urlencoded", "application/xml"],
)
def test_a_body_that_is_not_json_gets_415(server, content_type):
    body = b'{"transactions": []}'
    response = httpx.post(
        f"{server.url}/score", content=body, headers={"content-type": content_type}, timeout=30
    )
    assert response.status_code == 415, response.text
    assert content_type in response.json()["error"]


def test_json_with_a_charset_is_json_and_malformed_json_is_400(server):
    url = f"{server.url}/score"
    good = httpx.post(
        url,
        content=f'{{"transactions": [{_payment(0)}]}}'.replace("'", '"').encode(),
        headers={"content-type": "application/json; charset=utf-8"},
        timeout=30,
    )
    assert good.status_code == 200, good.text
    bad = httpx.post(
        url, content=b'{"transactions": [', headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400, bad.text


def test_a_payment_older_than_the_features_lifetime_is_refused_by_name(server):
    old = _payment(1, age=dt.timedelta(days=31))
    response = httpx.post(
        f"{server.url}/score", json={"transactions": [_payment(2), old]}, timeout=30
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith("transactions[1].tx_datetime") and "30 days" in error
    recent = httpx.post(
        f"{server.url}/score",
        json={"transactions": [_payment(3, age=dt.timedelta(days=29))]},
        timeout=30,
    )
    assert recent.status_code == 200, recent.text


def test_a_burst_over_capacity_is_refused_fast_and_the_service_recovers(server):
    """A hundred payments at once, six times what two workers admit: the excess gets 503 with
    Retry-After (never queued into a timeout, never another error), admitted ones are scored,
    then every request of a normal pace is served."""

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            bodies = [{"transactions": [_payment(10_000 + i)]} for i in range(100)]
            return await asyncio.gather(*(client.post("/score", json=b) for b in bodies))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    refused = [r for r in responses if r.status_code == 503]
    reasons = Counter(r.json()["error"].split(":")[1][:30] for r in refused)
    assert set(codes) <= {200, 503}, sorted(set(codes))
    assert refused and codes.count(200) > 0, (codes.count(200), reasons)
    for r in refused:
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"].startswith("overloaded")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        after = [
            client.post("/score", json={"transactions": [_payment(60_000 + i)]}) for i in range(20)
        ]
    assert [r.status_code for r in after] == [200] * 20


def test_a_killed_worker_loses_nothing_it_answered_and_comes_back(server, settings):
    """``kill -9`` of one of the two workers while a stream of payments is scored: the other
    worker keeps answering (no 5xx; requests in flight on the killed one fail as connection
    errors), the killed worker is respawned, and every answered payment is in the prediction
    log (the respawned worker recovers the dead one's journal) and in its card's state."""
    from pipelines.featurestore.store import get_store
    from serving.stream import read_states

    workers = _workers(server)
    assert len(workers) == 2, workers
    answered: list[dict] = []
    failures: list[str] = []
    stop = threading.Event()

    def stream(offset: int) -> None:
        i = offset
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                payment = _payment(100_000 + i)
                i += 2
                try:
                    r = client.post("/score", json={"transactions": [payment]})
                except httpx.TransportError:
                    continue  # in flight on the killed worker: never answered
                if r.status_code == 200:
                    answered.append(payment)
                else:
                    failures.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    wait_for("traffic on both workers", lambda: len(answered) >= 100, 60)
    victim = workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = len(answered)
    wait_for("answers after the kill", lambda: len(answered) >= killed_at + 100, 60)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:5]

    def respawned() -> bool:
        return len(_reload(server)["workers"]) == 2

    wait_for("the killed worker back", respawned, 180, interval=2)
    assert victim.pid not in {w.pid for w in _workers(server)}
    ids = {p["transaction_id"] for p in answered}
    wait_for("every answered payment in the log", lambda: ids <= _logged_ids(settings), 30)
    states = read_states(get_store(settings), [p["customer_id"] for p in answered])
    streamed = {i for state in states.values() for i in state.ids}
    assert ids <= streamed, sorted(ids - streamed)[:10]


def test_one_reload_switches_every_worker(server, serving_world, settings):
    """The champion moves; one ``/reload`` (answered by one worker) and every request after
    it, whichever worker takes it, is scored by the new version."""
    import mlflow

    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    before = str(client.get_model_version_by_alias(settings.model_name, "champion").version)
    version = register_model(settings, serving_world["frame"], serving_world["inputs"], scale=2.0)
    client.set_registered_model_alias(settings.model_name, "champion", version)
    try:
        info = _reload(server)
        assert info["version"] == version
        assert len(info["workers"]) == 2 and set(info["workers"].values()) == {version}
        versions = set()
        for i in range(30):  # a new connection each: the workers share the socket
            r = httpx.post(
                f"{server.url}/score", json={"transactions": [_payment(200_000 + i)]}, timeout=30
            )
            assert r.status_code == 200, r.text
            versions.add(r.json()[0]["model_version"])
        assert versions == {version}
    finally:
        client.set_registered_model_alias(settings.model_name, "champion", before)
        assert set(_reload(server)["workers"].values()) == {before}
