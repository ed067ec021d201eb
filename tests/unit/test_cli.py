"""The CLI runs each stage without Airflow (a real subprocess, as a user types it)."""

import os
import subprocess
import sys

import pyarrow.parquet as pq


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=dict(os.environ, COLUMNS="200"),
        capture_output=True,
        text=True,
        check=False,
    )


def test_help_lists_every_stage():
    out = _cli("--help")
    assert out.returncode == 0
    for command in ("simulate", "ingest", "lake", "services"):
        assert command in out.stdout


def test_ingest_a_range_show_the_lake_and_build_the_features(settings):
    out = _cli("ingest", "range", "--start", "2018-04-01", "--end", "2018-04-09")
    assert out.returncode == 0, out.stderr
    status = _cli("lake", "status")
    assert status.returncode == 0, status.stderr
    rows = pq.read_table(settings.raw_transactions_dir).num_rows
    assert f"{rows:,}" in status.stdout
    assert "2018-04-09" in status.stdout  # last transaction day
    assert "2018-04-02" in status.stdout  # last label day (delay 7)

    # The whole feature path from the same lake: dbt, Spark, feast apply, materialize.
    built = _cli("features", "build")
    assert built.returncode == 0, built.stderr
    assert f"features: {rows:,} transactions" in built.stdout
    assert "online store loaded up to 2018-04-09" in built.stdout
    assert (settings.feast_dir / "online.db").exists()


def test_simulate_writes_one_file_with_labels(settings, tmp_path):
    out_file = tmp_path / "sim.parquet"
    out = _cli("simulate", "--start", "2018-04-01", "--end", "2018-04-03", "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    table = pq.read_table(out_file)
    assert "tx_fraud" in table.column_names and table.num_rows > 0


def test_a_bad_date_is_a_usage_error_not_a_traceback(settings):
    out = _cli("ingest", "day", "2018-13-45")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "2018-13-45" in out.stderr
