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

A retrain the policy plans for later (``plan_retrain``, the ``label-aware`` policy) is a
``train_model`` run created now, queued, with ``run_after`` its start time (the scheduler
starts no run before its ``run_after``), a note saying why and when, and the logical date of
its start day: the Airflow UI lists it with that date, it is a row of the metadata DB (a
scheduler restart does not lose it), and from its start day on it counts for the cooldown
like any monitor-triggered run. Dedup of a scheduled retrain: at most one is pending (a queued
run with a logical date from today on); an alert storm keeps the first one. A retrain for now
does not count a pending scheduled run as "queued" (rule 1): a labelled performance drop trains
at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pipelines.config import RetrainPolicy

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


def scheduled_logical_dates(now: dt.datetime, horizon_days: int) -> list[dt.datetime]:
    """Logical dates a pending scheduled retrain can have at ``now``: today (due later today)
    up to ``horizon_days`` ahead (``schedule_horizon_days``)."""
    today = trigger_logical_date(now)
    return [today + dt.timedelta(days=i) for i in range(horizon_days + 1)]


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
    scheduled_runs: int = 0,
    schedule_on: dt.date | None = None,
) -> TriggerVerdict:
    """Whether a retrain decision creates a ``train_model`` run.

    ``active_runs`` counts the queued or running runs that are not a pending scheduled retrain
    (``scheduled_runs``); ``recent_runs`` the runs within the cooldown. ``schedule_on``: the
    plan is a retrain on that later day (then only one may be pending; the cooldown applies to
    trainings that start now)."""
    if not champion_exists and bootstrap_training:
        # A young lake compared with its own warm-up days "drifts" on every novelty feature;
        # the first model is build_features' job (pipelines/training/bootstrap.py).
        return TriggerVerdict(
            False, "no champion yet: build_features trains the first model (bootstrap)"
        )
    if schedule_on is not None:
        if scheduled_runs:
            return TriggerVerdict(False, f"a {TRAIN_DAG_ID} run is already scheduled or queued")
        return TriggerVerdict(True, f"no retrain scheduled yet: scheduling one for {schedule_on}")
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
    plan: dict | None = None,
) -> dict:
    """The conf of the triggered ``train_model`` run.

    ``reason`` is its declared param (it tags the MLflow run); the rest tells a reader which
    drift asked for it, and ``plan`` when it trains (``monitor.retrain_plan``). ``test_end`` is
    left to ``train_model``: the newest fully labelled day when the run starts.
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
        "plan": plan,
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


# --- when to retrain after an alert ----------------------------------------------------------

PERFORMANCE_RULE = "performance"  # policy.decide's rule name for a labelled performance drop


def schedule_horizon_days(*, delay_days: int, test_days: int, drifted_days: int) -> int:
    """How far ahead of its monitored day ``plan_retrain`` can schedule a retrain."""
    return drifted_days - 1 + 2 * delay_days + test_days


def drifted_window_day(
    alert_day: dt.date, *, delay_days: int, test_days: int, drifted_days: int
) -> dt.date:
    """The first day whose training (the protocol's split ending on the newest fully labelled
    day, ``day - delay``) has ``drifted_days`` training days on or after ``alert_day``.

    On day d the split's training period ends ``2 * delay + test_days`` days before d (its test
    period must be labelled, and its training labels in before the test period starts)."""
    if drifted_days < 1:
        raise ValueError("drifted_days must be >= 1")
    horizon = schedule_horizon_days(
        delay_days=delay_days, test_days=test_days, drifted_days=drifted_days
    )
    return alert_day + dt.timedelta(days=horizon)


@dataclass(frozen=True)
class RetrainPlan:
    """When a retrain decision of ``day`` trains: ``on`` (today: now), and why."""

    on: dt.date
    reason: str

    def now(self, day: dt.date) -> bool:
        return self.on <= day

    def run_after(self, now: dt.datetime, newest_day: dt.date) -> dt.datetime | None:
        """When a scheduled retrain may start on the wall clock: as many days after ``now`` as
        ``on`` lies after ``newest_day``, the newest day in the lake (the lake grows a day a
        day); None when the lake holds ``on`` already (a backfill): train now."""
        if self.on <= newest_day:
            return None
        return now + dt.timedelta(days=(self.on - newest_day).days)


def plan_retrain(
    policy: RetrainPolicy,
    day: dt.date,
    rules: tuple[str, ...],
    *,
    delay_days: int,
    test_days: int,
    drifted_days: int,
    scheduled: dt.date | None = None,
) -> RetrainPlan:
    """The day a ``retrain`` decision of monitored ``day`` should train on.

    * ``first-alert``: today, whatever fired;
    * ``label-aware``: a drop of labelled performance (``PERFORMANCE_RULE``) trains today; an
      input-drift alert alone trains once the training window holds ``drifted_days`` days of
      the drifted period (``drifted_window_day``): before that a retrain sees only the world
      the champion already knows. A retrain already ``scheduled`` stays the one (an alert
      storm schedules one training).
    """
    if policy == "first-alert":
        return RetrainPlan(day, "first alert: retrain now")
    if PERFORMANCE_RULE in rules:
        return RetrainPlan(day, "labelled performance dropped: retrain now")
    if scheduled is not None:
        return RetrainPlan(scheduled, f"input drift: the retrain scheduled for {scheduled} stays")
    on = drifted_window_day(
        day, delay_days=delay_days, test_days=test_days, drifted_days=drifted_days
    )
    return RetrainPlan(
        on,
        f"input drift: retrain on {on}, when the training window holds {drifted_days} day(s) "
        f"from {day} on with their labels",
    )
