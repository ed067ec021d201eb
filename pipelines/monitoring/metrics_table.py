"""The drift-metrics table: append-only Parquet, one row per (monitored day, column, metric).

Layout: ``<data_dir>/monitoring/drift_metrics/date=YYYY-MM-DD/part-<time>-<id>.parquet``, one
part per monitor run, never rewritten: a rerun of a day adds a part with a later
``computed_at``, and readers take the latest run of each day (``read_metrics``). Query it with
DuckDB over time, e.g.::

    select date, "column", value from read_parquet(
        '<data_dir>/monitoring/drift_metrics/*/*.parquet', hive_partitioning = true)
    where metric = 'psi' and kind = 'transactions' order by date

Rows: ``metric`` is one of psi, shift, p_value, statistic, hellinger (per column);
missing_rate and the quality issues (kind "quality"); roc_auc / average_precision /
card_precision_at_100 (kind "performance", ``reference_value`` = the champion's figure); and one
``action`` row per run (kind "decision", value 0 continue / 1 warn / 2 retrain).
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd
import pyarrow as pa

from pipelines.config import Settings
from pipelines.lake import partition_dir, write_parquet_atomic
from pipelines.monitoring.drift import NON_POLICY_COLUMNS
from pipelines.monitoring.profiles import monitoring_dir
from pipelines.monitoring.scores import alert_key

if TYPE_CHECKING:
    from pipelines.monitoring.policy import MonitorDecision
    from pipelines.monitoring.scores import DriftScores


ACTION_CODES = {"continue": 0, "warn": 1, "retrain": 2}
COLUMN_METRICS = ("psi", "shift", "p_value", "statistic", "hellinger")


def metrics_dir(settings: Settings) -> Path:
    return monitoring_dir(settings) / "drift_metrics"


def _schema() -> pa.Schema:

    return pa.schema(
        [
            ("run_date", pa.date32()),
            ("run_id", pa.string()),
            ("computed_at", pa.timestamp("us", tz="UTC")),
            ("kind", pa.string()),
            ("column", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
            ("reference_value", pa.float64()),
            ("severity", pa.string()),
            ("test", pa.string()),
            ("reference", pa.string()),
            ("action", pa.string()),
        ]
    )


def metric_rows(
    scores: DriftScores, decision: MonitorDecision, run_id: str, computed_at: dt.datetime
) -> list[dict]:
    """The table rows of one run."""
    references = {r.kind: r.describe() for r in scores.references}
    score_reference = next(
        (r.describe() for r in scores.references if r.source == "score-baseline"), None
    )
    base = {"run_date": scores.day, "run_id": run_id, "computed_at": computed_at}
    base["action"] = decision.action
    rows: list[dict] = []
    for c in scores.columns:
        reference = score_reference if c.column == "fraud_probability" else None
        for metric in COLUMN_METRICS:
            value = getattr(c, metric)
            rows.append(
                {
                    **base,
                    "kind": c.kind,
                    "column": c.column,
                    "metric": metric,
                    "value": None if value is None else float(value),
                    "reference_value": None,
                    "severity": c.severity,
                    "test": c.test,
                    "reference": reference or references.get(c.kind),
                }
            )
    for q in scores.quality:
        rows.append(
            {
                **base,
                "kind": "quality",
                "column": f"{q.kind}.{q.column}",
                "metric": q.issue,
                "value": q.value,
                "reference_value": q.reference_value,
                "severity": "warning",
                "test": None,
                "reference": references.get(q.kind),
            }
        )
    for p in scores.performance:
        rows.append(
            {
                **base,
                "kind": "performance",
                "column": "model",
                "metric": p.metric,
                "value": p.current,
                "reference_value": p.champion,
                "severity": p.severity,
                "test": None,
                "reference": f"labelled {p.first_day}..{p.last_day}",
            }
        )
    rows.append(
        {
            **base,
            "kind": "decision",
            "column": ",".join(decision.drifted_columns),
            "metric": "action",
            "value": float(ACTION_CODES[decision.action]),
            "reference_value": None,
            "severity": {"continue": "none", "warn": "warning", "retrain": "critical"}[
                decision.action
            ],
            "test": None,
            "reference": "; ".join(decision.reasons)[:2000],
        }
    )
    return rows


def append_metrics(
    settings: Settings,
    scores: DriftScores,
    decision: MonitorDecision,
    run_id: str,
    computed_at: dt.datetime | None = None,
) -> Path:
    """Append one run's rows as a new part of the day's partition; returns the part."""

    at = computed_at or dt.datetime.now(dt.UTC)
    rows = metric_rows(scores, decision, run_id, at)
    for row in rows:
        row.pop("run_date")  # the partition carries it (hive "date=")
    schema = _schema().remove(0)
    table = pa.Table.from_pylist(rows, schema=schema)
    part = partition_dir(metrics_dir(settings), scores.day) / (
        f"part-{at:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
    )
    return write_parquet_atomic(table, part)


def read_metrics(
    settings: Settings,
    first: dt.date | None = None,
    last: dt.date | None = None,
    *,
    latest_run_only: bool = True,
) -> pd.DataFrame:
    """The table (``date`` = monitored day); by default only the latest run of each day."""

    root = metrics_dir(settings)
    if not any(root.glob("date=*/*.parquet")):
        return pd.DataFrame(columns=["date", *_schema().names[1:]])
    where, params = ["true"], [str(root / "date=*" / "*.parquet")]
    if first:
        where.append("date >= ?")
        params.append(first)
    if last:
        where.append("date <= ?")
        params.append(last)
    latest = (
        "qualify computed_at = max(computed_at) over (partition by date)" if latest_run_only else ""
    )
    query = f"""
        select * from read_parquet(?, hive_partitioning = true, union_by_name = true)
        where {" and ".join(where)}
        {latest}
        order by date, kind, "column", metric
    """
    with duckdb.connect() as con:
        frame = con.execute(query, params).df()
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    return frame


def previous_alerts(settings: Settings, day: dt.date) -> frozenset[str]:
    """ "kind/column" of the policy columns at warning or worse in the latest run of day - 1."""

    yesterday = day - dt.timedelta(days=1)
    frame = read_metrics(settings, yesterday, yesterday)
    if frame.empty:
        return frozenset()
    alerted = frame[
        frame["kind"].isin(["transactions", "predictions"])
        & frame["severity"].isin(["warning", "critical"])
        & ~frame["column"].isin(NON_POLICY_COLUMNS)
    ]
    return frozenset(
        alert_key(k, c) for k, c in zip(alerted["kind"], alerted["column"], strict=True)
    )
