"""The scoring API (BentoML's server under ``serving/serve.py``) as a local process, and the
record of deployed Bentos.

``ScoringService`` is the detached one ``make up`` starts and tracks by PID file: it serves
the newest deployed Bento and follows the record of deployed ones (``serving/serve.py``: a
deploy rolls its workers), or, before the first deploy, holds the port from the source tree
with no model. ``BentoProcess`` is a
child of the caller on a spare port: the deploy step's smoke test of a new Bento, and the
serving tests and benchmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx
import psutil

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.lake import write_text_atomic
from pipelines.platform.mlflow import healthy
from pipelines.platform.process import (
    PROCESS_TOKEN_VAR,
    ManagedProcess,
    free_port,
    marked_processes,
    wait_until,
)

SERVICE = "serving.service:FraudScoringService"


def bentoml_env(settings: Settings) -> dict[str, str]:
    """The environment every ``bentoml`` command and server of this home runs with."""
    return {
        **os.environ,
        # bentoml build looks for uv on PATH; the venv's bin has it.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "BENTOML_DO_NOT_TRACK": "True",
        # The Bento store is runtime state of this home, not of the user's ~/bentoml.
        "BENTOML_HOME": str(settings.home / "bentoml"),
        "FRAUD_HOME": str(settings.home),
    }


def bentoml_cli(settings: Settings, *args: str, check: bool = True) -> str:
    """Run ``bentoml <args>`` on this home's Bento store; its standard output."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), *args],
        cwd=PROJECT_ROOT,
        env=bentoml_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"bentoml {args[0]} failed: {out.stderr[-2000:] or out.stdout[-2000:]}")
    return out.stdout


def bento_exists(settings: Settings, tag: str) -> bool:
    return bool(bentoml_cli(settings, "get", tag, "-o", "path", check=False).strip())


def _deployed_file(settings: Settings) -> Path:
    return settings.home / "serving" / "deployed.json"


def deployed_bentos(settings: Settings) -> list[str]:
    """The Bentos deployed so far, oldest first (``serving/deploy.py`` appends)."""
    try:
        return list(json.loads(_deployed_file(settings).read_text())["bentos"])
    except FileNotFoundError:
        return []


def record_deployed(settings: Settings, bentos: list[str]) -> None:
    path = _deployed_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"bentos": bentos}, indent=1))


def current_bento(settings: Settings) -> str | None:
    """What `make up` serves: the newest deployed Bento still in the store."""
    for tag in reversed(deployed_bentos(settings)):
        if bento_exists(settings, tag):
            return tag
    return None


def control_file(settings: Settings) -> Path:
    """Where ``serving/serve.py`` keeps its record (pid, what it serves, a heartbeat)."""
    return settings.home / "run" / "scoring-control.json"


def roll_status_file(settings: Settings) -> Path:
    """Where ``serving/serve.py`` writes the outcome of its last roll."""
    return settings.home / "run" / "scoring-rolled.json"


HEARTBEAT_SECONDS = 10.0  # serve.py refreshes its record every second


def running_server(settings: Settings) -> dict | None:
    """The record of the ``serving/serve.py`` following this home, or None if none has
    refreshed it lately (by heartbeat, not pid: it may run in another container)."""
    try:
        record = json.loads(control_file(settings).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return record if time.time() - record["heartbeat"] < HEARTBEAT_SECONDS else None


def serve_command(target: str, host: str, port: int) -> list[str]:
    """``serving/serve.py`` serving ``target`` (a Bento tag or the source tree's service)."""
    return [sys.executable, "-m", "serving.serve", target, "--host", host, "--port", str(port)]


def serve_target(settings: Settings) -> tuple[str, dict[str, str]]:
    """What a scoring server of this home starts on, and its environment: the newest deployed
    Bento, or before the first deploy the source tree's service holding the port with no model
    (``FRAUD_SERVING_AWAIT_DEPLOY``) until a deploy rolls it onto a Bento."""
    env = bentoml_env(settings)
    target = current_bento(settings)
    if target is None:
        target = SERVICE
        env["FRAUD_SERVING_AWAIT_DEPLOY"] = "true"
    return target, env


class ScoringService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def url(self) -> str:
        return f"http://{self.settings.serving_host}:{self.settings.serving_port}"

    def process(self, target: str = SERVICE) -> ManagedProcess:
        s = self.settings
        command = serve_command(target, s.serving_host, s.serving_port)
        return ManagedProcess("bentoml-serve", command, s.home / "run", s.home / "logs")

    def up(self, timeout: float = 120.0) -> str:
        """Start it and wait until it is alive (ready only once a model is loaded); returns
        what it serves (a Bento tag, or the source tree's service). One that is not alive in
        time is stopped (its supervisor would restart a crashing worker forever), then a
        ``RuntimeError`` names its log."""
        target, env = serve_target(self.settings)
        proc = self.process(target)
        pid = proc.start(env, cwd=PROJECT_ROOT)
        if not wait_until(lambda: healthy(f"{self.url}/livez"), timeout=timeout, interval=1.0):
            proc.stop(pid=pid)
            raise RuntimeError(f"scoring API not alive after {timeout:.0f}s: {proc.log_file}")
        return target

    def ready(self) -> bool:
        return healthy(f"{self.url}/readyz")

    def down(self) -> bool:
        return self.process().stop()


class BentoProcess:
    """``bentoml serve <target>`` (a service import path or a Bento tag) as a child process.

    Its log is ``<log_dir>/<target>-<port>.log``. Use as a context manager: ready on entry
    (``/readyz`` answers 200), stopped on exit. A server that exits, logs ``fatal`` or is not
    ready within ``timeout`` is stopped and a ``RuntimeError`` carries the end of its log.
    """

    def __init__(
        self,
        target: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        cwd: Path = PROJECT_ROOT,
        timeout: float = 180.0,
        fatal: str | None = None,
    ) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{target.replace(':', '-')}-{self.port}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "bentoml", "serve", target]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        # Its workers run in sessions of their own: the token finds them when it stops.
        self.token = f"bento-{self.port}-{uuid.uuid4().hex}"
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                command,
                cwd=cwd,
                env={**env, PROCESS_TOKEN_VAR: self.token},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready(timeout, fatal)

    def _wait_ready(self, timeout: float, fatal: str | None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} exited:\n{self.tail()}")
            if fatal is not None and fatal in self.tail():
                self.stop()
                raise RuntimeError(f"{self.target} logged {fatal!r}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"{self.target} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        """The end of the server's log (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def cpu_seconds(self) -> float:
        """CPU time of the server and its workers so far (user + system)."""
        total = 0.0
        try:
            parent = psutil.Process(self.proc.pid)
            for proc in [parent, *parent.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
        return total

    def stop(self) -> None:
        """SIGTERM (the serve process stops its workers), SIGKILL after 30 s; then any worker
        that outlived it (forked while it was stopping) is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for worker in marked_processes(self.token):
            with contextlib.suppress(psutil.Error):
                worker.kill()

    def __enter__(self) -> BentoProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
