"""When a fresh system starts its first training by itself (build_features' bootstrap step)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from pipelines.training.bootstrap import first_labelled_day_needed, first_model_verdict
from tests.mart_export import write_mart

LABEL_DELAY = 7


def _write_mart(settings, first: dt.date, days: int) -> dt.date:
    """A mart of ``days`` days from ``first``; the last LABEL_DELAY days await their labels."""
    rows = []
    for i in range(days):
        day = first + dt.timedelta(days=i)
        labelled = i < days - LABEL_DELAY
        rows += [{"tx_date": day, "tx_fraud": (0 if labelled else None)} for _ in range(3)]
    schema = pa.schema([("tx_date", pa.date32()), ("tx_fraud", pa.int8())])
    write_mart(settings, pa.Table.from_pylist(rows, schema=schema))
    return first + dt.timedelta(days=days - LABEL_DELAY - 1)  # the newest labelled day


@pytest.fixture
def fresh(make_settings):
    return make_settings(label_delay_days=LABEL_DELAY, train_days=7, test_days=7)


def test_nothing_to_train_on_an_empty_lake(fresh):
    verdict = first_model_verdict(fresh, active_training_runs=0)
    assert not verdict.train and "mart is empty" in verdict.reason


def test_waits_until_the_labelled_history_covers_the_whole_protocol(fresh):
    first = dt.date(2024, 1, 1)
    newest_labelled = _write_mart(fresh, first, days=30)
    needed = first_labelled_day_needed(fresh, newest_labelled)
    assert needed < first  # 7 + 7 + 7 (+ the selection split's 7 + 7) > 23 labelled days
    verdict = first_model_verdict(fresh, 0)
    assert not verdict.train and "not enough labelled history" in verdict.reason


def test_trains_a_quick_first_model_once_the_history_suffices(fresh):
    newest_labelled = _write_mart(fresh, dt.date(2024, 1, 1), days=60)
    verdict = first_model_verdict(fresh, 0)
    assert verdict.train, verdict.reason
    assert verdict.conf == {
        "reason": "bootstrap: first model",
        "test_end": newest_labelled.isoformat(),
        "trials": fresh.bootstrap_trials,
        "max_epochs": fresh.bootstrap_max_epochs,
        "timeout_seconds": fresh.bootstrap_timeout_seconds,
    }
    assert first_labelled_day_needed(fresh, newest_labelled) >= dt.date(2024, 1, 1)


def test_never_beside_a_running_training_or_when_switched_off(fresh, make_settings):
    _write_mart(fresh, dt.date(2024, 1, 1), days=60)
    assert not first_model_verdict(fresh, active_training_runs=1).train
    off = make_settings(label_delay_days=LABEL_DELAY, bootstrap_training="false")
    assert not first_model_verdict(off, 0).train
