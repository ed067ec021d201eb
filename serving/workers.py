"""One ``/reload`` switches every worker of the server, not only the one that answered it.

BentoML runs ``FRAUD_SERVING_WORKERS`` processes behind one socket; a request reaches one of
them. The worker that answers ``/reload`` bumps the server's reload generation, a file under
``<home>/serving/workers/<host>-<server pid>/`` (the server pid is the workers' parent, so
two servers on one home never mix). Every worker's listener thread looks at the file every
``LISTEN_SECONDS``; on a new generation it checks its aliases and writes what it now serves
(``worker-<pid>.json``: generation, version). ``/reload`` answers once every live worker has
(a respawned worker loads the newest champion as it starts, and says so the same way).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipelines.lake import write_text_atomic

log = logging.getLogger(__name__)

LISTEN_SECONDS = 0.2
GENERATION = "generation"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def server_dir(root: Path, server_pid: int) -> Path:
    """Where the workers of the server ``server_pid`` (their parent) say what they serve."""
    return root / f"{socket.gethostname()}-{server_pid}"


def serving_workers(root: Path, server_pid: int) -> list[dict]:
    """What each live worker of the server ``server_pid`` last said it serves (its pid,
    reload generation, champion version and Bento)."""
    states = []
    for path in server_dir(root, server_pid).glob("worker-*.json"):
        pid = int(path.stem.removeprefix("worker-"))
        if not _alive(pid):
            continue
        try:
            states.append({"pid": pid, **json.loads(path.read_text())})
        except (FileNotFoundError, ValueError):
            continue  # written atomically: only a worker that just stopped
    return states


class ReloadBroadcast:
    """This worker's side: follow the server's reload generation, and bump it."""

    def __init__(
        self, root: Path, on_reload: Callable[[], str | None], bento: str | None = None
    ) -> None:
        """``on_reload`` checks the aliases and returns the champion version now served;
        ``bento``: the Bento this worker runs (a deploy waits for the new one's workers)."""
        self.dir = server_dir(root, os.getppid())
        self.bento = bento
        self.dir.mkdir(parents=True, exist_ok=True)
        self.on_reload = on_reload
        self.pid = os.getpid()
        self.seen = self.generation()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reload-listener", daemon=True)

    def generation(self) -> int:
        try:
            return int((self.dir / GENERATION).read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def start(self, version: str | None) -> None:
        """Report what this worker serves after its start, then follow the generation."""
        self._ack(self.seen, version)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        (self.dir / f"worker-{self.pid}.json").unlink(missing_ok=True)

    def _ack(self, generation: int, version: str | None) -> None:
        state = {"generation": generation, "version": version, "bento": self.bento}
        write_text_atomic(self.dir / f"worker-{self.pid}.json", json.dumps(state))

    def _run(self) -> None:
        while not self._stop.wait(LISTEN_SECONDS):
            generation = self.generation()
            if generation > self.seen:
                self.seen = generation
                try:
                    version = self.on_reload()
                except Exception:  # a failing registry must not stop the listener
                    log.exception("reload of generation %d failed", generation)
                    continue
                self._ack(generation, version)

    def request(self, timeout: float) -> dict[int, str | None]:
        """Bump the generation and wait until every live worker has followed it (or
        ``timeout``); returns the version each worker that followed now serves."""
        generation = max(time.time_ns(), self.generation() + 1)
        write_text_atomic(self.dir / GENERATION, str(generation))
        deadline = time.monotonic() + timeout
        while True:
            followed, waiting = self._workers(generation)
            if not waiting or time.monotonic() >= deadline:
                if waiting:
                    log.warning("reload: workers %s did not follow in %.0f s", waiting, timeout)
                return followed
            time.sleep(LISTEN_SECONDS / 4)

    def _workers(self, generation: int) -> tuple[dict[int, str | None], list[int]]:
        followed: dict[int, str | None] = {}
        waiting: list[int] = []
        for path in self.dir.glob("worker-*.json"):
            pid = int(path.stem.removeprefix("worker-"))
            if not _alive(pid):
                path.unlink(missing_ok=True)  # a crashed worker's last word
                continue
            try:
                state = json.loads(path.read_text())
            except (FileNotFoundError, ValueError):
                waiting.append(pid)
                continue
            if state["generation"] >= generation:
                followed[pid] = state["version"]
            else:
                waiting.append(pid)
        return followed, waiting
