"""The payment network as a background service of ``make up`` (``pipelines/traffic.py``)."""

from __future__ import annotations

import os
import sys

from pipelines.config import PROJECT_ROOT, Settings
from pipelines.platform.process import ManagedProcess


class PaymentNetwork:
    """``python -m pipelines traffic replay --follow``: the live days' payments sent to
    ``/score`` at their times; log in ``<home>/logs/traffic-replay.log``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def process(self) -> ManagedProcess:
        s = self.settings
        command = [sys.executable, "-m", "pipelines", "traffic", "replay", "--follow"]
        return ManagedProcess("traffic-replay", command, s.home / "run", s.home / "logs")

    def up(self) -> bool:
        """Start it when live traffic is on; True if it runs."""
        if not self.settings.live_traffic:
            return False
        env = {**os.environ, "FRAUD_HOME": str(self.settings.home)}
        self.process().start(env, cwd=PROJECT_ROOT)
        return True

    def down(self) -> bool:
        return self.process().stop()
