"""The handbook's assessment metrics, implemented with numpy only.

* ``roc_auc`` and ``average_precision`` over the pooled test period, with the same tie handling
  as scikit-learn (AUC counts a tied positive/negative pair as one half; AP is the step-wise
  sum over distinct score thresholds), which the unit tests check against it.
* ``card_precision_at_k`` exactly as the handbook defines it: per test day, cards already
  detected on an earlier test day are removed; each card gets its maximum score and its
  maximum label of the day; cards are sorted by score, ties keeping the order of ascending card
  id (the order of the handbook's ``groupby``, with a stable sort so the order is defined);
  CP@k(day) = fraudulent cards among the top k / k, even when the day has fewer than k cards;
  the fraudulent cards of that top k join the detected set; the result is the mean over days.
* precision and recall of the alerts at an operating threshold (score >= threshold).
* the bootstrap over cards: ``card_draw_weights`` (one draw of cards with replacement, as row
  weights) and ``paired_card_bootstrap`` (the interval of a two-model difference in every
  ranking metric, both models scored on the same draws).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CARD_PRECISION_K = 100


def _as_arrays(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels for {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y, s


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve: P(score of a fraud > score of a genuine), ties count 1/2."""
    y, s = _as_arrays(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    # Mann-Whitney: mid-ranks give a tied pair half a point.
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], s.size]
    mid = (starts + ends + 1) / 2.0  # 1-based mid-rank of each block of equal scores
    ranks[order] = np.repeat(mid, ends - starts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(labels: Sequence[int], scores: Sequence[float]) -> float:
    """AP = sum over distinct thresholds of (recall increment) x (precision at it)."""
    y, s = _as_arrays(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one fraud")
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    # Last index of every block of equal scores: one point of the curve per distinct score.
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    true_pos = np.cumsum(y_sorted)[last]
    precision = true_pos / (last + 1)
    recall_step = np.diff(np.r_[0, true_pos]) / n_pos
    return float(np.sum(recall_step * precision))


def card_precision_at_k_per_day(
    days: Sequence, cards: Sequence[int], labels: Sequence[int], scores: Sequence[float], k: int
) -> list[float]:
    """CP@k of each test day (in day order), with detected cards removed from later days."""
    if k < 1:
        raise ValueError("k must be >= 1")
    y, s = _as_arrays(labels, scores)
    day = np.asarray(days).ravel()
    card = np.asarray(cards, dtype=np.int64).ravel()
    if not (day.size == card.size == y.size):
        raise ValueError("days, cards, labels and scores must have the same length")
    detected: set[int] = set()
    per_day: list[float] = []
    for d in np.unique(day):  # sorted: days in calendar order
        today = (day == d) & ~np.isin(card, np.fromiter(detected, np.int64, len(detected)))
        ids, inverse = np.unique(card[today], return_inverse=True)  # ascending card ids
        best_score = np.full(ids.size, -np.inf)
        np.maximum.at(best_score, inverse, s[today])
        is_fraud = np.zeros(ids.size, dtype=np.int64)
        np.maximum.at(is_fraud, inverse, y[today])
        # Stable sort on the negated score: equal scores keep ascending card-id order.
        top = np.argsort(-best_score, kind="mergesort")[:k]
        caught = ids[top][is_fraud[top] == 1]
        per_day.append(caught.size / k)
        detected.update(int(c) for c in caught)
    return per_day


def card_precision_at_k(
    days: Sequence,
    cards: Sequence[int],
    labels: Sequence[int],
    scores: Sequence[float],
    k: int = CARD_PRECISION_K,
) -> float:
    """The handbook's CP@k: the mean of the per-day values (see the module docstring)."""
    per_day = card_precision_at_k_per_day(days, cards, labels, scores, k)
    if not per_day:
        raise ValueError("no test day")
    return float(np.mean(per_day))


@dataclass(frozen=True)
class ThresholdMetrics:
    threshold: float
    precision: float  # frauds among alerts (0 when there is no alert)
    recall: float  # alerted frauds among frauds
    alerts: int


def at_threshold(
    labels: Sequence[int], scores: Sequence[float], threshold: float
) -> ThresholdMetrics:
    """Precision and recall of the alerts ``score >= threshold``."""
    y, s = _as_arrays(labels, scores)
    alert = s >= threshold
    hits = int(y[alert].sum())
    n_pos = int(y.sum())
    return ThresholdMetrics(
        threshold=float(threshold),
        precision=hits / int(alert.sum()) if alert.any() else 0.0,
        recall=hits / n_pos if n_pos else 0.0,
        alerts=int(alert.sum()),
    )


def best_f1_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The score threshold with the highest F1 (the operating point chosen on validation)."""
    y, s = _as_arrays(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    y_sorted, s_sorted = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    true_pos = np.cumsum(y_sorted)[last]
    n_pos = max(int(y.sum()), 1)
    f1 = 2 * true_pos / (last + 1 + n_pos)
    return float(s_sorted[last[int(np.argmax(f1))]])


def ranking_metrics(
    days: Sequence,
    cards: Sequence[int],
    labels: Sequence[int],
    scores: Sequence[float],
    k: int = CARD_PRECISION_K,
) -> dict[str, float]:
    """The threshold-free metrics (the ones the promotion gate may compare)."""
    return {
        "roc_auc": roc_auc(labels, scores),
        "average_precision": average_precision(labels, scores),
        f"card_precision_at_{k}": card_precision_at_k(days, cards, labels, scores, k),
    }


def assess(
    days: Sequence,
    cards: Sequence[int],
    labels: Sequence[int],
    scores: Sequence[float],
    threshold: float,
    k: int = CARD_PRECISION_K,
) -> dict[str, float]:
    """Every metric the platform reports for one assessment period, by MLflow metric name."""
    op = at_threshold(labels, scores, threshold)
    return {
        **ranking_metrics(days, cards, labels, scores, k),
        "precision_at_threshold": op.precision,
        "recall_at_threshold": op.recall,
        "alerts_at_threshold": float(op.alerts),
        "threshold": op.threshold,
    }


def card_draw_weights(codes: np.ndarray, n_cards: int, rng: np.random.Generator) -> np.ndarray:
    """One bootstrap draw of ``n_cards`` cards with replacement, as row weights.

    ``codes``: each row's card as an integer in ``[0, n_cards)``. Returns, per row, how many
    times its card was drawn (int64, 0 when it was not): a card's transactions move together,
    since they are not independent (frauds come in bursts per compromised card). The weights
    sum to the number of rows of the resample. Exactly one ``rng.integers(0, n_cards, n_cards)``
    call per draw, so a seeded caller's draws are reproducible.
    """
    counts = np.bincount(rng.integers(0, n_cards, n_cards), minlength=n_cards)
    return counts[np.asarray(codes)].astype(np.int64)


def paired_card_bootstrap(
    days: Sequence,
    cards: Sequence[int],
    labels: Sequence[int],
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    *,
    draws: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    k: int = CARD_PRECISION_K,
) -> dict[str, tuple[float, float]]:
    """The ``1 - alpha`` percentile interval of metric(a) - metric(b) for every metric of
    ``ranking_metrics``, over ``draws`` resamples of the cards with replacement.

    Paired: both models are scored on the same resample. A card drawn j times contributes j
    copies of its rows, each copy under a card id of its own, so for CP@k it counts as j
    distinct cards (as j customers would). Raises ``ValueError`` when a resample lacks a
    class (AUC and AP are undefined there), as ``ranking_metrics`` does.
    """
    if draws < 1:
        raise ValueError("draws must be >= 1")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    y, a = _as_arrays(labels, scores_a)
    _, b = _as_arrays(labels, scores_b)
    day = np.asarray(days).ravel()
    card = np.asarray(cards, dtype=np.int64).ravel()
    if not (day.size == card.size == y.size == b.size):
        raise ValueError("days, cards, labels and both score columns must have the same length")
    # Codes in ascending card id: with every weight 1 the resample keeps CP@k's tie order.
    ids, codes = np.unique(card, return_inverse=True)
    rng = np.random.default_rng(seed)
    differences: dict[str, list[float]] = {}
    for _ in range(draws):
        weights = card_draw_weights(codes, ids.size, rng)
        rows = np.repeat(np.arange(y.size), weights)
        # Copy j of a row belongs to copy j of its card: card ids code * max_copies + j.
        first = np.repeat(np.cumsum(weights) - weights, weights)
        copy = np.arange(rows.size) - first
        copy_card = codes[rows] * max(int(weights.max()), 1) + copy
        metric_a = ranking_metrics(day[rows], copy_card, y[rows], a[rows], k)
        metric_b = ranking_metrics(day[rows], copy_card, y[rows], b[rows], k)
        for name, value in metric_a.items():
            differences.setdefault(name, []).append(value - metric_b[name])
    quantiles = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    intervals: dict[str, tuple[float, float]] = {}
    for name, values in differences.items():
        low, high = np.percentile(values, quantiles)
        intervals[name] = (float(low), float(high))
    return intervals
