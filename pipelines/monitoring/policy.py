"""The decision policy of the monitor: continue, warn, or retrain.

Which columns
-------------
*Policy columns* are every monitored column except ``tx_during_weekend`` (a daily profile is
all-weekend or not at all: calendar, not drift), ``decision`` (a function of the score) and
``model_version``:

* transactions (from the mart, every day): ``tx_amount``, ``tx_hour``, ``tx_during_night``,
  ``customer_nb_tx_1h``, ``customer_nb_tx_1d``, ``customer_amount_ratio_30d``,
  ``customer_terminal_is_new``;
* predictions (from the prediction log, when the service scored that day): every model input
  as served, ``unknown_customer``, ``unknown_terminal``, and the score ``fraud_probability``
  (prediction drift, against the champion's own first days in service).

Severity of a column (``column_severity``)
------------------------------------------
A difference counts only if it is both *real* and *large enough to matter*:

* real: the whylogs test (KS for numeric, chi-square for categorical) has p < ``ALPHA`` (0.001);
* critical: real and PSI > ``PSI_CRITICAL`` (0.2);
* warning: real and either PSI >= ``PSI_WARNING`` (0.1) or ``shift`` >= ``MIN_SHIFT`` (0.05),
  where shift is the share of the population that moved (KS distance / total variation): it
  catches a change concentrated in a tail or a rare category, which PSI over ten bins dilutes;
* none otherwise, and always when either side has fewer than ``MIN_ROWS`` rows.

The p-value alone would flag negligible differences on a large day; the effect size alone would
flag noise on a small one. Requiring both keeps the false-alarm rate low at both scales.

Decision (``decide``)
---------------------
retrain when any of:

1. one policy column is critical;
2. one policy column is at warning or worse today *and* was at warning or worse in the latest
   run of the previous day (a small drift that persists is real; one warning day is not);
3. the promotion metric (``Settings.promotion_metric``, default average precision) on the latest
   window whose labels have arrived is more than ``MAX_DEGRADATION`` (5 %) below the champion's
   training-time figure.

warn when none of the above but any of: a policy column at warning; a data-quality issue (a
column missing or new, a type change, missing values up by more than ``MISSING_RATE_RISE``); an
other performance metric (AUC, CP@100) degraded by more than 5 %.

continue otherwise.

Data-quality issues never retrain by themselves: a model retrained on broken data is worse
than the one serving; they need a person (the warn branch).

The thresholds are module constants (``DEFAULT_THRESHOLDS``); every function takes them as
parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from pipelines.config import Settings
from pipelines.monitoring.drift import ColumnDrift, Severity
from pipelines.monitoring.scores import DriftScores, alert_key

Action = Literal["continue", "warn", "retrain"]

ALPHA = 1e-3
PSI_WARNING = 0.1
PSI_CRITICAL = 0.2
MIN_SHIFT = 0.05
MIN_ROWS = 100
MISSING_RATE_RISE = 0.02
MAX_DEGRADATION = 0.05


@dataclass(frozen=True)
class Thresholds:
    alpha: float = ALPHA
    psi_warning: float = PSI_WARNING
    psi_critical: float = PSI_CRITICAL
    min_shift: float = MIN_SHIFT
    min_rows: int = MIN_ROWS
    missing_rate_rise: float = MISSING_RATE_RISE
    max_degradation: float = MAX_DEGRADATION
    # The settings own it (``performance_checks`` passes ``settings.promotion_metric``).
    promotion_metric: str = Settings.model_fields["promotion_metric"].default


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class MonitorDecision:
    action: Action
    reasons: tuple[str, ...] = ()
    drifted_columns: tuple[str, ...] = ()  # policy columns at warning or worse
    rules: tuple[str, ...] = field(default=(), compare=False)  # which rules fired

    def to_dict(self) -> dict:
        return {
            "action": self.action,
            "reasons": list(self.reasons),
            "drifted_columns": list(self.drifted_columns),
            "rules": list(self.rules),
        }

    @classmethod
    def from_dict(cls, data: dict) -> MonitorDecision:
        return cls(
            action=data["action"],
            reasons=tuple(data.get("reasons", ())),
            drifted_columns=tuple(data.get("drifted_columns", ())),
            rules=tuple(data.get("rules", ())),
        )


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def column_severity(drift: ColumnDrift, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Severity:
    """none | warning | critical for one column (see the module docstring)."""
    t = thresholds
    if min(drift.rows, drift.reference_rows) < t.min_rows:
        return "none"
    real = _finite(drift.p_value) and drift.p_value < t.alpha
    if not real:
        return "none"
    psi = drift.psi if _finite(drift.psi) else 0.0
    shift = drift.shift if _finite(drift.shift) else 0.0
    if psi > t.psi_critical:
        return "critical"
    if psi >= t.psi_warning or shift >= t.min_shift:
        return "warning"
    return "none"


def psi_band(value: float | None) -> Severity:
    """The seed's PSI bands: < 0.1 none, 0.1-0.2 warning, > 0.2 critical."""
    if value is None or math.isnan(value):
        return "none"
    if value > PSI_CRITICAL:
        return "critical"
    if value >= PSI_WARNING:
        return "warning"
    return "none"


