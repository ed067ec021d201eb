"""When a retrain decision may start ``train_model``: the deduplication rules, as pure functions.

A retrain decision triggers a ``train_model`` run only if all hold:

0. a champion exists, unless bootstrap training is off: before the first model there is nothing
   to protect, the reference would be the lake's own warm-up days, and ``build_features``
   trains the first model anyway (``pipelines/training/bootstrap.py``);
1. no ``train_model`` run is queued or running (whoever started it);
2. no ``train_model`` run was triggered in the last ``cooldown_days`` days (wall clock): the
   monitor gives the runs it triggers the logical date *midnight UTC of the day it triggers
   them*, so "a run within the cooldown" is a lookup of ``cooldown_days`` exact logical dates.
   Wall clock, not monitored day: a backfill of thirty drifted days monitored in one afternoon
   is one storm and must start one training;
3. the run id is derived from the monitored interval (``drift_retrain__<day>``): a rerun of the
   same interval, whenever it happens, asks Airflow for the same run id, and Airflow creates a
   run id once (the second request is skipped: ``skip_when_already_exists``). Stricter than an
   id per (interval, cooldown bucket), which would let a rerun after the cooldown train again.

The Airflow side (``pipelines.monitoring.trigger``) asks the metadata DB through the Task SDK
(``get_dr_count``) for 1 and 2, and runs one trigger task at a time across all monitor runs
(``max_active_tis_per_dag=1``), so a check and its trigger are never interleaved with another.
Runs started by hand (logical date = the click time) count for rule 1 but not for rule 2.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

TRAIN_DAG_ID = "train_model"
ACTIVE_STATES = ("queued", "running")


def retrain_run_id(day: dt.date) -> str:
    """The run id of the training asked for by monitored day ``day`` (one per interval)."""
    return f"drift_retrain__{day.isoformat()}"


def trigger_logical_date(now: dt.datetime) -> dt.datetime:
    """The logical date of a run triggered at ``now``: midnight UTC of that day."""
    return dt.datetime.combine(now.astimezone(dt.UTC).date(), dt.time(), dt.UTC)


def cooldown_logical_dates(now: dt.datetime, cooldown_days: int) -> list[dt.datetime]:
    """Logical dates of monitor-triggered runs that keep a trigger at ``now`` in cooldown."""
    if cooldown_days < 1:
        raise ValueError("cooldown_days must be >= 1")
    today = trigger_logical_date(now)
    return [today - dt.timedelta(days=i) for i in range(cooldown_days)]


@dataclass(frozen=True)
class TriggerVerdict:
    trigger: bool
    reason: str


def trigger_verdict(
    active_runs: int,
    recent_runs: int,
    cooldown_days: int,
    *,
    champion_exists: bool = True,
    bootstrap_training: bool = False,
) -> TriggerVerdict:
    if not champion_exists and bootstrap_training:
        # A young lake compared with its own warm-up days "drifts" on every novelty feature;
        # the first model is build_features' job (pipelines/training/bootstrap.py).
        return TriggerVerdict(
            False, "no champion yet: build_features trains the first model (bootstrap)"
        )
    if active_runs:
        return TriggerVerdict(False, f"{active_runs} {TRAIN_DAG_ID} run(s) queued or running")
    if recent_runs:
        return TriggerVerdict(
            False, f"{TRAIN_DAG_ID} was triggered within the last {cooldown_days} day(s)"
        )
    return TriggerVerdict(True, "no training running and none within the cooldown")


def retrain_conf(
    day: dt.date,
    reasons: list[str],
    drifted_columns: list[str],
    label_delay_days: int,
    reference: dict | None = None,
) -> dict:
    """The conf of the triggered ``train_model`` run.

    ``reason`` is its declared param (it tags the MLflow run); the rest tells a reader which
    drift asked for it. ``test_end`` is left to ``train_model`` (the newest fully labelled day).
    """
    summary = reasons[0] if reasons else "drift"
    more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return {
        "reason": f"drift {day.isoformat()}: {summary}{more}"[:500],
        "drifted_columns": list(drifted_columns),
        "window": {
            "monitored_day": day.isoformat(),
            "labelled_until": (day - dt.timedelta(days=label_delay_days)).isoformat(),
            "reference": reference,
        },
        "reasons": list(reasons),
        "source": "monitor_drift",
    }


@dataclass(frozen=True)
class DriftAnswered:
    """The drift a ``train_model`` run answers, as the monitor's trigger conf names it."""

    alert_day: dt.date
    columns: tuple[str, ...]


def drift_of_conf(conf: dict | None) -> DriftAnswered | None:
    """The drift in a ``train_model`` conf made by ``retrain_conf``; None for any other run."""
    if not conf or conf.get("source") != "monitor_drift":
        return None
    day = (conf.get("window") or {}).get("monitored_day")
    if not day:
        return None
    return DriftAnswered(dt.date.fromisoformat(day), tuple(conf.get("drifted_columns") or ()))
