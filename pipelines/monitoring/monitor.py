"""One monitor run of a day: profile -> drift vs reference -> decision -> report and metrics.

The DAG runs the steps as separate tasks (``profile_day``, ``compute_scores`` +
``policy.decide``, ``publish``); ``run_monitor`` runs them in one call (CLI, tests). Every step
is keyed on the monitored day and rewrites only that day's files, except the two outputs that
are append-only by design (the metrics table and the reports).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import Settings
from pipelines.monitoring import profiles, retrain
from pipelines.monitoring import reference as ref
from pipelines.monitoring.drift import SCORE_COLUMN, column_kind, compare_profiles, quality_issues
from pipelines.monitoring.metrics_table import append_metrics
from pipelines.monitoring.metrics_table import previous_alerts as read_previous
from pipelines.monitoring.performance import performance_checks
from pipelines.monitoring.policy import (
    DEFAULT_THRESHOLDS,
    MonitorDecision,
    Thresholds,
    decide,
    judge_columns,
)
from pipelines.monitoring.report import write_report
from pipelines.monitoring.scores import DriftScores
from pipelines.transform.mart import mart_days

log = logging.getLogger(__name__)


class NoDataForDay(RuntimeError):
    """The mart has no transactions for the monitored day (not ingested or not built yet)."""


@dataclass
class MonitorResult:
    scores: DriftScores
    decision: MonitorDecision
    metrics_path: Path | None = None
    reports: dict[str, Path] = field(default_factory=dict)


def references_dir(settings: Settings, day: dt.date) -> Path:
    """The merged references a run compared with (what its report is drawn from)."""
    return profiles.monitoring_dir(settings) / "references" / f"date={day.isoformat()}"


def compute_scores(
    settings: Settings,
    day: dt.date,
    *,
    reference_window: tuple[dt.date, dt.date] | None = None,
    champion: Any = "load",
    previous_alerts: frozenset[str] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> DriftScores:
    """Every measurement of ``day`` (profiles are made if missing).

    ``reference_window``: force the transactions reference (else the champion's training
    period, else the fallback window); ``champion``: a ``reference.Champion``, None for none,
    or "load" to read it from the registry; ``previous_alerts``: for the persistence rule
    (default: read from the drift-metrics table); ``thresholds``: the policy's, by default.
    """

    if champion == "load":
        champion = ref.load_champion(settings)
    today = profiles.ensure_day(settings, "transactions", day)
    if today is None:
        raise NoDataForDay(f"the mart has no transactions of {day}")
    notes: list[str] = []
    columns, quality, references = [], [], []
    saved = references_dir(settings, day)

    # (a) transactions vs the training period.
    if reference_window is not None:
        first, last, source = (*reference_window, "given-window")
    else:
        first, last, source = ref.reference_window(settings, day, champion)
    version = champion.version if champion is not None else None
    tx_ref, tx_reference = ref.transactions_reference(settings, first, last, source, version)
    if tx_ref is None:
        notes.append(f"transactions: no data in the reference window {first}..{last}")
    else:
        references.append(tx_reference)
        columns += compare_profiles("transactions", today, tx_ref)
        quality += quality_issues(
            "transactions", today, tx_ref, missing_rate_rise=thresholds.missing_rate_rise
        )
        profiles.write_view(tx_ref, saved / "transactions.bin")

    # (b) the prediction log: inputs as served vs training, the score vs the first days.
    served = profiles.ensure_day(settings, "predictions", day)
    if served is None:
        notes.append("predictions: nothing scored that day")
    else:
        pred_ref, pred_reference = ref.predictions_reference(settings, champion, first, last)
        if pred_ref is None:
            notes.append("predictions: no reference (no champion profile, no logged window)")
        else:
            references.append(pred_reference)
            inputs = [c for c in pred_ref.get_columns() if c != SCORE_COLUMN]
            columns += compare_profiles("predictions", served, pred_ref, columns=inputs)
            quality += quality_issues(
                "predictions",
                served,
                pred_ref,
                expected_columns=sorted(inputs),
                missing_rate_rise=thresholds.missing_rate_rise,
            )
            profiles.write_view(pred_ref, saved / "predictions.bin")
        versions = ref.model_versions(served)
        current = version or (next(iter(versions)) if len(versions) == 1 else None)
        if current is None or versions != {current}:
            notes.append(f"score drift: day served by versions {sorted(versions)}, skipped")
        else:
            baseline, baseline_ref = ref.score_baseline(settings, day, current)
            if baseline is None:
                notes.append(f"score drift: v{current} has no baseline days yet")
            else:
                references.append(baseline_ref)
                columns += compare_profiles("predictions", served, baseline, columns=[SCORE_COLUMN])
                profiles.write_view(baseline, saved / "score_baseline.bin")

    # Model performance once labels have arrived.
    performance = []
    if champion is None:
        notes.append("performance: no champion to compare with")
    else:
        performance, note = performance_checks(
            settings,
            day,
            champion.metrics,
            champion.version,
            max_degradation=thresholds.max_degradation,
        )
        if note:
            notes.append(note)

    return DriftScores(
        day=day,
        columns=judge_columns(columns, thresholds),  # measured above, judged by the policy
        quality=quality,
        performance=performance,
        references=references,
        previous_alerts=read_previous(settings, day)
        if previous_alerts is None
        else previous_alerts,
        notes=notes,
    )


def publish(
    settings: Settings,
    scores: DriftScores,
    decision: MonitorDecision,
    run_id: str,
    *,
    write_reports: bool = True,
    computed_at: dt.datetime | None = None,
) -> tuple[Path, dict[str, Path]]:
    """Append the run to the metrics table and write its HTML reports."""

    at = computed_at or dt.datetime.now(dt.UTC)
    metrics_path = append_metrics(settings, scores, decision, run_id, at)
    reports: dict[str, Path] = {}
    if write_reports:
        saved = references_dir(settings, scores.day)
        for kind in profiles.KINDS:
            target = profiles.read_day(settings, kind, scores.day)
            reference_file = saved / f"{kind}.bin"
            if target is None or not reference_file.exists():
                continue
            reference = profiles.read_view(reference_file)
            kinds = {
                c.column: c.column_kind
                for c in scores.columns
                if c.kind == kind and c.column != SCORE_COLUMN
            }
            if not kinds:  # compared nothing: report what both profiles have
                shared = set(target.get_columns()) & set(reference.get_columns())
                kinds = {c: column_kind(target.get_column(c)) for c in shared}
            reports[kind] = write_report(settings, scores.day, kind, target, reference, kinds, at)
    return metrics_path, reports


def run_monitor(
    settings: Settings,
    day: dt.date,
    *,
    run_id: str | None = None,
    reference_window: tuple[dt.date, dt.date] | None = None,
    champion: Any = "load",
    write_reports: bool = True,
    reprofile: bool = True,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> MonitorResult:
    """The whole run of one day, as the DAG does it in its tasks."""
    if reprofile:
        profiles.profile_day(settings, day)
    scores = compute_scores(
        settings,
        day,
        reference_window=reference_window,
        champion=champion,
        thresholds=thresholds,
    )
    decision = decide(scores, thresholds)
    at = dt.datetime.now(dt.UTC)
    metrics_path, reports = publish(
        settings,
        scores,
        decision,
        run_id or f"cli__{at:%Y%m%dT%H%M%S%f}",
        write_reports=write_reports,
        computed_at=at,
    )
    log.info("monitor %s: %s (%s)", day, decision.action, "; ".join(decision.reasons))
    return MonitorResult(scores, decision, metrics_path, reports)


def retrain_plan(
    settings: Settings,
    day: dt.date,
    decision: MonitorDecision,
    now: dt.datetime | None = None,
) -> dict | None:
    """When the ``retrain`` decision of monitored ``day`` trains, under ``settings``'
    ``retrain_policy`` (``retrain.plan_retrain``): ``on`` (a day), ``reason`` and
    ``run_after`` (an ISO time for a scheduled retrain; None: train now). None for any other
    action. A pending scheduled retrain is the trigger's to find (it is a queued Airflow run)."""
    if decision.action != "retrain":
        return None
    plan = retrain.plan_retrain(
        settings.retrain_policy,
        day,
        decision.rules,
        delay_days=settings.label_delay_days,
        test_days=settings.test_days,
        drifted_days=settings.retrain_drifted_days,
    )
    newest = max([day, *mart_days(settings)])
    run_after = plan.run_after(now or dt.datetime.now(dt.UTC), newest)
    return {
        "on": plan.on.isoformat(),
        "reason": plan.reason,
        "run_after": run_after.isoformat() if run_after else None,
    }
