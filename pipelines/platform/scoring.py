"""The scoring API (``bentoml serve``) as a tracked local process, for ``make up``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.platform.mlflow import healthy
from pipelines.platform.process import ManagedProcess, wait_until

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
        """Start it and wait until it is alive (ready only once a champion exists)."""
        env = {**os.environ, "FRAUD_HOME": str(self.settings.home), "BENTOML_DO_NOT_TRACK": "True"}
        proc = self.process()
        proc.start(env, cwd=PROJECT_ROOT)
        if not wait_until(lambda: healthy(f"{self.url}/livez"), timeout=timeout, interval=1.0):
            raise RuntimeError(f"scoring API not alive after {timeout:.0f}s: {proc.log_file}")

    def ready(self) -> bool:
        return healthy(f"{self.url}/readyz")

    def down(self) -> bool:
        return self.process().stop()
