"""Launch the Spark feature job (``job.py``) with ``spark-submit`` and report what it wrote.

The job runs as a subprocess, exactly as on a cluster: the same file, the master from
``settings.spark_master``. This module stays cheap to import (no pyspark): DAG files import it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from pipelines.features.job import RESULT_MARKER

if TYPE_CHECKING:
    from pipelines.config import Settings

log = logging.getLogger(__name__)

JOB_FILE = Path(__file__).resolve().parent / "job.py"
LOG4J2_FILE = Path(__file__).resolve().parent / "conf" / "log4j2.properties"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# "26/11/26 05:48:38 ERROR SparkContext: ..." (the layout of conf/log4j2.properties)
_LOG_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (?P<level>[A-Z]+) ")
# "\tat org.apache...(File.scala:12)" and "\t... 1 more" in a Java stack trace
_JVM_FRAME = re.compile(r"^\s+(at |\.\.\. \d+ more)")
_TAIL_LINES = 20
_REASON_LINES = 12


@dataclass(frozen=True)
class FeatureTable:
    path: Path
    rows: int | None  # in the table after a full run (what readers get); None: incremental
    rows_written: int  # written by this run (every row, or the rebuilt days')


@dataclass(frozen=True)
class FeatureJobResult:
    tables: dict[str, FeatureTable]  # every table the job wrote, by name (job.*_TABLE)
    input_rows: int  # rows read from fct_transactions
    dropped_rows: int  # of which dropped for a missing key (see job.validate_transactions)
    label_delay_days: int
    since: dt.date | None  # the first rebuilt day (None: every day was rebuilt)
    wall_seconds: float  # spark-submit start to exit, JVM start included
    job_seconds: float  # inside the job: read, compute, write, swap
    log: str  # the job's stderr (Spark warnings)


def spark_submit_executable() -> str:
    """``spark-submit`` beside the running interpreter (the venv's bin), else from PATH."""
    beside = Path(sys.executable).parent / "spark-submit"
    if beside.exists():
        return str(beside)
    found = shutil.which("spark-submit")
    if found is None:
        raise RuntimeError("spark-submit not found beside the interpreter nor on PATH")
    return found


def _runs_on_this_machine(master: str) -> bool:
    return master.startswith("local") or urlparse(master).hostname in _LOOPBACK_HOSTS


def build_command(
    settings: Settings, label_delay_days: int, since: dt.date | None = None
) -> list[str]:
    return [
        spark_submit_executable(),
        "--master",
        settings.spark_master,
        "--driver-memory",
        settings.spark_driver_memory,
        "--name",
        "fraud-features",
        # Our WARN log config for the driver; a system property rather than SPARK_CONF_DIR, so
        # that an operator's spark-defaults.conf in the usual conf folder is still read.
        "--driver-java-options",
        f"-Dlog4j2.configurationFile={LOG4J2_FILE.as_uri()}",
        "--conf",
        "spark.ui.showConsoleProgress=false",
        str(JOB_FILE),
        "--marts-dir",
        str(settings.marts_dir),
        "--features-dir",
        str(settings.features_dir),
        "--label-delay-days",
        str(label_delay_days),
        *(["--since", since.isoformat()] if since else []),
    ]


def build_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    # The driver is a Python process started by the JVM: it must be this interpreter (which
    # has pyspark), not whatever "python3" is first on PATH.
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if _runs_on_this_machine(settings.spark_master):
        # Binding to loopback avoids the hostname lookup warnings and any exposed port; on a
        # remote cluster the executors must reach the driver, so it is left to the operator.
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        env.setdefault("PYSPARK_PYTHON", sys.executable)
    return env


def failure_reason(stdout: str, stderr: str) -> str:
    """The lines of a failed job's output that say why: the Python exception, else errors.

    spark-submit merges the Python driver's stderr into its own stdout, so a driver traceback
    is found there; the JVM's log lines (``... ERROR ...``) are on stderr.
    """
    for stream in (stdout, stderr):
        exception = _last_exception(stream.splitlines())
        if exception:
            return _clip(exception)
    lines = stderr.splitlines()
    errors = [line for line in lines if (m := _LOG_LINE.match(line)) and m["level"] == "ERROR"]
    if errors:
        return _clip("\n".join(errors[:5]))
    tail = [line for line in [*stdout.splitlines(), *lines] if line.strip()][-5:]
    return "\n".join(tail) if tail else "no output"


def _last_exception(lines: list[str]) -> str:
    """The exception text closing the last Python traceback in ``lines`` ("" if none)."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if not starts:
        return ""
    # After the frames (indented lines) comes the exception itself, possibly several lines
    # long, up to the next log line; taking the last traceback skips chained ones.
    exception: list[str] = []
    for line in lines[starts[-1] + 1 :]:
        if _LOG_LINE.match(line):
            break
        if _JVM_FRAME.match(line):
            continue  # a Py4J error embeds the Java stack trace: the message lines suffice
        if exception or not line.startswith(" "):
            exception.append(line)
    return "\n".join(exception).strip()


def _parse_result(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    raise RuntimeError(f"feature job exited 0 but printed no {RESULT_MARKER} line:\n{stdout}")


def run_feature_job(
    settings: Settings,
    *,
    label_delay_days: int | None = None,
    since: dt.date | None = None,
    timeout: float | None = 3600,
) -> FeatureJobResult:
    """Run the feature job on ``settings.marts_dir`` into ``settings.features_dir``: every
    day, or with ``since`` the days from ``since`` on (``job.py``'s docstring).

    ``label_delay_days`` defaults to ``settings.label_delay_days``. Raises ``RuntimeError``
    carrying the job's own error (exception or Spark ERROR lines) if it fails or times out.
    """
    delay = settings.label_delay_days if label_delay_days is None else label_delay_days
    command = build_command(settings, delay, since)
    log.info("running %s", " ".join(command))
    started = time.monotonic()
    # Own session, so a timeout can stop the JVM and the Python driver it forked together.
    proc = subprocess.Popen(
        command,
        env=build_env(settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise RuntimeError(
            f"feature job timed out after {timeout} s; output tail:\n"
            f"{_tail(stdout)}\n{_tail(stderr)}"
        ) from None
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(
            f"feature job failed (exit {proc.returncode}): {failure_reason(stdout, stderr)}\n"
            f"--- output tail ---\n{_tail(stdout)}\n{_tail(stderr)}"
        )
    summary = _parse_result(stdout)
    result = FeatureJobResult(
        tables={
            name: FeatureTable(
                path=Path(table["path"]),
                rows=None if table["rows"] is None else int(table["rows"]),
                rows_written=int(table["rows_written"]),
            )
            for name, table in summary["tables"].items()
        },
        input_rows=int(summary["input_rows"]),
        dropped_rows=int(summary["dropped_rows"]),
        label_delay_days=int(summary["label_delay_days"]),
        since=dt.date.fromisoformat(summary["since"]) if summary["since"] else None,
        wall_seconds=round(wall, 3),
        job_seconds=float(summary["seconds"]),
        log=stderr,
    )
    log.info(
        "feature job wrote %s in %.1f s",
        ", ".join(f"{name} ({t.rows_written:,} rows)" for name, t in result.tables.items()),
        result.wall_seconds,
    )
    return result


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-_TAIL_LINES:])


def _clip(reason: str) -> str:
    # A Spark exception can carry a whole JVM stack trace: its first lines say what went wrong.
    lines = reason.splitlines()
    if len(lines) > _REASON_LINES:
        lines = [*lines[:_REASON_LINES], f"... ({len(lines) - _REASON_LINES} more lines)"]
    return "\n".join(lines)
