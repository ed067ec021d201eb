"""The analyze_experiment DAG: one run at a time, daily, params, and the Asset a ship emits."""

import pytest

from tests.conftest import describe_dag


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    return describe_dag(
        tmp_path_factory.mktemp("analyze_experiment_dag"),
        "analyze_experiment.py",
        "analyze_experiment",
    )


def test_daily_one_run_at_a_time_with_params(described):
    assert described["errors"] == {}
    assert described["max_active_runs"] == 1 and described["catchup"] is False
    assert described["schedule"] == "CronDataIntervalTimetable"
    assert described["params"] == {"window_days": 28, "day": None, "apply": True}


def test_only_a_ship_publishes_the_model_asset(described):
    down = described["downstream"]
    assert down["analyze"] == ["publish_champion", "shipped"]
    assert down["shipped"] == ["publish_champion"]
    assert described["outlets"]["publish_champion"] == ["champion_model"]
    assert described["outlets"]["analyze"] == []
