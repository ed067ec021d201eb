"""The API's guard and its published contract, without a server (the e2e module has one)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import httpx
import pytest

from serving.guard import REQUEST, RequestGuard, refusal
from serving.openapi import published_spec
from serving.schemas import Transaction


def _guard(app, **overrides) -> RequestGuard:
    options = {"api_key": None, "max_body_bytes": 10_000, "max_inflight": 2, "spec": dict}
    return RequestGuard(app, **{**options, **overrides})


async def _ok(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"[]"})


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def test_past_max_inflight_requests_are_refused_at_once_with_retry_after():
    release = asyncio.Event()

    async def slow(scope, receive, send) -> None:
        if scope["path"] == "/score":
            await release.wait()
        await _ok(scope, receive, send)

    async def main() -> list[httpx.Response]:
        async with _client(_guard(slow)) as client:
            held = [asyncio.create_task(client.post("/score", json={})) for _ in range(2)]
            await asyncio.sleep(0.05)
            refused = await client.post("/score", json={})  # answered while two are held
            health = await client.get("/livez")  # probes are never refused
            release.set()
            return [refused, health, *await asyncio.gather(*held)]

    refused, health, *held = asyncio.run(main())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "FRAUD_SERVING_MAX_INFLIGHT" in refused.json()["error"]
    assert health.status_code == 200
    assert [r.status_code for r in held] == [200, 200]


@pytest.mark.parametrize("content_type", ["multipart/form-data", "text/plain; charset=utf-8"])
def test_only_json_bodies_reach_the_api(content_type):
    async def main() -> httpx.Response:
        async with _client(_guard(_ok)) as client:
            return await client.post(
                "/score", content=b"{}", headers={"content-type": content_type}
            )

    response = asyncio.run(main())
    assert response.status_code == 415


def test_an_api_refusal_is_answered_with_its_own_message_and_retry_after():
    """BentoML answers a raised 5xx as a generic message, a 4xx as a one-element list."""

    def failing(status: int, body: bytes):
        async def app(scope, receive, send) -> None:
            refusal("overloaded: waited 300 ms") if status == 503 else None
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": body})

        return app

    async def main() -> list[httpx.Response]:
        generic = b'{"error": "An unexpected error has occurred"}'
        out = []
        for app in (failing(503, generic), failing(400, b'[{"error": "transactions[0]: bad"}]')):
            async with _client(_guard(app)) as client:
                out.append(await client.post("/score", json={}))
        return out

    unavailable, invalid = asyncio.run(main())
    assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "1"
    assert unavailable.json() == {"error": "overloaded: waited 300 ms"}
    assert invalid.status_code == 400 and invalid.json() == {"error": "transactions[0]: bad"}
    assert invalid.headers["content-length"] == str(len(invalid.content))


def test_work_that_waited_too_long_for_its_batch_is_refused():
    from serving.service import ScoreJob, waited_too_long

    job = ScoreJob([], explain=False, arrived=100.0)
    assert waited_too_long(job, now=101.0, max_wait_ms=250) == (
        "overloaded: waited 1000 ms for a batch (over 250)"
    )
    assert waited_too_long(job, now=101.0, max_wait_ms=5000) is None


def test_payments_older_than_the_limit_are_refused_by_index():
    from serving.service import InvalidPayment, refuse_old_payments

    now = dt.datetime.now(dt.UTC)

    def payment(age_days: float) -> Transaction:
        return Transaction(
            transaction_id=1,
            customer_id=1,
            terminal_id=1,
            tx_amount=1.0,
            tx_datetime=now - dt.timedelta(days=age_days),
        )

    refuse_old_payments([payment(29.9)], dt.timedelta(days=30))
    with pytest.raises(InvalidPayment, match=r"transactions\[1\]\.tx_datetime"):
        refuse_old_payments([payment(1), payment(30.1)], dt.timedelta(days=30))


def test_the_published_spec_says_what_the_service_answers():
    from serving.service import FraudScoringService

    spec = json.loads(json.dumps(published_spec(FraudScoringService.openapi_spec.asdict())))
    schemas = spec["components"]["schemas"]
    info = schemas["ModelInfoIODescriptor"]["properties"]
    for name in ("treatment_share", "challenger_version", "challenger_last_error", "workers"):
        assert info[name]["nullable"] is True and "anyOf" not in info[name], name
    assert spec["paths"]["/model_info"]["post"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/ModelInfoIODescriptor"}
    assert schemas["Score"]["properties"]["feature_age_seconds"]["nullable"] is True
    for path in ("/score", "/model_info", "/reload"):
        responses = spec["paths"][path]["post"]["responses"]
        assert sorted(responses) == ["200", "400", "401", "413", "415", "503"], path
        assert "Retry-After" in responses["503"]["headers"]
    error = schemas["Error"]
    assert error["required"] == ["error"] and "type" not in error["properties"]["detail"]


def test_the_queue_wait_counts_from_the_end_of_the_body():
    """A slow client's upload is not queue time: the wait starts when the body is complete."""
    waited: list[float] = []

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        waited.append(time.monotonic() - REQUEST.get().arrived)
        await _ok(scope, receive, send)

    chunks = [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.request", "body": b"}", "more_body": False},
    ]

    async def receive() -> dict:
        await asyncio.sleep(0.3)  # the client sends slowly
        return chunks.pop(0)

    async def send(message) -> None:
        pass

    scope = {"type": "http", "path": "/score", "headers": [(b"content-type", b"application/json")]}
    asyncio.run(_guard(app)(scope, receive, send))
    assert len(waited) == 1 and waited[0] < 0.3
