"""The promotion gate and rollback on a real MLflow registry (SQLite in a temp folder).

One registry for the module (creating its schema takes seconds); each test registers its own
model name, so tests do not see each other's versions.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from pipelines import contracts
from pipelines.protocol import SplitWindows
from pipelines.registry import promotion, versions

WINDOW = SplitWindows.ending(dt.date(2018, 8, 14), train_days=7, delay_days=7, test_days=7)
LATER = WINDOW.shifted(7)
_names = itertools.count()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


@pytest.fixture
def registry(make_settings, tracking_uri, tmp_path):
    """Settings on the shared registry with a fresh model name and floor 0.3 (AP)."""
    return make_settings(
        mlflow_tracking_uri=tracking_uri,
        model_name=f"gate-test-{next(_names)}",
        promotion_metric="average_precision",
        promotion_floor="0.3",
    )


def _version(settings, ap: float, window: SplitWindows = WINDOW) -> str:
    tags = {**window.as_tags(), "test_average_precision": f"{ap:.6f}"}
    return versions.register_version(settings, "/nonexistent/model", None, tags)


def _never(uri: str) -> float:
    raise AssertionError(f"the champion needs no rescoring on its own window ({uri})")


def _promote(settings, ap: float, window: SplitWindows = WINDOW, rescore=_never):
    version = _version(settings, ap, window)
    return version, promotion.gate_version(settings, version, ap, window, rescore)


def _alias(settings, alias: str) -> str | None:
    found = versions.version_by_alias(settings, alias)
    return None if found is None else str(found.version)


def test_first_version_above_the_floor_becomes_champion(registry):
    v1, decision = _promote(registry, 0.6)
    assert decision.promote and decision.alias == contracts.CHAMPION_ALIAS
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1
    assert _alias(registry, contracts.PREVIOUS_CHAMPION_ALIAS) is None


def test_a_worse_model_is_never_promoted_and_says_why(registry):
    v1, _ = _promote(registry, 0.6)
    v2, decision = _promote(registry, 0.55)
    assert not decision.promote
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1
    assert _alias(registry, contracts.CHALLENGER_ALIAS) == v2
    version = versions.tracking.client(registry).get_model_version(registry.model_name, v2)
    assert version.tags["gate_decision"] == contracts.CHALLENGER_ALIAS
    assert "does not beat" in version.tags["gate_reason"]
    assert version.description.startswith("challenger:")
    assert version.tags["gate_champion_version"] == v1


def test_a_tie_keeps_the_champion(registry):
    v1, _ = _promote(registry, 0.6)
    v2, decision = _promote(registry, 0.6)
    assert not decision.promote and "tie" in decision.reason
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1
    assert _alias(registry, contracts.CHALLENGER_ALIAS) == v2


def test_below_the_floor_nothing_is_promoted(registry):
    v1, decision = _promote(registry, 0.2)  # no champion yet, but below 0.3
    assert not decision.promote and "floor" in decision.reason
    assert _alias(registry, contracts.CHAMPION_ALIAS) is None
    assert _alias(registry, contracts.CHALLENGER_ALIAS) == v1


def test_below_the_floor_even_a_better_model_is_not_promoted(make_settings, tracking_uri):
    settings = make_settings(
        mlflow_tracking_uri=tracking_uri,
        model_name=f"gate-test-{next(_names)}",
        promotion_floor="0.0",
    )
    v1, _ = _promote(settings, 0.25)
    settings = make_settings(
        mlflow_tracking_uri=tracking_uri, model_name=settings.model_name, promotion_floor="0.3"
    )
    _, decision = _promote(settings, 0.29)  # beats 0.25 but not the floor
    assert not decision.promote
    assert _alias(settings, contracts.CHAMPION_ALIAS) == v1


def test_a_better_model_takes_the_alias_and_rollback_restores_the_previous(registry):
    v1, _ = _promote(registry, 0.5)
    v2, d2 = _promote(registry, 0.6)
    v3, d3 = _promote(registry, 0.7)
    assert d2.promote and d3.promote and "beats champion" in d3.reason
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v3
    assert _alias(registry, contracts.PREVIOUS_CHAMPION_ALIAS) == v2

    assert promotion.rollback(registry, "bad deploy") == (v3, v2)
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v2
    assert _alias(registry, contracts.PREVIOUS_CHAMPION_ALIAS) == v1
    client = versions.tracking.client(registry)
    assert client.get_model_version(registry.model_name, v3).tags["rolled_back_reason"] == (
        "bad deploy"
    )
    assert promotion.rollback(registry) == (v2, v1)
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1
    assert _alias(registry, contracts.PREVIOUS_CHAMPION_ALIAS) is None
    with pytest.raises(versions.RegistryError):
        promotion.rollback(registry)
    events = [e["event"] for e in versions.describe(registry)["history"]]
    assert events == ["promote", "promote", "promote", "rollback", "rollback"]


def test_rollback_without_champion_fails_clearly(registry):
    with pytest.raises(versions.RegistryError, match="no champion"):
        promotion.rollback(registry)


def test_champion_of_another_window_is_rescored_on_the_new_window(registry):
    v1, _ = _promote(registry, 0.9)  # a high score, but on its own (older) window
    seen: list[str] = []

    def rescore(uri: str) -> float:
        seen.append(uri)
        return 0.5  # the champion on the new window

    v2, decision = _promote(registry, 0.6, LATER, rescore)
    assert seen == [f"models:/{registry.model_name}/{v1}"]
    assert decision.promote and decision.champion_value == 0.5
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v2


def test_champion_trained_on_the_test_window_is_not_comparable(registry):
    _promote(registry, 0.6, LATER)  # trained on data up to after WINDOW's test period
    v2, decision = _promote(registry, 0.95, WINDOW)
    assert not decision.promote and "no fair comparison" in decision.reason
    assert _alias(registry, contracts.CHALLENGER_ALIAS) == v2


def test_registering_the_same_run_twice_returns_the_same_version(registry):
    first = versions.register_version(registry, "/nonexistent/model", None, {})
    assert versions.register_version(registry, "/nonexistent/model", None, {}) != first  # no run id
    client = versions.tracking.client(registry)
    experiment = client.create_experiment(f"exp-{registry.model_name}")
    run_id = client.create_run(experiment).info.run_id
    a = versions.register_version(registry, "/nonexistent/model", run_id, {})
    assert versions.register_version(registry, "/nonexistent/model", run_id, {}) == a


@pytest.mark.parametrize(
    ("candidate", "champion", "floor", "promote"),
    [
        (0.5, None, 0.3, True),
        (0.3, None, 0.3, True),  # the floor itself clears
        (0.29, None, 0.3, False),
        (0.6, 0.5, 0.3, True),
        (0.5, 0.5, 0.3, False),  # tie: the champion stays
        (0.4, 0.5, 0.3, False),
        (float("nan"), None, 0.0, False),
    ],
)
def test_decision_rule(candidate, champion, floor, promote):
    decision = promotion.promotion_verdict("average_precision", candidate, champion, floor, "1")
    assert decision.promote is promote
