"""The feature path in one call: plan -> dbt build -> Spark features -> feast apply ->
materialize -> record.

What the ``build_features`` DAG runs task by task, for the CLI (``features build``), the
benchmarks and the tests that need a small world with a loaded feature store. The plan
(``changes.plan_build``) compares the raw lake with the last completed build: dbt and the
Spark job rebuild only the days from the earliest changed one on (a full plan refreshes dbt's
tables too), and nothing runs when nothing changed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pipelines.config import Settings
from pipelines.features.runner import FeatureJobResult, run_feature_job
from pipelines.featurestore import changes, store
from pipelines.transform.dbt import DbtBuildResult, run_dbt_build

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class FeatureBuild:
    plan: changes.BuildPlan
    dbt: DbtBuildResult | None  # None: the lake had not changed, nothing ran
    spark: FeatureJobResult | None
    online_until: dt.datetime | None  # newest feature row in the online store (None: skipped)
    seconds: dict[str, float]  # wall time per step


def build_features(
    settings: Settings,
    *,
    materialize: bool = True,
    full: bool = False,
    since: dt.date | None = None,
    on_step: Callable[[str], None] | None = None,
) -> FeatureBuild:
    """Bring the mart, the feature tables and the registry up to date with the raw lake; load
    the online store; record the lake state it was built from.

    ``full`` rebuilds every day, ``since`` the days from that one on, whatever changed.
    ``materialize=False`` stops after ``feast apply``: enough for training (offline store
    only), and the build is not recorded, so the next one loads the online store.
    ``on_step`` is told each step's name before it starts (progress output).
    """
    seconds: dict[str, float] = {}

    def step(name: str, run: Callable[[], T]) -> T:
        if on_step is not None:
            on_step(name)
        started = time.perf_counter()
        result = run()
        seconds[name] = round(time.perf_counter() - started, 2)
        log.info("%s done in %.1fs", name, seconds[name])
        return result

    plan = changes.plan_build(settings, full=full, since=since)
    log.info("feature build plan: %s", plan.reason)
    if plan.up_to_date:
        return FeatureBuild(plan, None, None, None, seconds)
    since = None if plan.full else plan.since
    dbt = step("dbt build", lambda: run_dbt_build(settings, since=since, full_refresh=plan.full))
    spark = step("spark features", lambda: run_feature_job(settings, since=since))
    step("feast apply", lambda: store.apply(settings))
    online_until = None
    if materialize:
        online_until = step("materialize", lambda: store.materialize_latest(settings))
        changes.record_snapshot(settings, plan.snapshot)
    return FeatureBuild(plan, dbt, spark, online_until, seconds)
