"""The day a DAG run works on (``pipelines.orchestration.run_day``)."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines.orchestration import run_day

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
