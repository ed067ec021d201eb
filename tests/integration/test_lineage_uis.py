"""The lineage UIs as ``make up`` runs them: the dbt docs site and the Feast UI, real processes.

Both are started on an empty home first (what a user sees before the first build_features
run), then the project is built underneath them — simulated lake -> ``dbt build`` ->
``generate_docs`` -> ``feast apply`` — and the *same* processes must show the lineage and the
definitions. Spark is skipped: the Feast UI reads the registry, which ``feast apply`` fills
from the definitions alone.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from pipelines.config import PROJECT_ROOT, Settings, load_settings
from pipelines.featurestore import store
from pipelines.ingest.daily import ingest_days
from pipelines.platform.lineage import PLACEHOLDER_MARK, DbtDocsSite, FeastUI
from pipelines.platform.mlflow import healthy
from pipelines.platform.process import wait_until
from pipelines.transform.dbt import generate_docs, run_dbt_build
from tests.conftest import free_port
from tests.waiting import wait_for

FIRST_DAY = dt.date(2018, 4, 1)
N_DAYS = 4
MART = "model.fraud.fct_transactions"
STAGING = {"model.fraud.stg_transactions", "model.fraud.stg_labels"}
# feature_store.yaml's registry cache_ttl_seconds (60) bounds how long the UI shows old state.
REGISTRY_REFRESH_S = 90


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10, trust_env=False)


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("lineage")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "FRAUD_HOME": str(home),
            "FRAUD_DATA_DIR": str(home / "data"),
            "FRAUD_WAREHOUSE_PATH": str(home / "warehouse" / "fraud.duckdb"),
            "FRAUD_N_CUSTOMERS": "200",
            "FRAUD_N_TERMINALS": "400",
            "FRAUD_HISTORY_START": FIRST_DAY.isoformat(),
            "FRAUD_SERVING_HOST": "127.0.0.1",
            "FRAUD_DBT_DOCS_PORT": str(free_port()),
            "FRAUD_FEAST_UI_PORT": str(free_port()),
        }.items():
            mp.setenv(key, value)
        yield load_settings()


@pytest.fixture(scope="module")
def uis(settings) -> Iterator[tuple[DbtDocsSite, FeastUI]]:
    docs, feast = DbtDocsSite(settings), FeastUI(settings)
    try:
        feast.up(timeout=180)
        docs.up()
        yield docs, feast
    finally:
        docs.down()
        feast.down()


@pytest.fixture(scope="module")
def before_build(uis) -> dict:
    """What the UIs answer on a fresh home, before any build (taken before ``built`` runs)."""
    docs, feast = uis
    index = _get(f"{docs.url}/")
    services = _get(f"{feast.url}/api/v1/feature_services?project=fraud")
    return {
        "index": (index.status_code, index.text),
        "manifest": _get(f"{docs.url}/manifest.json").status_code,
        "feast_health": _get(f"{feast.url}/health").status_code,
        "feast_ui": _get(f"{feast.url}/").status_code,
        "services": (services.status_code, services.json()),
        "feast_pid": feast.process().pid(),
    }


@pytest.fixture(scope="module")
def built(settings, before_build) -> Settings:
    ingest_days(FIRST_DAY, FIRST_DAY + dt.timedelta(days=N_DAYS - 1), settings)
    run_dbt_build(settings)
    generate_docs(settings)
    store.apply(settings)
    return settings


# --- before the first build ----------------------------------------------------------------
def test_docs_site_explains_itself_before_the_first_build(before_build):
    status, text = before_build["index"]
    assert status == 200
    assert PLACEHOLDER_MARK in text and "first <code>build_features</code> run" in text
    assert before_build["manifest"] == 404


def test_feast_ui_serves_an_empty_registry_before_the_first_apply(before_build):
    assert before_build["feast_health"] == 200
    assert before_build["feast_ui"] == 200
    status, body = before_build["services"]
    assert status == 200 and body["featureServices"] == []


# --- after the build --------------------------------------------------------------------------
def test_docs_site_serves_the_lineage_after_the_build(built, uis):
    docs, _ = uis
    assert docs.published()
    index = _get(f"{docs.url}/")
    assert index.status_code == 200
    assert PLACEHOLDER_MARK not in index.text and "dbt" in index.text

    manifest = _get(f"{docs.url}/manifest.json").json()
    # The lineage graph is drawn from these edges: raw sources -> staging -> mart.
    assert set(manifest["nodes"][MART]["depends_on"]["nodes"]) >= STAGING
    for model in STAGING:
        assert any(
            n.startswith("source.fraud.") for n in manifest["nodes"][model]["depends_on"]["nodes"]
        )
    assert MART in manifest["child_map"]["model.fraud.stg_transactions"]

    catalog = _get(f"{docs.url}/catalog.json").json()
    columns = {c.lower() for c in catalog["nodes"][MART]["columns"]}
    assert {"transaction_id", "tx_amount", "tx_fraud"} <= columns


def test_feast_ui_shows_the_applied_definitions_without_a_restart(built, uis, before_build):
    _, feast = uis
    registry = store.get_store(built)
    expected_services = {s.name for s in registry.list_feature_services()}
    expected_views = {v.name for v in registry.list_all_feature_views()}
    assert store.FEATURE_SERVICE in expected_services

    def shown() -> set[str]:
        body = _get(f"{feast.url}/api/v1/feature_services?project=fraud").json()
        return {s["spec"]["name"] for s in body["featureServices"]}

    assert wait_until(lambda: shown() == expected_services, REGISTRY_REFRESH_S, interval=3)
    views = _get(f"{feast.url}/api/v1/feature_views?project=fraud").json()["featureViews"]
    assert {v["spec"]["name"] for v in views} == expected_views
    projects = _get(f"{feast.url}/projects-list.json").json()["projects"]
    assert [p["id"] for p in projects] == ["fraud"]
    assert feast.process().pid() == before_build["feast_pid"]  # the same process, not restarted


def test_compose_entry_point_serves_the_same_site(built, uis):
    """``python -m pipelines.platform.cli dbt-docs`` (the container command) serves the site."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.platform.cli", "dbt-docs", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: healthy(f"{url}/manifest.json"), timeout=30, interval=0.5)
        assert _get(f"{url}/manifest.json").json()["nodes"][MART]["name"] == "fct_transactions"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_down_stops_both_processes(uis):
    docs, feast = uis
    assert docs.down() and feast.down()
    assert docs.process().pid() is None and feast.process().pid() is None
    # The processes are gone; the sockets close with them.
    wait_for(
        "both ports to stop answering",
        lambda: not healthy(f"{docs.url}/", timeout=2) and not healthy(f"{feast.url}/health", 2),
        timeout=10,
        interval=0.2,
    )
