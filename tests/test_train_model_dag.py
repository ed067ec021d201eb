"""The train_model DAG: its task chain, params, concurrency and the Asset it emits."""

import itertools
import json
import subprocess
import sys
import textwrap

import pytest

from pipelines.config import PROJECT_ROOT, load_settings
from pipelines.platform.airflow import AirflowServices

_DESCRIBE = textwrap.dedent(
    """
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    dag = bag.dags["train_model"]
    print(json.dumps({
        "errors": {k: str(v) for k, v in bag.import_errors.items()},
        "max_active_runs": dag.max_active_runs,
        "schedule": type(dag.timetable).__name__,
        "params": sorted(dag.params.keys()),
        "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
        "outlets": {t.task_id: [getattr(o, "name", str(o)) for o in t.outlets] for t in dag.tasks},
    }))
    """
)


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_HOME", str(tmp_path_factory.mktemp("train_dag")))
        mp.setenv("FRAUD_HISTORY_START", "2018-04-01")
        env = AirflowServices(load_settings()).env()
    out = subprocess.run(
        [sys.executable, "-c", _DESCRIBE, str(PROJECT_ROOT / "dags" / "train_model.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    assert described["params"] == ["reason", "test_end", "timeout_seconds", "trials"]


def test_only_a_promotion_emits_the_model_asset(described):
    emitting = {task for task, outlets in described["outlets"].items() if outlets}
    assert emitting == {"publish_champion"}
    assert described["outlets"]["publish_champion"] == ["champion_model"]
