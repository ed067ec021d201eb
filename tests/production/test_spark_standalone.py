"""A Spark standalone master + worker from the pyspark installation runs the feature job.

Same job file, same runner; only ``FRAUD_SPARK_MASTER=spark://127.0.0.1:<port>`` differs from
the embedded profile, and the tables must equal those of ``local[2]`` row for row.
"""

from __future__ import annotations

import shutil

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.features.runner import run_feature_job
from pipelines.platform.cli import services_app
from pipelines.platform.spark import SparkStandalone, alive_workers, master_status
from tests.conftest import free_port
from tests.production.conftest import profile

TABLES = (
    "customer_features",
    "terminal_features",
    "terminal_label_features",
    "customer_terminal_features",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    spark = SparkStandalone(
        home=tmp_path_factory.mktemp("spark-standalone"),
        master_port=free_port(),
        master_webui_port=free_port(),
        worker_port=free_port(),
        worker_webui_port=free_port(),
        worker_cores=1,
        worker_memory="1g",
    )
    try:
        spark.up(timeout=120)
        yield spark
    finally:
        spark.down()


def test_the_worker_registers_alive_with_the_master(cluster):
    workers = alive_workers(master_status(cluster.webui_url))
    assert [(w["cores"], w["memory"]) for w in workers] == [(1, 1024)]
    healthy = CliRunner().invoke(
        services_app, ["spark-health", "--webui-url", cluster.webui_url, "--min-workers", "1"]
    )
    assert healthy.exit_code == 0, healthy.output


def test_feature_job_through_spark_url_equals_local_mode(cluster, small_lake, tmp_path):
    with profile(FRAUD_HOME=tmp_path / "home", FRAUD_SPARK_MASTER=cluster.master_url) as on_cluster:
        # The same mart the local-mode reference was computed from.
        shutil.copytree(small_lake.marts_dir, on_cluster.marts_dir)
        result = run_feature_job(on_cluster)
    assert result.input_rows > 0

    # The application really ran on the cluster (not a local fallback).
    apps = master_status(cluster.webui_url)["completedapps"]
    assert [a["name"] for a in apps] == ["fraud-features"]
    assert apps[0]["cores"] == 1

    for table in TABLES:
        # Day partitions: the same folders on both sides, then the rows of all of them.
        days = sorted(p.name for p in (small_lake.features_dir / table).glob("date=*"))
        assert sorted(p.name for p in (on_cluster.features_dir / table).glob("date=*")) == days
        local = pq.read_table(small_lake.features_dir / table).drop_columns(["date"])
        remote = pq.read_table(on_cluster.features_dir / table).drop_columns(["date"])
        assert remote.schema == local.schema, table
        assert remote.num_rows == local.num_rows > 0, table
        # Rows in the same order (sorted by every plain column), then the same values; a list
        # (the card's recent payments) holds same-instant payments in any order.
        plain = [f.name for f in local.schema if not pa.types.is_list(f.type)]
        keys = [(name, "ascending") for name in plain]
        local, remote = local.sort_by(keys), remote.sort_by(keys)
        assert remote.select(plain).equals(local.select(plain)), table
        for name in set(local.schema.names) - set(plain):
            ours, theirs = local.column(name).to_pylist(), remote.column(name).to_pylist()
            assert [sorted(v) for v in theirs] == [sorted(v) for v in ours], (table, name)


def test_down_stops_master_and_worker(cluster):
    pids = [p.pid() for p in cluster.processes()]
    assert all(pids)
    assert cluster.down() == ["spark-worker", "spark-master"]
    assert not any(psutil.pid_exists(pid) for pid in pids)
    unhealthy = CliRunner().invoke(services_app, ["spark-health", "--webui-url", cluster.webui_url])
    assert unhealthy.exit_code == 1
