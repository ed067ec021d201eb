"""Airflow's Asset graph connects the DAGs: every Asset a DAG waits for is produced by a task,
and ingest reaches deployment through Assets and triggers.

The edges are computed the way Airflow computes the dependency graph its UI draws (Assets view,
DAG dependencies): ``DagSerialization.serialize_dag(dag)["dag_dependencies"]`` over the DagBag,
in a subprocess configured like the Airflow services.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import defaultdict

import pytest

from pipelines import orchestration
from pipelines.config import PROJECT_ROOT, load_settings
from pipelines.platform.airflow import AirflowServices

_DEPENDENCIES = textwrap.dedent(
    """
    import json, sys
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    bag = DagBag(dag_folder=sys.argv[1])
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "deps": []}
    for dag in bag.dags.values():
        out["deps"] += DagSerialization.serialize_dag(dag)["dag_dependencies"]
    print(json.dumps(out))
    """
)

DECLARED = {
    (a.name, a.uri)
    for a in vars(orchestration).values()
    if isinstance(a, orchestration.Asset)  # the Assets of pipelines/orchestration.py
}


def _key(dep: dict) -> tuple[str, str]:
    key = json.loads(dep["dependency_id"])
    return key["name"], key["uri"]


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> dict:
    """Producers and consumers of each Asset, and DAG -> DAG edges (Assets + triggers)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_HOME", str(tmp_path_factory.mktemp("assets")))
        mp.setenv("FRAUD_HISTORY_START", "2018-04-01")
        env = AirflowServices(load_settings()).env()
    out = subprocess.run(
        [sys.executable, "-c", _DEPENDENCIES, str(PROJECT_ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    producers: dict[tuple[str, str], set[str]] = defaultdict(set)
    consumers: dict[tuple[str, str], set[str]] = defaultdict(set)
    triggers: dict[str, set[str]] = defaultdict(set)
    for dep in parsed["deps"]:
        if dep["dependency_type"] == "asset" and dep["target"] == "asset":
            producers[_key(dep)].add(dep["source"])
        elif dep["dependency_type"] == "asset" and dep["source"] == "asset":
            consumers[_key(dep)].add(dep["target"])
        elif dep["dependency_type"] == "trigger":
            triggers[dep["source"]].add(dep["target"])
    return {"producers": producers, "consumers": consumers, "triggers": triggers}


def test_every_asset_a_dag_waits_for_is_produced_by_a_dag(graph):
    """A schedule on an Asset nobody emits (or a typo in its URI) would never run."""
    assert graph["consumers"], "no DAG is scheduled on an Asset"
    orphans = {
        asset: dags for asset, dags in graph["consumers"].items() if asset not in graph["producers"]
    }
    assert orphans == {}


def test_every_declared_asset_has_a_producer_and_dags_use_only_declared_ones(graph):
    assert len(DECLARED) >= 4  # raw transactions and labels, features, champion model
    used = set(graph["producers"]) | set(graph["consumers"])
    assert used - DECLARED == set(), "Assets defined outside pipelines/orchestration.py"
    assert DECLARED - set(graph["producers"]) == set(), "declared Assets nobody emits"


def _reachable(graph: dict, start: str) -> set[str]:
    edges: dict[str, set[str]] = defaultdict(set)
    for asset, dags in graph["producers"].items():
        for dag in dags:
            edges[dag] |= graph["consumers"].get(asset, set())
    for source, targets in graph["triggers"].items():
        edges[source] |= targets
    seen, todo = set(), [start]
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


@pytest.mark.parametrize("ingest", ["ingest_transactions", "ingest_landing"])
def test_ingest_reaches_deployment_through_the_graph(graph, ingest):
    """raw data -> build_features -> (first model) train_model -> champion -> deploy_model."""
    assert {"build_features", "train_model", "deploy_model"} <= _reachable(graph, ingest)


def test_the_drift_monitor_and_the_experiment_reach_deployment(graph):
    assert "deploy_model" in _reachable(graph, "monitor_drift")  # retrain -> new champion
    assert "deploy_model" in _reachable(graph, "analyze_experiment")  # ship -> alias moved
