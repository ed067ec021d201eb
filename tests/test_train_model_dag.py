"""The train_model DAG: its task chain, params, concurrency and the Asset it emits."""

import itertools

import pytest

from tests.conftest import describe_dag


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    return describe_dag(tmp_path_factory.mktemp("train_model_dag"), "train_model.py", "train_model")


def test_tasks_run_in_the_training_order(described):
    down = described["downstream"]
    chain = ["build_dataset", "tune", "train_final", "evaluate", "register", "gate"]
    for before, after in itertools.pairwise(chain):
        assert after in down[before], (before, after)
    assert "champion_moved" in down["gate"]
    assert down["champion_moved"] == ["publish_champion"]


def test_one_run_at_a_time_manual_or_triggered_with_params(described):
    assert described["errors"] == {}
    assert described["max_active_runs"] == 1
    assert described["schedule"] == "NullTimetable"  # no schedule: manual or triggered
    assert sorted(described["params"]) == [
        "max_epochs",
        "reason",
        "test_end",
        "timeout_seconds",
        "trials",
    ]


def test_only_a_promotion_emits_the_model_asset(described):
    emitting = {task for task, outlets in described["outlets"].items() if outlets}
    assert emitting == {"publish_champion"}
    assert described["outlets"]["publish_champion"] == ["champion_model"]
