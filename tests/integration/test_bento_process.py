"""A scoring server that cannot start (or is given up on) is reported, and nothing is left."""

from __future__ import annotations

import os

import psutil
import pytest

from pipelines.platform.scoring import BentoProcess


def test_a_target_that_does_not_import_fails_fast_with_its_log(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "1"}
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(RuntimeError) as failed:
        BentoProcess("no_such_module:NoService", env, tmp_path / "logs", timeout=120)
    message = str(failed.value)
    assert "no_such_module:NoService exited" in message
    assert "no_such_module" in message.split("\n", 1)[1]  # the server's own words follow
    (log,) = (tmp_path / "logs").iterdir()
    assert log.name.startswith("no_such_module-NoService-")
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left


def test_a_scoring_api_not_alive_in_time_is_stopped(make_settings):
    """``make up``'s detached service: given up on, it leaves no supervisor or worker behind."""
    from pipelines.platform.scoring import ScoringService
    from tests.conftest import free_port

    service = ScoringService(make_settings(serving_port=free_port()))
    before = {p.pid for p in psutil.process_iter()}
    with pytest.raises(RuntimeError, match="not alive after"):
        service.up(timeout=0.1)  # far less than a cold start
    assert service.process().pid() is None
    started = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before]
    assert not [p for p in started if "bentoml" in " ".join(p.info["cmdline"] or [])]
