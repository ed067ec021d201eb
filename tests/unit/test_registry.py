"""The promotion gate and rollback on a real MLflow registry (SQLite in a temp folder).

One registry for the module (creating its schema takes seconds); each test registers its own
model name, so tests do not see each other's versions.
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest

from pipelines import contracts
from pipelines.metrics import ranking_metrics
from pipelines.protocol import SplitWindows
from pipelines.registry import promotion, versions
from pipelines.training.cli import gate_evidence

WINDOW = SplitWindows.ending(dt.date(2018, 8, 14), train_days=7, delay_days=7, test_days=7)
LATER = WINDOW.shifted(7)
_names = itertools.count()

# A test window of known truth: 20,000 payments of 2,000 cards over 7 days, 5 % fraud (the
# gate's AP interval is then about +-0.035 wide, as on a product week). A model is its
# separation (how far frauds score above genuine payments) plus its own noise.
_rng = np.random.default_rng(0)
N = 20_000
DAYS = _rng.integers(0, 7, N)
CARDS = _rng.integers(0, 2000, N)
LABELS = (_rng.random(N) < 0.05).astype(int)


def model(separation: float, noise: int) -> np.ndarray:
    z = LABELS * separation + np.random.default_rng(noise).normal(size=N) - 3
    return 1 / (1 + np.exp(-z))


def ap(scores: np.ndarray) -> float:
    return ranking_metrics(DAYS, CARDS, LABELS, scores)["average_precision"]


WEAK, GOOD, STRONG = model(1.0, 1), model(2.0, 2), model(3.0, 3)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


@pytest.fixture
def registry(make_settings, tracking_uri, tmp_path):
    """Settings on the shared registry with a fresh model name and floor 0.05 (AP)."""
    return make_settings(
        mlflow_tracking_uri=tracking_uri,
        model_name=f"gate-test-{next(_names)}",
        promotion_metric="average_precision",
        promotion_floor="0.05",
        promotion_bootstrap_draws="100",
    )


class Registry:
    """The scores each registered version gives on the test window (what scoring the
    champion's URI on it would return)."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.scores: dict[str, np.ndarray] = {}
        self.rescored: list[str] = []

    def promote(
        self,
        scores: np.ndarray,
        window: SplitWindows = WINDOW,
        extra_tags: dict[str, str] | None = None,
        value: float | None = None,
    ) -> tuple[str, promotion.PromotionDecision]:
        tags = {**window.as_tags(), **(extra_tags or {})}
        version = versions.register_version(self.settings, "/nonexistent/model", None, tags)
        self.scores[version] = scores

        def paired(uri: str) -> promotion.PairedScores:
            self.rescored.append(uri)
            champion = self.scores[uri.rsplit("/", 1)[1]]
            return promotion.PairedScores(DAYS, CARDS, LABELS, scores, champion)

        value = ap(scores) if value is None else value
        return version, promotion.gate_version(self.settings, version, value, window, paired)


def _alias(settings, alias: str) -> str | None:
    found = versions.version_by_alias(settings, alias)
    return None if found is None else str(found.version)


def _tags(settings, version: str) -> dict[str, str]:
    return versions.tracking.client(settings).get_model_version(settings.model_name, version).tags


def test_first_version_above_the_floor_becomes_champion(registry):
    v1, decision = Registry(registry).promote(GOOD)
    assert decision.promote and decision.alias == contracts.CHAMPION_ALIAS
    assert decision.rule is None and "no champion yet" in decision.reason
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1
    assert _alias(registry, contracts.PREVIOUS_CHAMPION_ALIAS) is None


def test_a_clearly_better_model_ships_with_its_interval_on_the_version(registry):
    models = Registry(registry)
    v1, _ = models.promote(WEAK)
    v2, decision = models.promote(STRONG)
    assert decision.promote and decision.rule == "superiority"
    assert decision.interval_low > 0 and decision.champion_version == v1
    assert decision.champion_value == pytest.approx(ap(WEAK))
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v2
    tags = _tags(registry, v2)
    assert tags["gate_rule"] == "superiority" and "better beyond noise" in tags["gate_reason"]
    low, high = eval(tags["gate_interval"])  # written with repr: exact
    assert (low, high) == (decision.interval_low, decision.interval_high) and 0 < low < high
    assert gate_evidence(tags).startswith("superiority: +")


def test_a_worse_model_is_never_promoted_and_says_why(registry):
    models = Registry(registry)
    v1, _ = models.promote(STRONG)
    v2, decision = models.promote(WEAK)
    assert not decision.promote and decision.interval_high < 0
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1
    assert _alias(registry, contracts.CHALLENGER_ALIAS) == v2
    version = versions.tracking.client(registry).get_model_version(registry.model_name, v2)
    assert version.tags["gate_decision"] == contracts.CHALLENGER_ALIAS
    assert "not shown better" in version.tags["gate_reason"]
    assert version.description.startswith("challenger:")
    assert version.tags["gate_champion_version"] == v1


def test_an_equal_model_does_not_ship_even_when_it_scores_higher_by_noise(registry):
    models = Registry(registry)
    v1, _ = models.promote(GOOD)
    twin = model(2.0, 4)  # the same quality, its own noise
    assert ap(twin) > ap(GOOD)  # a point comparison would have promoted it
    v2, decision = models.promote(twin)
    assert not decision.promote and decision.interval_low <= 0 < decision.interval_high
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1
    assert _alias(registry, contracts.CHALLENGER_ALIAS) == v2


def test_a_tie_keeps_the_champion(registry):
    models = Registry(registry)
    v1, _ = models.promote(GOOD)
    v2, decision = models.promote(GOOD.copy())
    assert not decision.promote and (decision.interval_low, decision.interval_high) == (0, 0)
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1
    assert _alias(registry, contracts.CHALLENGER_ALIAS) == v2


POST_DRIFT = {
    contracts.DRIFT_ALERT_DAY_TAG: (WINDOW.train_end - dt.timedelta(days=2)).isoformat(),
    contracts.WINDOW_CONTAINS_DRIFT_TAG: "true",
}


def test_after_a_drift_a_model_trained_on_it_needs_only_non_inferiority(registry):
    models = Registry(registry)
    models.promote(GOOD, WINDOW.shifted(-7))  # trained before the drift
    slightly_worse = model(1.9, 5)
    assert ap(slightly_worse) < ap(GOOD)
    v2, decision = models.promote(slightly_worse, WINDOW, POST_DRIFT)
    assert decision.rule == "non-inferiority" and decision.margin == 0.05
    assert decision.interval_low < 0 < decision.interval_low + 0.05
    assert decision.promote and _alias(registry, contracts.CHAMPION_ALIAS) == v2
    assert "non-inferiority" in _tags(registry, v2)["gate_reason"]


def test_after_a_drift_a_clearly_worse_model_still_does_not_ship(registry):
    models = Registry(registry)
    v1, _ = models.promote(STRONG, WINDOW.shifted(-7))
    _, decision = models.promote(WEAK, WINDOW, POST_DRIFT)
    assert decision.rule == "non-inferiority" and not decision.promote
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1


@pytest.mark.parametrize(
    ("candidate", "champion_train_end", "rule"),
    [
        (POST_DRIFT, WINDOW.train_end - dt.timedelta(days=3), "non-inferiority"),
        # The champion saw the alert day too: both on the drifted side.
        (POST_DRIFT, WINDOW.train_end - dt.timedelta(days=2), "superiority"),
        # A retrain asked for by the drift whose window ends before it learned nothing of it.
        (
            {**POST_DRIFT, contracts.WINDOW_CONTAINS_DRIFT_TAG: "false"},
            WINDOW.train_end - dt.timedelta(days=9),
            "superiority",
        ),
        ({}, WINDOW.train_end - dt.timedelta(days=9), "superiority"),
    ],
)
def test_comparison_rule(candidate, champion_train_end, rule):
    found, why = promotion.comparison_rule(candidate, {"train_end": champion_train_end.isoformat()})
    assert found == rule and why


def test_below_the_floor_nothing_is_promoted(registry):
    v1, decision = Registry(registry).promote(WEAK, value=0.04)  # no champion, below 0.05
    assert not decision.promote and "floor" in decision.reason
    assert _alias(registry, contracts.CHAMPION_ALIAS) is None
    assert _alias(registry, contracts.CHALLENGER_ALIAS) == v1


def test_below_the_floor_even_a_better_model_is_not_promoted(registry):
    models = Registry(registry)
    v1, _ = models.promote(WEAK)
    floor = ap(STRONG) + 0.01
    models.settings = registry.model_copy(update={"promotion_floor": floor})
    _, decision = models.promote(STRONG)  # clearly better, but not good enough
    assert not decision.promote and "floor" in decision.reason
    assert models.rescored == []  # refused before any comparison
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1


def test_a_better_model_takes_the_alias_and_rollback_restores_the_previous(registry):
    models = Registry(registry)
    v1, _ = models.promote(WEAK)
    v2, d2 = models.promote(GOOD)
    v3, d3 = models.promote(STRONG)
    assert d2.promote and d3.promote and "better beyond noise" in d3.reason
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


def test_champion_of_another_window_is_scored_on_the_new_window(registry):
    models = Registry(registry)
    v1, _ = models.promote(WEAK)
    v2, decision = models.promote(STRONG, LATER)
    assert models.rescored == [f"models:/{registry.model_name}/{v1}"]
    assert decision.promote and _alias(registry, contracts.CHAMPION_ALIAS) == v2


def test_champion_trained_on_the_test_window_is_not_comparable(registry):
    models = Registry(registry)
    models.promote(WEAK, LATER)  # trained on data up to after WINDOW's test period
    v2, decision = models.promote(STRONG, WINDOW)
    assert not decision.promote and "no fair comparison" in decision.reason
    assert models.rescored == []
    assert _alias(registry, contracts.CHALLENGER_ALIAS) == v2


def test_too_few_frauds_to_compare_keeps_the_champion(registry):
    models = Registry(registry)
    v1, _ = models.promote(WEAK)
    one_fraud = np.zeros(N, dtype=int)
    one_fraud[0] = 1
    version = versions.register_version(registry, "/nonexistent/model", None, WINDOW.as_tags())

    def paired(uri: str) -> promotion.PairedScores:
        return promotion.PairedScores(DAYS, CARDS, one_fraud, STRONG, WEAK)

    decision = promotion.gate_version(registry, version, 0.9, WINDOW, paired)
    assert not decision.promote and "no comparison" in decision.reason
    assert _alias(registry, contracts.CHAMPION_ALIAS) == v1


def test_registering_the_same_run_twice_returns_the_same_version(registry):
    first = versions.register_version(registry, "/nonexistent/model", None, {})
    assert versions.register_version(registry, "/nonexistent/model", None, {}) != first  # no run id
    client = versions.tracking.client(registry)
    experiment = client.create_experiment(f"exp-{registry.model_name}")
    run_id = client.create_run(experiment).info.run_id
    a = versions.register_version(registry, "/nonexistent/model", run_id, {})
    assert versions.register_version(registry, "/nonexistent/model", run_id, {}) == a


@pytest.mark.parametrize(
    ("candidate", "low", "floor", "rule", "promote"),
    [
        (0.5, None, 0.3, "superiority", True),  # no champion: the floor decides
        (0.3, None, 0.3, "superiority", True),  # the floor itself clears
        (0.29, None, 0.3, "superiority", False),
        (0.6, 0.01, 0.3, "superiority", True),
        (0.6, 0.0, 0.3, "superiority", False),  # an interval touching 0 keeps the champion
        (0.6, -0.04, 0.3, "non-inferiority", True),  # within the 0.05 margin
        (0.6, -0.05, 0.3, "non-inferiority", False),
        (0.29, 0.2, 0.3, "superiority", False),  # better, below the floor
        (float("nan"), None, 0.0, "superiority", False),
    ],
)
def test_decision_rule(candidate, low, floor, rule, promote):
    comparison = None
    if low is not None:
        comparison = promotion.Comparison(candidate, 0.55, low, low + 0.05, 0.95)
    decision = promotion.promotion_verdict(
        "average_precision", candidate, floor, comparison, "1", rule=rule, margin=0.05
    )
    assert decision.promote is promote
