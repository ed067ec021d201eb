"""The CLI runs the stages without Airflow, as a user types them (real subprocesses): a range
ingested, the lake's status, and the whole feature path (dbt, Spark, feast apply,
materialization) from the same lake."""

import pyarrow.parquet as pq

from tests.unit.test_cli import cli


def test_ingest_a_range_show_the_lake_and_build_the_features(settings):
    out = cli("ingest", "range", "--start", "2018-04-01", "--end", "2018-04-09")
    assert out.returncode == 0, out.stderr
    status = cli("lake", "status")
    assert status.returncode == 0, status.stderr
    rows = pq.read_table(settings.raw_transactions_dir).num_rows
    assert f"{rows:,}" in status.stdout
    assert "2018-04-09" in status.stdout  # last transaction day
    assert "2018-04-02" in status.stdout  # last label day (delay 7)

    # The whole feature path from the same lake: dbt, Spark, feast apply, materialize.
    built = cli("features", "build")
    assert built.returncode == 0, built.stderr
    assert f"features: {rows:,} transactions" in built.stdout
    assert "online store loaded up to 2018-04-09" in built.stdout
    assert (settings.feast_dir / "online.db").exists()
