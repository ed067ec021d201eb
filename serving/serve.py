"""``bentoml serve`` that follows the deployed Bento: a deploy rolls its workers, the port
stays open.

    python -m serving.serve <Bento tag | serving.service:FraudScoringService>
                            --host 127.0.0.1 --port 3000

It serves the target with BentoML's own production server (``bentoml.serve``: one circus
arbiter, ``FRAUD_SERVING_WORKERS`` workers accepting on one listening socket), then every
second:

- refreshes its record (``<home>/run/scoring-control.json``: pid, what it serves, a
  heartbeat) — how a deploy, in this process tree or another container on the same home,
  knows a server follows the record;
- reads what is deployed (``<home>/serving/deployed.json``, the newest last) and, when that
  is not what it serves, **rolls**: it starts the new Bento's workers on the same listening
  socket, waits until every one has loaded the version the Bento pins, then drains the old
  workers (``serving/drain.py``: they stop accepting and close each connection after its next
  answer) for ``FRAUD_SERVING_DRAIN_SECONDS`` and stops them gracefully (each finishes the
  requests it holds). Some worker accepts at every
  moment and the port never closes, so a deploy fails no request. New workers that do not
  come up in ``FRAUD_SERVING_ROLL_TIMEOUT_SECONDS`` are stopped and the old ones keep
  serving. The outcome goes to ``<home>/run/scoring-rolled.json`` for the deploy waiting on it.

A rolling switch inside one process tree rather than blue/green behind a proxy: a proxy would
add a hop to every payment.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import bentoml
import psutil

from pipelines.config import Settings, get_settings
from pipelines.lake import write_text_atomic
from pipelines.platform.scoring import (
    bentoml_cli,
    control_file,
    deployed_bentos,
    roll_status_file,
)
from serving.bento import bento_version, model_version_of
from serving.drain import DRAIN_SIGNAL
from serving.workers import serving_workers


def say(message: str) -> None:
    """A line in the server's log (BentoML's logging setup disables other loggers)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"{stamp} [INFO] [serve] {message}", flush=True)


STARTUP_SECONDS = 120.0  # the arbiter spawning its workers (not their loading: they do that alone)
WATCHER_PREFIX = "service"  # BentoML names the API workers' watcher "service"


