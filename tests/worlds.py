"""The suite's shared world: one small system, built once per session through the real chain.

200 customers, 400 terminals, 51 days from 2018-04-01, labels 7 days after their transaction:
simulated lake -> ``dbt build`` -> Spark job (local[2]) -> ``feast apply`` -> online store.
It is the smallest world the handbook protocol fits in: test 05-08 .. 05-14, train
04-24 .. 04-30, model selection from 04-10, and the ingest of 05-21 brings the last test labels.

The built home is never written after the build. A test module that writes (a registry, an
Optuna study, the online store, the prediction log) works on its own copy (``world_copy``),
which gets a Feast registry and online store of its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from pipelines.config import Settings, get_settings, load_settings

FIRST_DAY = dt.date(2018, 4, 1)
TEST_END = dt.date(2018, 5, 14)
LABEL_DELAY_DAYS = 7
LAST_DAY = TEST_END + dt.timedelta(days=LABEL_DELAY_DAYS)
ENV = {
    "FRAUD_N_CUSTOMERS": "200",
    "FRAUD_N_TERMINALS": "400",
    "FRAUD_HISTORY_START": FIRST_DAY.isoformat(),
    "FRAUD_LABEL_DELAY_DAYS": str(LABEL_DELAY_DAYS),
    "FRAUD_SPARK_MASTER": "local[2]",
    # The world is simulated in 2018: the scoring API must accept its years-old payments.
    "FRAUD_SERVING_MAX_PAYMENT_AGE_DAYS": "36500",
}


def world_env(home: Path, **extra: object) -> dict[str, str]:
    """The world's variables on ``home``, every path explicit (a developer's .env can never
    point a test at a real lake), then ``extra`` (FRAUD_* names) on top."""
    paths = {
        "FRAUD_HOME": home,
        "FRAUD_DATA_DIR": home / "data",
        "FRAUD_WAREHOUSE_PATH": home / "warehouse" / "fraud.duckdb",
    }
    return {k: str(v) for k, v in {**paths, **ENV, **extra}.items()}


@contextlib.contextmanager
def settings_from_env(values: Mapping[str, object]) -> Iterator[Settings]:
    """The settings of ``values`` (FRAUD_* variables), set in os.environ while inside.

    Feast reads the settings of the environment when it imports ``feature_repo/`` (apply),
    and subprocesses (Airflow components, servers) inherit it: both need the variables set,
    not just the Settings object.
    """
    with pytest.MonkeyPatch.context() as mp:
        for key, value in values.items():
            mp.setenv(key, str(value))
        get_settings.cache_clear()
        try:
            yield load_settings()
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()


@contextlib.contextmanager
def world_settings(home: Path, **extra: object) -> Iterator[Settings]:
    """The settings of the world on ``home``, its variables set while inside."""
    with settings_from_env(world_env(home, **extra)) as settings:
        yield settings


def build_world(home: Path) -> Path:
    """Ingest the world's days and run the whole feature path on ``home``; returns ``home``."""
    from pipelines.featurestore.build import build_features
    from pipelines.ingest.daily import ingest_days

    with world_settings(home) as settings:
        ingest_days(FIRST_DAY, LAST_DAY, settings)
        build_features(settings)
    return home


@contextlib.contextmanager
def world_copy(source: Path, target: Path, **extra: object) -> Iterator[Settings]:
    """A writable copy of the built world ``source`` on ``target``, with its settings.

    The lake, the mart, the feature tables and the warehouse are copied. Feast's registry and
    online store are not: the registry records the absolute paths of the sources and of the
    online store's tables, and an apply in a copy would drop the original's tables. The copy
    applies the definitions to a registry of its own; a test that reads online features
    materializes first (``store.materialize_latest``).
    """
    from pipelines.featurestore import store

    shutil.copytree(source, target, dirs_exist_ok=True)
    shutil.rmtree(target / "feast", ignore_errors=True)
    with world_settings(target, **extra) as settings:
        store.apply(settings)
        yield settings
