"""Shared fixtures: every test gets its own runtime home, so nothing touches ./var."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from pipelines.config import Settings, get_settings, load_settings

# Small worlds keep the suite fast; the handbook-size check sets its own sizes.
SMALL_WORLD = {"FRAUD_N_CUSTOMERS": "300", "FRAUD_N_TERMINALS": "600"}


@pytest.fixture
def make_settings(tmp_path, monkeypatch) -> Callable[..., Settings]:
    """Settings on a temporary home; keyword arguments become FRAUD_* environment variables."""

    def factory(**overrides: object) -> Settings:
        env = {"FRAUD_HOME": str(tmp_path / "home"), "FRAUD_HISTORY_START": "2018-04-01"}
        env |= SMALL_WORLD
        env |= {f"FRAUD_{k.upper()}": str(v) for k, v in overrides.items()}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return load_settings()

    yield factory
    get_settings.cache_clear()


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
