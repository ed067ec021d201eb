"""The feature path in one call: dbt build -> Spark features -> feast apply -> materialize.

What the ``build_features`` DAG runs task by task, for the CLI (``features build``), the
benchmarks and the tests that need a small world with a loaded feature store.
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
from pipelines.featurestore import store
from pipelines.transform.dbt import DbtBuildResult, run_dbt_build

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class FeatureBuild:
    dbt: DbtBuildResult
    spark: FeatureJobResult
    online_until: dt.datetime | None  # newest feature row in the online store (None: skipped)
    seconds: dict[str, float]  # wall time per step


def build_features(
    settings: Settings,
    *,
    materialize: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> FeatureBuild:
    """Rebuild the mart, the feature tables and the registry; load the online store.

    ``materialize=False`` stops after ``feast apply``: enough for training (offline store only).
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

    dbt = step("dbt build", lambda: run_dbt_build(settings))
    spark = step("spark features", lambda: run_feature_job(settings))
    step("feast apply", lambda: store.apply(settings))
    online_until = None
    if materialize:
        online_until = step("materialize", lambda: store.materialize_latest(settings))
    return FeatureBuild(dbt, spark, online_until, seconds)
