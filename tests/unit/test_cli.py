"""The CLI as a user types it (a real subprocess): help, the simulator, usage errors.

The whole feature path through the CLI (dbt, Spark, Feast) is in
``tests/integration/test_cli_pipeline.py``."""

import os
import subprocess
import sys

import pyarrow.parquet as pq


def cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m pipelines <args>`` in a subprocess, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        env=dict(os.environ, COLUMNS="200"),
        capture_output=True,
        text=True,
        check=False,
    )


def test_help_lists_every_stage():
    out = cli("--help")
    assert out.returncode == 0
    for command in ("simulate", "ingest", "lake", "services"):
        assert command in out.stdout


def test_simulate_writes_one_file_with_labels(settings, tmp_path):
    out_file = tmp_path / "sim.parquet"
    out = cli("simulate", "--start", "2018-04-01", "--end", "2018-04-03", "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    table = pq.read_table(out_file)
    assert "tx_fraud" in table.column_names and table.num_rows > 0


def test_a_bad_date_is_a_usage_error_not_a_traceback(settings):
    out = cli("ingest", "day", "2018-13-45")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "2018-13-45" in out.stderr
