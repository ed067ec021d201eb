"""Drift scores between two whylogs profiles (today vs a reference), column by column.

Per column:

* the test whylogs computes from the sketches (``calculate_drift_scores``): Kolmogorov-Smirnov
  for numeric columns, chi-square for categorical ones (strings and 0/1 flags); its p-value
  says whether a difference is real at this sample size;
* PSI, computed here from the profiles: numeric columns are binned at the reference's deciles
  (read from its KLL sketch) and both sides' bin shares come from their sketches' CDFs;
  categorical columns use the frequent-item shares. PSI says how large the difference is,
  whatever the sample size, and has the usual bands (< 0.1 none, 0.1-0.2 warning, > 0.2
  critical);
* ``shift``: the largest share of the population that moved, i.e. the KS distance (whylogs' KS
  statistic) for numeric columns and the total variation distance for categorical ones (for a
  0/1 flag: the change of its rate). An effect size that, unlike PSI, stays meaningful when the
  change is in a tail or a rare category;
* Hellinger distance (numeric only, from whylogs), reported for reading, not used by the
  policy.

And data quality: columns missing or new against the reference, inferred types that changed,
and missing-value rates that rose.

Measured only: the severity of each column is the policy's business
(``pipelines.monitoring.policy.judge_columns``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from pipelines.monitoring.whylogs_compat import import_whylogs

ColumnKind = Literal["numeric", "categorical"]
Severity = Literal["none", "warning", "critical"]

# Bin floor of PSI: an empty bin on one side would make the log ratio infinite.
PSI_EPSILON = 1e-4
PSI_QUANTILES = [i / 10 for i in range(1, 10)]  # reference deciles
# Columns that never count in a decision: calendar (a daily profile is all-weekend or none),
# derived from the score (decision), or labels of the model rather than data (model_version).
NON_POLICY_COLUMNS = frozenset({"tx_during_weekend", "decision", "model_version"})
SCORE_COLUMN = "fraud_probability"


@dataclass(frozen=True)
class ColumnDrift:
    kind: str  # which profile: transactions | predictions
    column: str
    column_kind: ColumnKind
    test: str | None  # "ks" | "chi-square" (None: whylogs could not compute one)
    p_value: float | None
    statistic: float | None
    psi: float | None
    shift: float | None
    hellinger: float | None
    rows: int  # today's rows
    reference_rows: int
    policy: bool  # counts in the retrain decision
    severity: Severity | None = None  # the policy's judgement (policy.judge_columns)

    def to_dict(self) -> dict[str, Any]:
        # JSON (XCom, the REST API) has no NaN/inf: a chi-square of a category the reference
        # never saw is infinite, and means "no finite value" here.
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in asdict(self).items()
        }


@dataclass(frozen=True)
class QualityIssue:
    kind: str
    column: str
    issue: str  # missing_column | new_column | type_change | missing_values
    value: float | None  # today's value (missing-value rate), if numeric
    reference_value: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- PSI ----------------------------------------------------------------------------------


def psi(expected: np.ndarray | list[float], actual: np.ndarray | list[float]) -> float:
    """Population stability index of two vectors of bin shares (each summing to ~1).

    sum((a - e) * ln(a / e)) with both shares floored at ``PSI_EPSILON``.
    """
    e = np.clip(np.asarray(expected, dtype=np.float64), PSI_EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), PSI_EPSILON, None)
    if e.shape != a.shape:
        raise ValueError(f"{e.size} expected bins for {a.size} actual bins")
    return float(np.sum((a - e) * np.log(a / e)))


def _kll(column_view: Any) -> Any | None:
    metric = column_view.get_metric("distribution")
    if metric is None:
        return None
    sketch = metric.kll.value
    return None if sketch.is_empty() else sketch


def numeric_bin_shares(target_view: Any, reference_view: Any) -> tuple[np.ndarray, np.ndarray]:
    """(reference shares, target shares) over bins cut at the reference's deciles.

    Bins are (-inf, q1], (q1, q2], ..., (q9, inf); repeated deciles (a discrete column) merge,
    so a 0/1 column gets the two bins {0} and {1}.
    """
    ref, target = _kll(reference_view), _kll(target_view)
    if ref is None or target is None:
        raise ValueError("both columns need a non-empty distribution sketch")
    edges = sorted(set(ref.get_quantiles(PSI_QUANTILES)))
    ref_cdf = np.asarray(ref.get_cdf(edges, True))  # inclusive: P(X <= edge), then 1.0
    target_cdf = np.asarray(target.get_cdf(edges, True))
    return np.diff(np.r_[0.0, ref_cdf]), np.diff(np.r_[0.0, target_cdf])


def _frequent_shares(column_view: Any) -> dict[str, float] | None:
    from whylogs.viz.utils.frequent_items_calculations import get_frequent_stats

    stats = get_frequent_stats(column_view, config=None)
    if not stats or stats["total_count"] <= 0:
        return None
    total = float(stats["total_count"])
    return {str(item["value"]): item["estimate"] / total for item in stats["frequent_items"]}


def categorical_shares(target_view: Any, reference_view: Any) -> tuple[np.ndarray, np.ndarray]:
    """(reference shares, target shares) over the union of both sides' frequent values, plus
    one bin for whatever mass the frequent items do not cover."""
    ref, target = _frequent_shares(reference_view), _frequent_shares(target_view)
    if ref is None or target is None:
        raise ValueError("both columns need frequent items")
    values = sorted(set(ref) | set(target))
    r = np.array([ref.get(v, 0.0) for v in values])
    t = np.array([target.get(v, 0.0) for v in values])
    r = np.r_[r, max(0.0, 1.0 - r.sum())]
    t = np.r_[t, max(0.0, 1.0 - t.sum())]
    return r, t


# --- column typing ------------------------------------------------------------------------


def _type_counts(column_view: Any) -> dict[str, int]:
    metric = column_view.get_metric("types")
    if metric is None:
        return {}
    return {
        "integral": metric.integral.value,
        "fractional": metric.fractional.value,
        "boolean": metric.boolean.value,
        "string": metric.string.value,
        "object": metric.object.value,
    }


def inferred_type(column_view: Any) -> str:
    counts = _type_counts(column_view)
    if not counts or not any(counts.values()):
        return "null"
    return max(counts, key=lambda k: counts[k])


def column_kind(column_view: Any) -> ColumnKind:
    """Categorical for strings, booleans and 0/1 flags; numeric otherwise."""
    kind = inferred_type(column_view)
    if kind in ("string", "boolean", "object"):
        return "categorical"
    ints = column_view.get_metric("ints")
    if kind == "integral" and ints is not None:
        low, high = ints.min.value, ints.max.value
        if low is not None and high is not None and low >= 0 and high <= 1:
            return "categorical"
    return "numeric"


def _rows(column_view: Any) -> int:
    counts = column_view.get_metric("counts")
    return int(counts.n.value) if counts is not None else 0


def missing_rate(column_view: Any) -> float:
    counts = column_view.get_metric("counts")
    if counts is None or counts.n.value == 0:
        return 0.0
    missing = counts.null.value + (counts.nan.value if hasattr(counts, "nan") else 0)
    return float(missing) / float(counts.n.value)


# --- the comparison -----------------------------------------------------------------------


def _drift_map(kinds: dict[str, ColumnKind]) -> dict[str, Any]:
    from whylogs.viz.drift.column_drift_algorithms import KS, ChiSquare

    return {name: KS() if kind == "numeric" else ChiSquare() for name, kind in kinds.items()}


def compare_profiles(
    kind: str,
    target: Any,
    reference: Any,
    *,
    columns: list[str] | None = None,
) -> list[ColumnDrift]:
    """Drift of every column present in both profiles (or of ``columns``), measured only: the
    severities are the policy's (``policy.judge_columns``)."""
    import_whylogs()
    from whylogs.viz.drift.column_drift_algorithms import Hellinger, calculate_drift_scores

    target_columns = target.get_columns()
    reference_columns = reference.get_columns()
    names = [
        c
        for c in (columns or sorted(target_columns))
        if c in target_columns and c in reference_columns
    ]
    kinds: dict[str, ColumnKind] = {}
    for name in names:
        # A flag that is constant 0 in one profile reads as 0/1 in the other: categorical if
        # either side says so, so both are compared by the same test.
        pair = (column_kind(target_columns[name]), column_kind(reference_columns[name]))
        kinds[name] = "categorical" if "categorical" in pair else "numeric"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whylogs warns for every column outside the map
        tests = calculate_drift_scores(
            target_view=_subset(target, names),
            reference_view=_subset(reference, names),
            drift_map=_drift_map(kinds),
        )
    out: list[ColumnDrift] = []
    for name in names:
        t_col, r_col = target_columns[name], reference_columns[name]
        score = tests.get(name) or {}
        psi_value = shift = hellinger = None
        try:
            if kinds[name] == "numeric":
                ref_shares, target_shares = numeric_bin_shares(t_col, r_col)
                # The KS statistic is the KS distance: whylogs computed it already.
                statistic = score.get("statistic")
                shift = None if statistic is None else float(statistic)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    h = Hellinger().calculate(t_col, r_col)
                hellinger = None if h is None else float(h.statistic)
            else:
                ref_shares, target_shares = categorical_shares(t_col, r_col)
                shift = float(0.5 * np.abs(target_shares - ref_shares).sum())
            psi_value = psi(ref_shares, target_shares)
        except ValueError:
            pass  # an empty side (all missing today): data quality reports it
        p_value = score.get("pvalue")
        statistic = score.get("statistic")
        drift = ColumnDrift(
            kind=kind,
            column=name,
            column_kind=kinds[name],
            test=score.get("algorithm"),
            p_value=None if p_value is None else float(p_value),
            statistic=None if statistic is None else float(statistic),
            psi=psi_value,
            shift=shift,
            hellinger=hellinger,
            rows=_rows(t_col),
            reference_rows=_rows(r_col),
            policy=name not in NON_POLICY_COLUMNS,
        )
        out.append(drift)
    return out


