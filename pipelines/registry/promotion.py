"""The promotion gate and rollback: the moves of the ``champion`` alias.

Aliases of ``settings.model_name``:

* ``champion`` - the version serving loads (``models:/<name>@champion``);
* ``challenger`` - the latest version the gate did not promote;
* ``previous_champion`` - the champion before the current one (what ``rollback`` restores).

Gate rule
---------
A new version must reach ``settings.promotion_floor`` on its test window (the newest window
whose labels have all arrived). With no champion, that suffices. Otherwise both models are
scored on that window's payments and compared on ``settings.promotion_metric`` by a paired
bootstrap over cards (``metrics.paired_card_bootstrap``: ``promotion_bootstrap_draws``
resamples, a ``promotion_confidence`` percentile interval of challenger - champion):

* **superiority** (the default): promoted only if the whole interval is above 0. A difference
  the data cannot tell from noise keeps the champion; so does a tie.
* **non-inferiority**, when the new version was trained on data after a detected drift and the
  champion only on data before it (``comparison_rule``: the version's ``drift_alert_day`` and
  ``window_contains_drift`` lineage tags, the champion's ``train_end``): promoted if the
  interval is above ``-promotion_noninferiority_margin``. The champion has never seen the
  drifted world, which the window it is compared on may not yet show.

The champion can be compared only if it was trained before the window (its training cutoff is
not after the window's start); if its training data overlaps the window, the new version is not
promoted. Otherwise the version gets ``challenger``. The verdict, the rule, the difference and
its interval go on the version's tags (``gate_*``) and its description; ``registry show``
prints them.

Promotion is one alias move (``champion`` -> new version); before it, the old champion is
recorded as the new version's ``previous_champion`` tag and alias, so ``rollback`` is one alias
move back and can be repeated down the chain. Every promotion and rollback is appended to the
registered model's ``champion_history`` tag.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from pipelines.config import Settings
from pipelines.contracts import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    DRIFT_ALERT_DAY_TAG,
    PREVIOUS_CHAMPION_ALIAS,
    WINDOW_CONTAINS_DRIFT_TAG,
)
from pipelines.metrics import paired_card_bootstrap, ranking_metrics
from pipelines.protocol import SplitWindows
from pipelines.registry import tracking, versions

log = logging.getLogger(__name__)

Rule = Literal["superiority", "non-inferiority"]


@dataclass(frozen=True)
class PairedScores:
    """The new version and the champion scored on the same labelled payments."""

    days: np.ndarray
    cards: np.ndarray
    labels: np.ndarray
    candidate: np.ndarray
    champion: np.ndarray


@dataclass(frozen=True)
class Comparison:
    """The new version against the champion on one window: values and the bootstrap interval
    of their difference (candidate - champion)."""

    candidate_value: float
    champion_value: float
    low: float
    high: float
    confidence: float

    @property
    def difference(self) -> float:
        return self.candidate_value - self.champion_value


def compare(
    scores: PairedScores, metric: str, *, draws: int, confidence: float, seed: int = 0
) -> Comparison:
    """``metric`` of both models and the paired card-bootstrap interval of the difference.
    Raises ``ValueError`` when a resample lacks a class (too few frauds to compare)."""
    candidate = ranking_metrics(scores.days, scores.cards, scores.labels, scores.candidate)
    champion = ranking_metrics(scores.days, scores.cards, scores.labels, scores.champion)
    intervals = paired_card_bootstrap(
        scores.days,
        scores.cards,
        scores.labels,
        scores.candidate,
        scores.champion,
        draws=draws,
        seed=seed,
        alpha=1 - confidence,
    )
    low, high = intervals[metric]
    return Comparison(float(candidate[metric]), float(champion[metric]), low, high, confidence)


def comparison_rule(
    candidate_tags: dict[str, str], champion_tags: dict[str, str]
) -> tuple[Rule, str]:
    """Which rule applies, and why (see the module docstring)."""
    alert = candidate_tags.get(DRIFT_ALERT_DAY_TAG)
    champion_end = champion_tags.get("train_end")
    drifted = alert and candidate_tags.get(WINDOW_CONTAINS_DRIFT_TAG) == "true"
    if (
        drifted
        and champion_end
        and dt.date.fromisoformat(champion_end) < dt.date.fromisoformat(alert)
    ):
        return (
            "non-inferiority",
            f"trained on data after the drift alerted on {alert}, the champion only on data "
            f"up to {champion_end}",
        )
    return "superiority", "both trained on the same side of any detected drift"


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    metric: str
    candidate_value: float
    champion_value: float | None = None
    champion_version: str | None = None
    version: str | None = None
    rule: Rule | None = None  # None: no comparison was made
    interval_low: float | None = None
    interval_high: float | None = None
    confidence: float | None = None
    margin: float | None = None

    @property
    def alias(self) -> str:
        return CHAMPION_ALIAS if self.promote else CHALLENGER_ALIAS

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alias": self.alias}


def promotion_verdict(
    metric: str,
    candidate_value: float,
    floor: float,
    comparison: Comparison | None = None,
    champion_version: str | None = None,
    *,
    rule: Rule = "superiority",
    margin: float = 0.0,
    why: str = "",
) -> PromotionDecision:
    """The gate rule alone (no registry): see the module docstring. ``comparison`` is None
    when there is no champion."""
    if not candidate_value >= floor:  # also refuses NaN
        return PromotionDecision(
            False,
            f"{metric} {candidate_value:.4f} is below the floor {floor:.4f}",
            metric,
            candidate_value,
            champion_value=None if comparison is None else comparison.champion_value,
            champion_version=champion_version,
        )
    if comparison is None:
        return PromotionDecision(
            True,
            f"no champion yet; {metric} {candidate_value:.4f} clears the floor",
            metric,
            candidate_value,
        )
    c = comparison
    bound = 0.0 if rule == "superiority" else -margin
    promote = c.low > bound
    measured = (
        f"{metric} {c.candidate_value:.4f} vs champion v{champion_version} "
        f"{c.champion_value:.4f}: difference {c.difference:+.4f}, {c.confidence:.0%} interval "
        f"[{c.low:+.4f}, {c.high:+.4f}] over cards"
    )
    if rule == "superiority":
        verdict = (
            "above 0 (superiority): better beyond noise"
            if promote
            else "not above 0 (superiority): not shown better, the champion stays"
        )
    else:
        verdict = (
            f"above -{margin:.4f} (non-inferiority, {why}): not worse beyond the margin"
            if promote
            else f"not above -{margin:.4f} (non-inferiority, {why}): not shown within the "
            "margin, the champion stays"
        )
    return PromotionDecision(
        promote,
        f"{measured} is {verdict}",
        metric,
        candidate_value,
        champion_value=c.champion_value,
        champion_version=champion_version,
        rule=rule,
        interval_low=c.low,
        interval_high=c.high,
        confidence=c.confidence,
        margin=margin if rule == "non-inferiority" else 0.0,
    )


def _trained_before(tags: dict[str, str], windows: SplitWindows) -> bool:
    cutoff = tags.get("training_cutoff")
    if cutoff is None:
        return False
    test_start = dt.datetime.combine(windows.test_start, dt.time(), dt.UTC)
    return dt.datetime.fromisoformat(cutoff) <= test_start


def gate_version(
    settings: Settings,
    version: str,
    candidate_value: float,
    windows: SplitWindows,
    paired_scores: Callable[[str], PairedScores],
) -> PromotionDecision:
    """Decide on ``version`` against the current champion and move the aliases.

    ``paired_scores(champion_uri)`` scores the new version and the champion on ``windows``'
    test period (called only when there is a champion to compare with).
    """
    metric = settings.promotion_metric
    floor = settings.promotion_floor
    current = versions.champion(settings)
    current_version = None if current is None else str(current.version)
    if current is not None and current_version == version:
        return PromotionDecision(
            True, "already the champion", metric, candidate_value, version=version
        )
    if current is None:
        decision = promotion_verdict(metric, candidate_value, floor)
    elif not candidate_value >= floor:
        decision = promotion_verdict(metric, candidate_value, floor, None, current_version)
    elif _trained_before(current.tags, windows):
        mine = tracking.client(settings).get_model_version(settings.model_name, version).tags
        rule, why = comparison_rule(mine, current.tags)
        uri = f"models:/{settings.model_name}/{current_version}"
        try:
            comparison = compare(
                paired_scores(uri),
                metric,
                draws=settings.promotion_bootstrap_draws,
                confidence=settings.promotion_confidence,
            )
        except ValueError as exc:
            decision = PromotionDecision(
                False,
                f"no comparison with champion v{current_version} on {windows.test_start}.."
                f"{windows.test_end}: {exc}; not promoted",
                metric,
                candidate_value,
                champion_version=current_version,
            )
        else:
            decision = promotion_verdict(
                metric,
                candidate_value,
                floor,
                comparison,
                current_version,
                rule=rule,
                margin=settings.promotion_noninferiority_margin,
                why=why,
            )
    else:
        decision = PromotionDecision(
            False,
            f"champion v{current_version} was trained on data of this test window "
            f"({windows.test_start}..{windows.test_end}): no fair comparison, not promoted",
            metric,
            candidate_value,
            champion_version=current_version,
        )
    decision = PromotionDecision(**{**asdict(decision), "version": version})
    apply_decision(settings, version, decision)
    return decision


def apply_decision(settings: Settings, version: str, decision: PromotionDecision) -> None:
    """Record the decision on the version, then move one alias."""
    c = tracking.client(settings)
    name = settings.model_name
    tags = {
        "gate_decision": decision.alias,
        "gate_reason": decision.reason,
        "gate_metric": decision.metric,
        "gate_candidate_value": repr(float(decision.candidate_value)),
        "gate_champion_value": ""
        if decision.champion_value is None
        else repr(float(decision.champion_value)),
        "gate_champion_version": decision.champion_version or "",
        "gate_rule": decision.rule or "",
        "gate_interval": ""
        if decision.interval_low is None
        else f"[{decision.interval_low!r}, {decision.interval_high!r}]",
        "gate_confidence": "" if decision.confidence is None else repr(decision.confidence),
        "gate_margin": "" if decision.margin is None else repr(decision.margin),
        "gate_at": versions.now(),
    }
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, value)
    c.update_model_version(name, version, description=f"{decision.alias}: {decision.reason}")
    if not decision.promote:
        c.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
        log.info("%s v%s -> %s: %s", name, version, CHALLENGER_ALIAS, decision.reason)
        return
    found = versions.champion(settings)
    previous = None if found is None else str(found.version)
    if previous is not None and previous != version:
        c.set_model_version_tag(name, version, PREVIOUS_CHAMPION_ALIAS, previous)
        c.set_registered_model_alias(name, PREVIOUS_CHAMPION_ALIAS, previous)
    c.set_registered_model_alias(name, CHAMPION_ALIAS, version)  # the move serving sees
    challenger = versions.version_by_alias(settings, CHALLENGER_ALIAS)
    if challenger is not None and str(challenger.version) == version:
        c.delete_registered_model_alias(name, CHALLENGER_ALIAS)
    versions.append_history(
        settings,
        {
            "event": "promote",
            "version": version,
            "replaced": previous,
            "at": tags["gate_at"],
        },
    )
    log.info("%s v%s -> %s: %s", name, version, CHAMPION_ALIAS, decision.reason)


def rollback(settings: Settings, reason: str = "manual rollback") -> tuple[str, str]:
    """Give ``champion`` back to the version it replaced; returns (from, to) versions."""
    c = tracking.client(settings)
    name = settings.model_name
    current = versions.champion(settings)
    if current is None:
        raise versions.RegistryError(f"{name} has no champion: nothing to roll back")
    rolled_back = str(current.version)
    target = current.tags.get(PREVIOUS_CHAMPION_ALIAS)
    if not target:
        raise versions.RegistryError(
            f"{name} v{rolled_back} replaced no champion: nothing to restore"
        )
    c.set_registered_model_alias(name, CHAMPION_ALIAS, target)  # the one move serving sees
    at = versions.now()
    c.set_model_version_tag(name, rolled_back, "rolled_back_at", at)
    c.set_model_version_tag(name, rolled_back, "rolled_back_reason", reason)
    c.set_model_version_tag(name, target, "restored_at", at)
    # The restored version's own predecessor becomes the next rollback target.
    before = c.get_model_version(name, target).tags.get(PREVIOUS_CHAMPION_ALIAS)
    if before:
        c.set_registered_model_alias(name, PREVIOUS_CHAMPION_ALIAS, before)
    else:
        c.delete_registered_model_alias(name, PREVIOUS_CHAMPION_ALIAS)
    versions.append_history(
        settings,
        {
            "event": "rollback",
            "version": target,
            "replaced": rolled_back,
            "at": at,
            "reason": reason,
        },
    )
    log.info("%s champion rolled back v%s -> v%s (%s)", name, rolled_back, target, reason)
    return rolled_back, target
