"""The scoring API (``bentoml serve``) as a local process.

``ScoringService`` is the detached one ``make up`` starts and tracks by PID file;
``BentoProcess`` a child of the caller on a spare port: the deploy step's smoke test of a new
Bento, and the serving tests and benchmark.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.platform.mlflow import healthy
from pipelines.platform.process import ManagedProcess, free_port, wait_until

SERVICE = "serving.service:FraudScoringService"


class ScoringService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def url(self) -> str:
        return f"http://{self.settings.serving_host}:{self.settings.serving_port}"

    def process(self) -> ManagedProcess:
        s = self.settings
        command = [
            str(Path(sys.executable).parent / "bentoml"),
            "serve",
            SERVICE,
            "--host",
            s.serving_host,
            "--port",
            str(s.serving_port),
        ]
        return ManagedProcess("bentoml-serve", command, s.home / "run", s.home / "logs")

    def up(self, timeout: float = 120.0) -> None:
        """Start it and wait until it is alive (ready only once a champion exists). One that
        is not alive in time is stopped (its supervisor would restart a crashing worker
        forever), then a ``RuntimeError`` names its log."""
        env = {**os.environ, "FRAUD_HOME": str(self.settings.home), "BENTOML_DO_NOT_TRACK": "True"}
        proc = self.process()
        pid = proc.start(env, cwd=PROJECT_ROOT)
        if not wait_until(lambda: healthy(f"{self.url}/livez"), timeout=timeout, interval=1.0):
            proc.stop(pid=pid)
            raise RuntimeError(f"scoring API not alive after {timeout:.0f}s: {proc.log_file}")

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
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                command, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT
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
        import psutil

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
        """SIGTERM (the serve process stops its workers), SIGKILL after 30 s."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> BentoProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