def _subset(view: Any, names: list[str]) -> Any:
    """A view with only ``names`` (whylogs would otherwise score every column it has)."""
    from whylogs.core.view.dataset_profile_view import DatasetProfileView

    columns = view.get_columns(names)
    return DatasetProfileView(
        columns=columns,
        dataset_timestamp=view.dataset_timestamp,
        creation_timestamp=view.creation_timestamp,
    )


def quality_issues(
    kind: str,
    target: Any,
    reference: Any,
    *,
    missing_rate_rise: float,
    expected_columns: list[str] | None = None,
) -> list[QualityIssue]:
    """Schema changes and missing values of ``target`` against ``reference``.

    ``missing_rate_rise``: the rise of a column's missing-value rate that is an issue (the
    policy's ``Thresholds.missing_rate_rise``). ``expected_columns``: the columns today's data
    must have (default: the reference's).
    """
    rise = missing_rate_rise
    target_columns = target.get_columns()
    reference_columns = reference.get_columns()
    expected = expected_columns if expected_columns is not None else sorted(reference_columns)
    issues: list[QualityIssue] = []
    for name in expected:
        if name not in target_columns:
            issues.append(
                QualityIssue(kind, name, "missing_column", None, None, "in the reference only")
            )
    if expected_columns is None:
        for name in sorted(set(target_columns) - set(reference_columns)):
            issues.append(QualityIssue(kind, name, "new_column", None, None, "not in reference"))
    for name in sorted(set(target_columns) & set(reference_columns)):
        t_col, r_col = target_columns[name], reference_columns[name]
        t_type, r_type = inferred_type(t_col), inferred_type(r_col)
        # int vs float is not a schema change (a whole-number float column reads as integral).
        numeric = {"integral", "fractional"}
        if t_type != r_type and "null" not in (t_type, r_type) and {t_type, r_type} - numeric:
            issues.append(
                QualityIssue(kind, name, "type_change", None, None, f"{r_type} -> {t_type}")
            )
        t_missing, r_missing = missing_rate(t_col), missing_rate(r_col)
        if t_missing - r_missing > rise:
            issues.append(
                QualityIssue(
                    kind,
                    name,
                    "missing_values",
                    t_missing,
                    r_missing,
                    f"missing {t_missing:.1%} vs {r_missing:.1%} in the reference",
                )
            )
    return issues
