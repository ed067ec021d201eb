"""Every DAG file imports cleanly, is well-formed, and stays light at parse time."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT, load_settings
from pipelines.platform.airflow import AirflowServices

DAG_FILES = sorted((PROJECT_ROOT / "dags").glob("*.py"))
HEAVY = [
    *("pandas", "numpy", "pyarrow", "duckdb", "torch", "pyspark", "feast", "mlflow", "dbt"),
    *("whylogs", "bentoml", "optuna", "sklearn"),
]

_DAGBAG = textwrap.dedent(
    """
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "file": dag.fileloc,
            "tags": sorted(dag.tags),
            "retries": {t.task_id: t.retries for t in dag.tasks},
            "catchup": dag.catchup,
            "start_date": str(dag.start_date),
        }
    print(json.dumps(out))
    """
)

_IMPORT_COST = textwrap.dedent(
    """
    import importlib.util, json, sys, time
    import airflow.sdk  # the framework's own import is not the DAG file's cost
    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
    start = time.perf_counter()
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    took = time.perf_counter() - start
    new = sorted({m.split(".")[0] for m in set(sys.modules) - before})
    print(json.dumps({"seconds": took, "new_top_level_modules": new}))
    """
)


def _run(script: str, arg: str, settings) -> dict:
    env = AirflowServices(settings).env()
    out = subprocess.run(
        [sys.executable, "-c", script, arg], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_HOME", str(tmp_path_factory.mktemp("dagbag")))
        mp.setenv("FRAUD_HISTORY_START", "2018-04-01")
        return _run(_DAGBAG, str(PROJECT_ROOT / "dags"), load_settings())


def test_every_dag_file_imports_without_error(dagbag):
    assert dagbag["errors"] == {}
    files = {Path(d["file"]).name for d in dagbag["dags"].values()}
    assert files == {f.name for f in DAG_FILES}


@pytest.mark.parametrize("dag_id", ["ingest_transactions", "ingest_landing"])
def test_expected_dags_exist(dagbag, dag_id):
    assert dag_id in dagbag["dags"]


def test_every_dag_has_tags_and_every_task_retries(dagbag):
    for dag_id, dag in dagbag["dags"].items():
        assert dag["tags"], f"{dag_id} has no tags"
        for task_id, retries in dag["retries"].items():
            assert retries >= 1, f"{dag_id}.{task_id} has no retries"


def test_start_dates_are_fixed_not_relative_to_now(dagbag, settings):
    ingest = dagbag["dags"]["ingest_transactions"]
    assert ingest["catchup"] is True
    assert ingest["start_date"].startswith(settings.history_start_date.isoformat())


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_nothing_heavy_at_parse_time(dag_file, settings):
    cost = _run(_IMPORT_COST, str(dag_file), settings)
    heavy = [m for m in cost["new_top_level_modules"] if m in HEAVY]
    assert heavy == [], f"{dag_file.name} imports {heavy} at module level"
