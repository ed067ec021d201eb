"""Draining a worker before it stops, so that stopping it fails no request.

Stopping a uvicorn worker closes its idle keep-alive connections; a client that sent a request
on one of them just then gets a dropped connection instead of an answer. So a roll first sends
the old workers ``DRAIN_SIGNAL``: each stops accepting (the listening socket is shared: the
other workers go on accepting) and answers every later request with ``Connection: close``, so
a client with traffic moves to a new connection, and a new worker, after its next answer. Only
then, ``FRAUD_SERVING_DRAIN_SECONDS`` later, is the worker stopped. What is left is a connection
that stayed idle through the whole drain and sends exactly as the worker closes it.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DRAIN_SIGNAL = signal.SIGUSR1
_draining = False


def draining() -> bool:
    """Whether this worker has been told to drain."""
    return _draining


def drain() -> None:
    """Stop accepting connections in this process and close the others after their next
    answer. Runs on the worker's event loop."""
    global _draining
    _draining = True

    # BentoML keeps no reference to the worker's uvicorn server: find it among live objects.
    for server in (o for o in gc.get_objects() if isinstance(o, uvicorn.Server)):
        for listener in getattr(server, "servers", []):
            listener.close()


def drain_on_signal() -> None:
    """Drain when ``DRAIN_SIGNAL`` arrives (call on the worker's running event loop)."""
    asyncio.get_running_loop().add_signal_handler(DRAIN_SIGNAL, drain)


class ConnectionDrain:
    """ASGI middleware: once draining, every answer closes its connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and _draining:
                headers: list[Any] = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)