def judge_columns(
    columns: list[ColumnDrift], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[ColumnDrift]:
    """The measured columns with their severities (``column_severity``)."""
    return [replace(c, severity=column_severity(c, thresholds)) for c in columns]


def performance_severity(
    metric: str, degradation: float | None, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> Severity:
    """critical for the promotion metric, warning for the others, beyond the degradation cap."""
    if not _finite(degradation) or degradation <= thresholds.max_degradation:
        return "none"
    return "critical" if metric == thresholds.promotion_metric else "warning"


def _describe(c: ColumnDrift) -> str:
    parts = [f"{c.kind}.{c.column}: {c.severity}"]
    if _finite(c.psi):
        parts.append(f"PSI {c.psi:.3f}")
    if _finite(c.shift):
        parts.append(f"shift {c.shift:.3f}")
    if _finite(c.p_value):
        parts.append(f"{c.test} p={c.p_value:.1e}")
    return ", ".join(parts)


def decide(scores: DriftScores, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> MonitorDecision:
    """continue | warn | retrain for one monitored day (rules in the module docstring)."""

    policy = [c for c in scores.columns if c.policy]
    critical = [c for c in policy if c.severity == "critical"]
    alerted = [c for c in policy if c.severity in ("warning", "critical")]
    persistent = [
        c
        for c in alerted
        if c.severity == "warning" and alert_key(c.kind, c.column) in scores.previous_alerts
    ]
    degraded = [p for p in scores.performance if p.severity in ("warning", "critical")]
    # performance_severity made the promotion metric critical and the others warnings.
    promotion_degraded = [p for p in degraded if p.severity == "critical"]

    retrain_reasons: list[str] = []
    rules: list[str] = []
    if critical:
        rules.append("critical-column")
        retrain_reasons += [f"critical drift: {_describe(c)}" for c in critical]
    if persistent:
        rules.append("persistent-warning")
        retrain_reasons += [f"drift on two days in a row: {_describe(c)}" for c in persistent]
    if promotion_degraded:
        rules.append("performance")
        retrain_reasons += [
            f"{p.metric} {p.current:.4f} vs champion {p.champion:.4f} "
            f"({p.degradation:.1%} worse) on {p.first_day}..{p.last_day}"
            for p in promotion_degraded
        ]

    # Most severe first, then by effect size: the first names are the ones to look at.
    ordered = sorted(
        alerted,
        key=lambda c: (c.severity != "critical", -(c.psi or 0.0), -(c.shift or 0.0)),
    )
    drifted = tuple(dict.fromkeys(c.column for c in ordered))
    if retrain_reasons:
        return MonitorDecision("retrain", tuple(retrain_reasons), drifted, tuple(rules))

    warn_reasons = [f"drift warning: {_describe(c)}" for c in ordered]
    if ordered:
        rules.append("warning-column")
    if scores.quality:
        rules.append("data-quality")
        warn_reasons += [f"data quality: {q.kind}.{q.column} {q.detail}" for q in scores.quality]
    other_degraded = [p for p in degraded if p.severity == "warning"]
    if other_degraded:
        rules.append("performance-warning")
        warn_reasons += [
            f"{p.metric} {p.current:.4f} vs champion {p.champion:.4f} ({p.degradation:.1%} worse)"
            for p in other_degraded
        ]
    if warn_reasons:
        return MonitorDecision("warn", tuple(warn_reasons), drifted, tuple(rules))
    return MonitorDecision("continue", ("no drift beyond the thresholds",), (), ())
