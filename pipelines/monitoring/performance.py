"""Model performance on the latest window whose labels have arrived.

Labels of day d arrive ``label_delay_days`` later, so on monitored day D the newest labelled day
is D - delay. The window is the ``PERFORMANCE_WINDOW_DAYS`` days ending there; the scores are
the champion's own (prediction log, ``model_version`` = the champion), the labels come from the
mart. The metrics are the training protocol's (``pipelines.metrics``), compared with
the figures the champion was registered with (its ``metric.*`` version tags).

Not identical to the training assessment: the test period there drops cards already known to be
compromised; here every scored transaction counts. A slightly lower CP@100 in service is
expected; the policy gates retraining on the promotion metric only.
"""

from __future__ import annotations

import datetime as dt
import logging

from pipelines import metrics
from pipelines.config import Settings
from pipelines.monitoring.data import read_labelled_scores
from pipelines.monitoring.policy import DEFAULT_THRESHOLDS, Thresholds, performance_severity
from pipelines.monitoring.scores import PerformanceCheck

log = logging.getLogger(__name__)

PERFORMANCE_WINDOW_DAYS = 7
# Too few frauds make AP and CP@100 noise: below this the window is not assessed.
MIN_FRAUDS = 10
CARD_PRECISION_K = 100


def labelled_window(
    day: dt.date, label_delay_days: int, window_days: int = PERFORMANCE_WINDOW_DAYS
) -> tuple[dt.date, dt.date]:
    last = day - dt.timedelta(days=label_delay_days)
    return last - dt.timedelta(days=window_days - 1), last


def evaluate(
    days: list, cards: list[int], labels: list[int], scores: list[float]
) -> dict[str, float]:
    """AUC, AP and CP@100 of one window (the handbook's metrics, as in training)."""
    return {
        "roc_auc": float(metrics.roc_auc(labels, scores)),
        "average_precision": float(metrics.average_precision(labels, scores)),
        "card_precision_at_100": float(
            metrics.card_precision_at_k(days, cards, labels, scores, CARD_PRECISION_K)
        ),
    }


def performance_checks(
    settings: Settings,
    day: dt.date,
    champion_metrics: dict[str, float],
    model_version: str | None,
    *,
    window_days: int = PERFORMANCE_WINDOW_DAYS,
    min_frauds: int = MIN_FRAUDS,
    max_degradation: float | None = None,
) -> tuple[list[PerformanceCheck], str | None]:
    """The checks of the labelled window before ``day``; (checks, note when not assessable)."""

    thresholds = Thresholds(
        max_degradation=(
            DEFAULT_THRESHOLDS.max_degradation if max_degradation is None else max_degradation
        ),
        promotion_metric=settings.promotion_metric,
    )
    first, last = labelled_window(day, settings.label_delay_days, window_days)
    frame = read_labelled_scores(settings, first, last, model_version)
    if frame is None:
        return [], f"performance: no scored and labelled transactions in {first}..{last}"
    frauds = int(frame["tx_fraud"].sum())
    if frauds < min_frauds or frauds == len(frame):
        return [], f"performance: {frauds} frauds in {first}..{last}, too few to assess"
    values = evaluate(
        list(frame["tx_day"]),
        frame["customer_id"].astype("int64").tolist(),
        frame["tx_fraud"].astype("int64").tolist(),
        frame["score"].astype("float64").tolist(),
    )
    checks = []
    for metric, current in values.items():
        reference = champion_metrics.get(metric)
        degradation = (
            (reference - current) / reference if reference is not None and reference > 0 else None
        )
        checks.append(
            PerformanceCheck(
                metric=metric,
                current=current,
                champion=reference,
                degradation=degradation,
                first_day=first,
                last_day=last,
                transactions=len(frame),
                frauds=frauds,
                severity=performance_severity(metric, degradation, thresholds),
            )
        )
    return checks, None