class Roller:
    """Rolls the API workers of a running BentoML arbiter onto another Bento."""

    def __init__(self, arbiter: Any, settings: Settings) -> None:
        self.arbiter = arbiter
        self.settings = settings
        self.workers_dir = settings.home / "serving" / "workers"
        self.arbiter_pid = os.getpid()  # the arbiter runs in this process: the workers' parent

    def _on_loop(self, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Run ``fn`` on the arbiter's event loop (circus is not thread-safe), await what it
        returns if awaitable; its result."""
        done: concurrent.futures.Future = concurrent.futures.Future()

        async def run() -> None:
            try:
                result = fn()
                if asyncio.isfuture(result) or asyncio.iscoroutine(result):
                    result = await result
                done.set_result(result)
            except Exception as exc:
                done.set_exception(exc)

        self.arbiter.loop.add_callback(run)
        return done.result(timeout)

    def api_watchers(self) -> list[Any]:
        return self._on_loop(
            lambda: [w for w in self.arbiter.watchers if w.name.startswith(WATCHER_PREFIX)]
        )

    def roll(self, tag: str, timeout: float) -> list[dict]:
        """Roll onto ``tag``; what each new worker says it serves (pid, version, Bento)."""
        version = model_version_of(tag)
        path = bentoml_cli(self.settings, "get", tag, "-o", "path").strip()
        old = self.api_watchers()
        template = old[-1]
        args = list(template.args)
        args[args.index("-m") + 2] = tag  # the worker script's first argument: what to serve
        workers = template.numprocesses
        name = f"{WATCHER_PREFIX}-{bento_version(version)}-{time.time_ns()}"

        def add() -> Any:
            watcher = self.arbiter.add_watcher(
                name,
                template.cmd,
                args=args,
                working_dir=path,
                numprocesses=workers,
                env=dict(template.env),
                copy_env=template.copy_env,
                use_sockets=True,  # the same listening socket as the old workers
                stop_children=template.stop_children,
                graceful_timeout=template.graceful_timeout,
                respawn=template.respawn,
                close_child_stdin=template.close_child_stdin,
            )
            return watcher.start()

        self._on_loop(add)
        new = self.arbiter.get_watcher(name)
        deadline = time.monotonic() + timeout
        while True:
            pids = set(self._on_loop(lambda: list(new.processes)))
            started = [w for w in serving_workers(self.workers_dir, self.arbiter_pid)
                       if w["pid"] in pids and w.get("bento") == tag]  # fmt: skip
            ready = [w for w in started if w["version"] == version]
            if len(ready) >= workers:
                break
            # A worker says what it serves once started: one serving nothing could not load
            # the version (its error is in this log); waiting longer would not help.
            why = None
            if len(started) >= workers:
                failed = len(started) - len(ready)
                why = f"{failed} of {workers} new workers could not load v{version}"
            elif time.monotonic() > deadline:
                why = f"{len(ready)} of {workers} workers serve v{version} after {timeout:.0f} s"
            if why is not None:
                self._on_loop(lambda: self.arbiter.rm_watcher(name), timeout=120)
                raise RuntimeError(f"{tag}: {why}; the previous Bento keeps serving")
            time.sleep(0.5)
        # Drain first (serving/drain.py), then SIGTERM: each finishes the requests it holds.
        for pid in self._on_loop(lambda: [p for w in old for p in w.processes]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, DRAIN_SIGNAL)
        time.sleep(self.settings.serving_drain_seconds)
        for watcher in old:
            self._on_loop(lambda w=watcher: self.arbiter.rm_watcher(w.name), timeout=600)
        return ready


def serve(target: str, host: str, port: int) -> None:
    """Serve ``target``, following the deployed record, until SIGTERM/SIGINT."""

    settings = get_settings()
    control, status = control_file(settings), roll_status_file(settings)
    control.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = bentoml.serve(target, host=host, port=port, production=True, blocking=False)
    # The arbiter starts in its own thread: not "running" until its watchers have started.
    # Wait for that even when asked to stop meanwhile: stopping a starting arbiter fails
    # (circus: "already running arbiter_start_watchers") and leaves its workers behind.
    started = time.monotonic()
    while not server.running and time.monotonic() - started < STARTUP_SECONDS:
        time.sleep(0.1)
    roller = Roller(server.arbiter, settings)
    state = {"pid": os.getpid(), "target": target}
    failed: str | None = None

    def heartbeat() -> None:  # its own thread: a roll takes longer than a heartbeat lasts
        while server.running and not stop.is_set():
            write_text_atomic(control, json.dumps({**state, "heartbeat": time.time()}))
            stop.wait(1.0)

    beating = threading.Thread(target=heartbeat, name="heartbeat", daemon=True)
    beating.start()
    try:
        while server.running and not stop.wait(1.0):
            deployed = deployed_bentos(settings)
            wanted = deployed[-1] if deployed else None
            if wanted in (None, state["target"], failed):
                continue
            say(f"rolling the workers from {state['target']} onto {wanted}")
            outcome: dict[str, Any] = {"tag": wanted}
            try:
                outcome["workers"] = roller.roll(wanted, settings.serving_roll_timeout_seconds)
                state["target"], failed = wanted, None
                say(f"now serving {wanted}")
            except Exception as exc:
                say(f"roll onto {wanted} failed: {exc}")
                outcome["error"] = str(exc)
                failed = wanted
            write_text_atomic(status, json.dumps({**outcome, "at": time.time()}))
    finally:
        stop.set()
        beating.join()
        control.unlink(missing_ok=True)
        server.stop()
        # Stopped while the arbiter was still starting, it may have spawned workers after its
        # own stop: none may outlive this process.
        children = psutil.Process().children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=settings.serving_drain_seconds + 20)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="a Bento tag, or the service's import path")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    serve(args.target, args.host, args.port)


if __name__ == "__main__":
    main()
