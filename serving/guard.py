"""ASGI middleware in front of the API: the published OpenAPI, optional API key, JSON only,
request size limit, and admission control.

Admission: a worker takes at most ``max_inflight`` API requests at a time (queued ones
included); past that it answers 503 with ``Retry-After`` at once instead of queueing, so the
requests it accepts keep their latency and a burst cannot build a queue that outlives its
clients. Each request carries a ``RequestState`` (``REQUEST``): its arrival time, so the API
can refuse work that waited too long for its batch after its body arrived
(``serving.service``), and the message of
a refusal. BentoML 1.4 answers an API's exception as a one-element list, and replaces the
message of any 5xx with a generic one; the guard restores ``{"error": message}``.

Health and metrics endpoints stay open (probes and scrapers carry no key, never refused).
Rejections are JSON with a message, like every other client error of the API.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

OPEN_PATHS = {"/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/"}
SPEC_PATH = "/docs.json"
JSON = "application/json"
RETRY_AFTER_SECONDS = 1


@dataclass
class RequestState:
    # When the request could start: its whole body received (reset then). The time spent
    # reading it is the client's; the time after it is the queue the API refuses past.
    arrived: float = field(default_factory=time.monotonic)
    error: str | None = None  # the message of the API's refusal, if it refused


# Set by the guard for each API request; the API reads and writes it.
REQUEST: ContextVar[RequestState | None] = ContextVar("request", default=None)


def refusal(message: str) -> str:
    """Record ``message`` as this request's error body; returns it (for the exception)."""
    state = REQUEST.get()
    if state is not None:
        state.error = message
    return message


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class RequestGuard:
    def __init__(
        self,
        app: Callable,
        api_key: str | None,
        max_body_bytes: int,
        max_inflight: int,
        spec: Callable[[], dict],
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.max_inflight = max_inflight
        self.inflight = 0  # one event loop per worker: no lock needed
        self._spec = spec
        self._spec_body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == SPEC_PATH:
            if self._spec_body is None:
                self._spec_body = json.dumps(self._spec()).encode()
            await _respond(send, 200, self._spec_body)
            return
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.api_key is not None:
            given = headers.get("x-api-key", "")
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                await _reject(send, 401, "missing or wrong X-API-Key header")
                return
        media_type = headers.get("content-type", JSON).split(";")[0].strip().lower()
        if media_type != JSON:
            await _reject(send, 415, f"Content-Type must be {JSON}, not {media_type!r}")
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _reject(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        if self.inflight >= self.max_inflight:
            await _reject(
                send,
                503,
                f"overloaded: {self.max_inflight} requests in progress in this worker "
                f"(FRAUD_SERVING_MAX_INFLIGHT); retry after {RETRY_AFTER_SECONDS} s",
                retry_after=RETRY_AFTER_SECONDS,
            )
            return
        self.inflight += 1
        state = RequestState()
        token = REQUEST.set(state)
        try:
            await self.app(
                scope, _limited(receive, self.max_body_bytes, state), _error_bodies(send, state)
            )
        finally:
            REQUEST.reset(token)
            self.inflight -= 1


def _error_bodies(send: Send, state: RequestState) -> Send:
    """Error answers as ``{"error": message}``; every 503 says when to come back."""
    held: dict | None = None

    async def wrapped(message: dict) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held = message  # rewritten with the body
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        body = message.get("body", b"")
        if state.error is not None:
            body = json.dumps({"error": state.error}).encode()
        elif body.startswith(b"["):
            payload = json.loads(body)
            if len(payload) == 1 and isinstance(payload[0], dict):
                body = json.dumps(payload[0]).encode()
        headers = [(k, v) for k, v in held.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        if held["status"] == 503 and not any(k.lower() == b"retry-after" for k, _ in headers):
            headers.append((b"retry-after", str(RETRY_AFTER_SECONDS).encode()))
        await send({**held, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        held = None

    return wrapped


def _limited(receive: Receive, limit: int, state: RequestState) -> Receive:
    """Count streamed body bytes too (a chunked request cannot slip past the limit); stamp
    the moment the body is complete."""
    seen = 0

    async def wrapped() -> dict:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
            if not message.get("more_body", False):
                state.arrived = time.monotonic()
        return message

    return wrapped


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")


async def _reject(send: Send, status: int, message: str, retry_after: int | None = None) -> None:
    headers = [] if retry_after is None else [(b"retry-after", str(retry_after).encode())]
    await _respond(send, status, json.dumps({"error": message}).encode(), headers)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
