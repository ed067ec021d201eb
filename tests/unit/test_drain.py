"""A drained worker stops accepting and closes each connection after its next answer."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import httpx
import pytest
import uvicorn

from serving import drain
from serving.drain import DRAIN_SIGNAL, ConnectionDrain, drain_on_signal
from tests.waiting import wait_for


async def hello(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(drain, "_draining", False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(ConnectionDrain(hello), log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    wait_for("uvicorn started", lambda: server.started, timeout=30, interval=0.05)
    yield server, f"http://127.0.0.1:{listener.getsockname()[1]}"
    server.should_exit = True
    thread.join(30)


def test_after_drain_no_new_connection_and_each_open_one_closes_after_its_answer(server):
    uvi, url = server
    with httpx.Client(base_url=url) as client:
        first = client.get("/")
        assert first.headers.get("connection") != "close"
        asyncio.run_coroutine_threadsafe(_drain_on_loop(), _loop_of(uvi)).result(30)
        last = client.get("/")  # the kept-alive connection still gets its answer...
        assert last.status_code == 200 and last.headers["connection"] == "close"
    with pytest.raises(httpx.ConnectError):  # ...but nothing new is accepted
        httpx.get(url, timeout=5)


def test_the_drain_signal_drains(monkeypatch):
    monkeypatch.setattr(drain, "_draining", False)

    async def signalled() -> bool:
        drain_on_signal()
        try:
            os.kill(os.getpid(), DRAIN_SIGNAL)
            for _ in range(100):
                if drain.draining():
                    return True
                await asyncio.sleep(0.01)
            return False
        finally:
            asyncio.get_running_loop().remove_signal_handler(DRAIN_SIGNAL)

    assert asyncio.run(signalled())


async def _drain_on_loop() -> None:
    drain.drain()


def _loop_of(uvi: uvicorn.Server) -> asyncio.AbstractEventLoop:
    return uvi.servers[0].get_loop()
