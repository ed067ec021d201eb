"""The day a DAG run works on (``pipelines.orchestration.run_day``) and the days the raw-lake
Asset events name."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from pipelines.orchestration import days_extra, event_days, run_day

EDGE = dt.datetime(2026, 3, 4, 0, 0, tzinfo=dt.UTC)


def test_the_day_param_wins_over_the_data_interval():
    assert run_day({"day": "2026-01-02"}, EDGE) == dt.date(2026, 1, 2)


def test_without_a_day_param_the_data_interval_gives_the_day():
    assert run_day({"day": None}, EDGE) == dt.date(2026, 3, 4)
    assert run_day(None, EDGE) == dt.date(2026, 3, 4)


def test_a_manual_run_without_a_logical_date_must_name_the_day():
    with pytest.raises(ValueError, match="param day"):
        run_day({}, None)


def test_a_malformed_day_is_refused():
    with pytest.raises(ValueError):
        run_day({"day": "2026-13-01"}, EDGE)


def test_the_raw_lake_events_name_the_days_written_and_the_build_reads_them_back():
    day, labels_day = dt.date(2024, 3, 9), dt.date(2024, 3, 2)
    assert days_extra(day, labels_day) == {"days": ["2024-03-02", "2024-03-09"]}
    assert days_extra(day, None) == {"days": ["2024-03-09"]}  # no labels arrived that day
    # Events merged into one run (a catchup), one without the extra (another producer).
    events = [
        SimpleNamespace(extra=days_extra(day, labels_day)),
        SimpleNamespace(extra=days_extra(day + dt.timedelta(days=1), None)),
        SimpleNamespace(extra=None),
    ]
    assert event_days(events) == [labels_day, day, day + dt.timedelta(days=1)]
    assert event_days([]) == []
