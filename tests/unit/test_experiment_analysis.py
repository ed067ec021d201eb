"""The experiment analysis on simulated labelled predictions whose truth is known."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipelines.experiment.assignment import TREATMENT, assign
from pipelines.experiment.statistics import (
    AnalysisConfig,
    _SortedScores,
    compare,
    detect_mode,
)
from pipelines.metrics import average_precision

CONFIG = AnalysisConfig(n_bootstrap=500)


def simulate(
    mode: str,
    control_signal: float,
    treatment_signal: float,
    *,
    seed: int = 0,
    n_customers: int = 3000,
    tx_per_customer: int = 15,
    share: float = 0.5,
) -> pd.DataFrame:
    """Prediction-log rows with labels: frauds cluster on compromised cards; each model's score
    separates frauds by its ``signal`` (a larger signal = a better model)."""
    rng = np.random.default_rng(seed)
    customers = np.repeat(np.arange(n_customers), tx_per_customer)
    n = customers.size
    compromised = rng.random(n_customers) < 0.05
    fraud = (compromised[customers] & (rng.random(n) < 0.4)).astype("int64")

    # Two models of the same features make mostly the same mistakes: shared noise.
    shared = rng.normal(0, 1.3, n)

    def scores(signal: float) -> np.ndarray:
        margin = signal * (2 * fraud - 1) + shared + rng.normal(0, 0.75, n) - 2
        return np.round(1 / (1 + np.exp(-margin)), 6)

    control, treatment = scores(control_signal), scores(treatment_signal)
    frame = pd.DataFrame(
        {
            "transaction_id": np.arange(n),
            "customer_id": customers,
            "tx_day": [
                dt.date(2024, 5, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 10, n)
            ],
            "tx_fraud": fraud.astype("float64"),
            "challenger_failed": False,
            "latency_ms": rng.gamma(4, 0.5, n),
            "model_latency_ms": rng.gamma(4, 0.25, n),
        }
    )
    if mode == "ab":
        variant = np.array([assign(int(c), "test-salt", share) for c in customers])
        treated = variant == TREATMENT
        frame["variant"] = variant
        frame["model_version"] = np.where(treated, "2", "1")
        frame["fraud_probability"] = np.where(treated, treatment, control)
        frame["shadow_probability"] = None
        frame["shadow_model_version"] = None
        frame["shadow_latency_ms"] = None
    else:
        frame["variant"] = "control"
        frame["model_version"] = "1"
        frame["fraud_probability"] = control
        frame["shadow_probability"] = treatment
        frame["shadow_model_version"] = "2"
        frame["shadow_latency_ms"] = rng.gamma(4, 0.25, n)
    return frame


@pytest.mark.parametrize("mode", ["ab", "shadow"])
def test_ship_when_the_treatment_is_better(mode):
    result = compare(simulate(mode, 1.0, 2.0), "1", "2", CONFIG)
    assert result.mode == mode
    assert result.decision == "ship", result.reasons
    assert result.difference.ci_low > 0 and result.difference.paired == (mode == "shadow")
    arms = result.arms
    assert arms["treatment"].average_precision > arms["control"].average_precision
    assert all(g.passed for g in result.guardrails)


@pytest.mark.parametrize("mode", ["ab", "shadow"])
def test_kill_when_the_treatment_is_worse(mode):
    result = compare(simulate(mode, 2.0, 1.0), "1", "2", CONFIG)
    assert result.decision == "kill", result.reasons
    assert result.difference.ci_high < 0
    assert "worse" in result.reasons[0]


@pytest.mark.parametrize("mode", ["ab", "shadow"])
def test_iterate_when_indistinguishable(mode):
    result = compare(simulate(mode, 1.5, 1.5, seed=1), "1", "2", CONFIG)
    assert result.decision == "iterate", result.reasons
    assert result.difference.ci_low <= 0 <= result.difference.ci_high


def test_paired_shadow_detects_what_an_unpaired_test_of_the_same_size_cannot():
    """A small improvement: shadow (paired) sees it, A/B on the same traffic does not yet."""
    small = dict(n_customers=1500, seed=1)
    shadow = compare(simulate("shadow", 1.5, 1.6, **small), "1", "2", CONFIG)
    ab = compare(simulate("ab", 1.5, 1.6, **small), "1", "2", CONFIG)
    shadow_width = shadow.difference.ci_high - shadow.difference.ci_low
    ab_width = ab.difference.ci_high - ab.difference.ci_low
    assert shadow_width < ab_width / 2
    assert shadow.decision == "ship" and ab.decision == "iterate"


def test_too_few_labels_is_iterate_not_a_verdict():
    frame = simulate("ab", 1.0, 3.0)
    frame.loc[frame.index[200:], "tx_fraud"] = np.nan  # labels have not arrived yet
    result = compare(frame, "1", "2", CONFIG)
    assert result.decision == "iterate" and result.difference is None
    assert "not enough labelled outcomes" in result.reasons[0]


def test_guardrail_error_rate_kills_a_better_model():
    frame = simulate("ab", 1.0, 2.0)
    treated = frame.index[frame.variant == TREATMENT]
    failed = treated[: len(treated) // 20]  # 5 % of its requests fell back to the champion
    frame.loc[failed, ["model_version", "challenger_failed"]] = ["1", True]
    result = compare(frame, "1", "2", CONFIG)
    assert result.decision == "kill"
    assert result.guardrails[0].name == "error_rate" and not result.guardrails[0].passed
    assert result.arms["treatment"].error_rate == pytest.approx(0.05, abs=0.001)


def test_guardrail_latency_kills_a_slow_shadow_model():
    frame = simulate("shadow", 1.0, 2.0)
    frame["shadow_latency_ms"] = frame["model_latency_ms"] * 3 + 5
    result = compare(frame, "1", "2", CONFIG)
    assert result.decision == "kill"
    assert [g.name for g in result.guardrails if not g.passed] == ["latency_p95_ms"]


def test_rows_of_other_versions_are_ignored_and_no_experiment_is_iterate():
    frame = simulate("ab", 1.0, 2.0)
    other = compare(frame, "1", "9", CONFIG)  # the log holds no prediction of v9
    assert other.mode is None and other.decision == "iterate"
    assert (
        detect_mode(frame, "2") == "ab" and detect_mode(simulate("shadow", 1, 1), "2") == "shadow"
    )


def test_weighted_average_precision_equals_the_protocol_metric():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.1).astype("int64")
    s = np.round(rng.random(500), 2)  # many ties
    sorted_scores = _SortedScores(y, s)
    assert sorted_scores.average_precision(np.ones(500)) == pytest.approx(average_precision(y, s))
    w = rng.integers(0, 3, 500).astype("float64")
    repeated = np.repeat(np.arange(500), w.astype(int))
    assert sorted_scores.average_precision(w) == pytest.approx(
        average_precision(y[repeated], s[repeated])
    )
