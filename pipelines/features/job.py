"""Spark feature job: per-transaction customer state and terminal features, point-in-time correct.

Run it with ``spark-submit pipelines/features/job.py --marts-dir M --features-dir F
[--label-delay-days 7] [--since YYYY-MM-DD]``, on ``local[*]`` or a ``spark://`` master
alike. Only this file ships to a cluster, so it imports nothing from the ``pipelines``
package (stdlib and pyspark only); ``pipelines.features.runner`` launches it from Python.

It writes four tables (``*_TABLE`` below). The customer table is state, not windows: the
customer's payments of the last 30 days as of each transaction, from which the feature store's
on-demand view (feature_repo/transaction_features.py) computes every customer window at the
scored instant, in training and serving alike. What each column means exactly (windows, label
delay, point-in-time rules, input and output contract) is specified in
docs/data-and-features.md#feature-specification.

Incremental: with ``--since S`` the job rebuilds the rows whose event falls on day S or later
and replaces those day partitions only. Everything before S is left as it is, which is exact
because no feature of a row at t depends on anything later than t. It reads the mart from
``lookback_days`` before S (every window of a rebuilt row reaches no further back), and for
``terminal_label_features``, whose state (the newest three labels, the fraud streak) has no
window, each terminal's labels from its last genuine one before S (``label_history_for``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

SECONDS_PER_DAY = 86_400
WINDOW_DAYS = (1, 7, 30)
# The customer's payments of the longest window, kept in every customer state row.
RECENT_EVENTS_DAYS = max(WINDOW_DAYS)
RECENT_EVENT_COLUMNS = (
    "customer_recent_tx_id",
    "customer_recent_tx_unix",
    "customer_recent_tx_amount",
)
INPUT_TABLE = "fct_transactions"
CUSTOMER_TABLE = "customer_features"
TERMINAL_TABLE = "terminal_features"
TERMINAL_LABEL_TABLE = "terminal_label_features"
CUSTOMER_TERMINAL_TABLE = "customer_terminal_features"
# Every table is partitioned by its event_timestamp's UTC day (``date=YYYY-MM-DD/``), so an
# incremental run (``--since``) replaces the days it rebuilt and nothing else.
DAY_PARTITION = "date"
# On success the last stdout line is "FEATURE_JOB_RESULT {json}": every table written, with
# its path and row count (``run``), which the runner parses.
RESULT_MARKER = "FEATURE_JOB_RESULT"

# Input contract: column -> Spark SQL type it is cast to (casts also absorb harmless writer
# differences such as int8 flags or a TIMESTAMP_NTZ from a writer that dropped the zone).
INPUT_COLUMNS = {
    "transaction_id": "bigint",
    "tx_datetime": "timestamp",
    "customer_id": "bigint",
    "terminal_id": "bigint",
    "tx_amount": "double",
    "tx_fraud": "int",
    "label_available_at": "timestamp",
}

# Rows missing any of these cannot be placed in a window and are dropped (and counted).
KEY_COLUMNS = ("transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount")

CUSTOMER_STATE_COLUMNS = [
    # The state's time in unix seconds: this payment's, the newest in the lists (Feast's
    # customer_state view serves the lists only).
    "customer_last_tx_unix",
    *RECENT_EVENT_COLUMNS,
]
TERMINAL_FEATURES = [
    f for n in WINDOW_DAYS for f in (f"terminal_nb_tx_{n}d", f"terminal_risk_{n}d")
]
TERMINAL_LABEL_FEATURES = [
    "terminal_last_label_fraud",
    "terminal_last3_labels_fraud_share",
    "terminal_fraud_streak_start_unix",
]
LAST_LABELS = 3


class InputError(Exception):
    """The input dataset is missing or does not match the contract."""


# --- session and input ----------------------------------------------------------------------


def create_session(app_name: str = "fraud-features") -> SparkSession:
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _hadoop_fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """(Hadoop FileSystem, Path) py4j handles for ``path``.

    The Hadoop API rather than os/shutil, so the same code works on file:, hdfs:, s3a:...
    """
    jvm = spark.sparkContext._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    return jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), jpath


def read_transactions(
    spark: SparkSession, marts_dir: str, from_day: dt.date | None = None
) -> DataFrame:
    """The mart's transactions, cast to the contract types; fails clearly if absent.

    ``from_day``: only the export's day folders (``date=``) from that day on are listed and
    read, when it has them, so a run over the last days opens none of the history's files.
    """
    from pyspark.sql import functions as F

    source = f"{marts_dir.rstrip('/')}/{INPUT_TABLE}"
    fs, jpath = _hadoop_fs(spark, source)
    if not fs.exists(jpath):
        raise InputError(f"input dataset not found: {source}")
    paths = [source]
    if from_day is not None:
        days = _day_partitions(spark, source)
        paths = [str(p) for day, p in sorted(days.items()) if day >= from_day] or paths
    # Spark skips hidden "."/"_" files, so a writer's hidden temporary files are never read.
    frame = (
        spark.read.option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.parquet")
        .parquet(*paths)
    )
    missing = sorted(set(INPUT_COLUMNS) - set(frame.columns))
    if missing:
        raise InputError(f"{source} lacks required columns {missing}; has {frame.columns}")
    return frame.select(*[F.col(c).cast(t).alias(c) for c, t in INPUT_COLUMNS.items()])


def _has_keys() -> Column:
    from pyspark.sql import functions as F

    has_keys = F.lit(True)
    for column in KEY_COLUMNS:
        has_keys = has_keys & F.col(column).isNotNull()
    return has_keys


def lookback_days(delay_days: int) -> int:
    """How many days before the first rebuilt day the input must start: the terminal windows
    reach (30 + D) days back, the customer's recent payments 30 (one day more for margin)."""
    return max(WINDOW_DAYS) + delay_days + 1


def validate_transactions(tx: DataFrame) -> tuple[DataFrame, dict[str, int]]:
    """Drop rows without a key, fail on duplicate transaction ids; returns rows and counts.

    Key-less rows are expected once: dbt-duckdb exports an empty model as one all-NULL row.
    Duplicates are not: they would double-count every window (a leftover writer temp file such
    as DuckDB's ``tmp_<name>.parquet`` beside the export is the likely cause).
    """
    from pyspark.sql import functions as F

    has_keys = _has_keys()
    counts = tx.agg(
        F.count(F.lit(1)).alias("input"), F.count(F.when(has_keys, 1)).alias("valid")
    ).first()
    valid = tx.where(has_keys)
    duplicated = (
        valid.groupBy("transaction_id").count().where(F.col("count") > 1).limit(5).collect()
    )
    if duplicated:
        ids = [row["transaction_id"] for row in duplicated]
        raise InputError(f"duplicate transaction_id in the input, e.g. {ids}")
    return valid, {"input_rows": counts["input"], "dropped_rows": counts["input"] - counts["valid"]}


def _with_time_keys(tx: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    return tx.withColumn("ts_seconds", F.unix_seconds("tx_datetime")).withColumn(
        "ts_micros", F.unix_micros("tx_datetime")
    )


# --- customer state -------------------------------------------------------------------------


def build_customer_state(tx: DataFrame) -> DataFrame:
    """One row per transaction: the customer's state after it, i.e. their recent payments.

    No window is computed here: the feature store's on-demand view counts and averages the
    windows from these lists at the scored instant (one implementation for training and
    serving alike).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    tx = _with_time_keys(tx)
    state: dict[str, Column] = {"customer_last_tx_unix": F.col("ts_seconds")}

    # The customer's recent payments as of this one (itself and every one at the same
    # microsecond included), from which the feature store computes exact windows at any later
    # instant; serving folds each scored payment into the same lists (serving/stream.py).
    as_of = Window.partitionBy("customer_id").orderBy("ts_micros")
    recent_frame = as_of.rangeBetween(-RECENT_EVENTS_DAYS * SECONDS_PER_DAY * 1_000_000 + 1, 0)
    payment = F.struct("transaction_id", "ts_seconds", "tx_amount")
    recent = F.filter(
        F.collect_list(payment).over(recent_frame),
        lambda e: e["ts_seconds"] > F.col("ts_seconds") - RECENT_EVENTS_DAYS * SECONDS_PER_DAY,
    )
    state["customer_recent_tx_id"] = F.transform(recent, lambda e: e["transaction_id"])
    state["customer_recent_tx_unix"] = F.transform(recent, lambda e: e["ts_seconds"])
    state["customer_recent_tx_amount"] = F.transform(recent, lambda e: e["tx_amount"])

    return tx.select(
        "customer_id",
        F.col("tx_datetime").alias("event_timestamp"),
        "transaction_id",
        *[state[name].alias(name) for name in CUSTOMER_STATE_COLUMNS],
    )


def build_customer_terminal_history(tx: DataFrame) -> DataFrame:
    """One row per payment of a customer at a terminal: when the pair was last used.

    Served through a Feast view with a 30-day TTL, "no row" then means "a terminal new to this
    customer" as of any later time, online as offline.
    """
    from pyspark.sql import functions as F

    return tx.select(
        "customer_id",
        "terminal_id",
        F.col("tx_datetime").alias("event_timestamp"),
        "transaction_id",
        F.unix_seconds("tx_datetime").alias("pair_last_tx_unix"),
    )


# --- terminal features ----------------------------------------------------------------------


def _pending_label_counts(tx: DataFrame, delay_days: int) -> DataFrame:
    """Per target transaction and window: labelled transactions in the window (and frauds among
    them) whose label was NOT yet known at the target's t. Only targets with any are returned.
    """
    from pyspark.sql import functions as F

    longest = max(WINDOW_DAYS)
    labelled = tx.where(F.col("label_available_at").isNotNull() & F.col("tx_fraud").isNotNull())
    # A source at second S lies in the widest window of targets with
    # T in [S + D days, S + (30 + D) days - 1]; its label is pending for targets with
    # t < label_available_at, hence T <= ceil(label_available_at in seconds) - 1 (a label
    # arriving at midnight is pending only for targets of the day before). Only that span of
    # targets can need a correction; it is bucketed by day for an equi-join.
    label_seconds_ceil = F.ceil(F.unix_micros("src_label_at") / 1_000_000)
    first_target = F.col("src_seconds") + delay_days * SECONDS_PER_DAY
    last_target = F.least(
        F.col("src_seconds") + (longest + delay_days) * SECONDS_PER_DAY - 1,
        label_seconds_ceil - 1,
    )
    sources = (
        labelled.select(
            "terminal_id",
            F.col("ts_seconds").alias("src_seconds"),
            F.col("label_available_at").alias("src_label_at"),
            F.col("tx_fraud").alias("src_fraud"),
        )
        .withColumn("first_target", first_target)
        .withColumn("last_target", last_target)
        .where(F.col("first_target") <= F.col("last_target"))
        .withColumn(
            "day_bucket",
            F.explode(
                F.sequence(
                    F.floor(F.col("first_target") / SECONDS_PER_DAY),
                    F.floor(F.col("last_target") / SECONDS_PER_DAY),
                )
            ),
        )
        .drop("first_target", "last_target")
    )
    targets = tx.select(
        "transaction_id",
        "terminal_id",
        "ts_seconds",
        "tx_datetime",
        F.floor(F.col("ts_seconds") / SECONDS_PER_DAY).alias("day_bucket"),
    )
    pairs = targets.join(sources, ["terminal_id", "day_bucket"]).where(
        (F.col("src_label_at") > F.col("tx_datetime"))
        & (F.col("src_seconds") <= F.col("ts_seconds") - delay_days * SECONDS_PER_DAY)
        & (F.col("src_seconds") > F.col("ts_seconds") - (longest + delay_days) * SECONDS_PER_DAY)
    )
    sums = []
    for n in WINDOW_DAYS:
        in_window = F.col("src_seconds") > F.col("ts_seconds") - (n + delay_days) * SECONDS_PER_DAY
        sums.append(F.sum(F.when(in_window, 1).otherwise(0)).alias(f"pending_labelled_{n}d"))
        sums.append(
            F.sum(F.when(in_window, F.col("src_fraud")).otherwise(0)).alias(f"pending_fraud_{n}d")
        )
    return pairs.groupBy("transaction_id").agg(*sums)


def build_terminal_labels(tx: DataFrame) -> DataFrame:
    """One row per (terminal, label arrival instant): the terminal's newest known labels after
    that arrival (docs/data-and-features.md#feature-specification). When several labels of a
    terminal arrive at the same microsecond, the row holds the state after the last of them (by
    transaction id)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    arrivals = tx.where(F.col("label_available_at").isNotNull() & F.col("tx_fraud").isNotNull())
    arrivals = arrivals.withColumn("arrival_micros", F.unix_micros("label_available_at"))
    by_arrival = Window.partitionBy("terminal_id").orderBy("arrival_micros", "transaction_id")
    so_far = by_arrival.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    # A streak is the run of fraud labels since the latest genuine one: numbering the runs by
    # the genuine labels seen so far puts each streak in its own partition.
    streak = Window.partitionBy("terminal_id", "genuine_so_far").orderBy(
        "arrival_micros", "transaction_id"
    )
    fraud_seconds = F.when(F.col("tx_fraud") == 1, F.unix_seconds("tx_datetime"))
    states = (
        arrivals.withColumn("genuine_so_far", F.sum(1 - F.col("tx_fraud")).over(so_far))
        .withColumn(
            "terminal_fraud_streak_start_unix",
            F.when(
                F.col("tx_fraud") == 1,
                F.min(fraud_seconds).over(
                    streak.rowsBetween(Window.unboundedPreceding, Window.currentRow)
                ),
            ),
        )
        .select(
            "terminal_id",
            F.col("label_available_at").alias("event_timestamp"),
            "arrival_micros",
            "transaction_id",
            F.col("tx_fraud").cast("double").alias("terminal_last_label_fraud"),
            F.avg(F.col("tx_fraud").cast("double"))
            .over(by_arrival.rowsBetween(-(LAST_LABELS - 1), Window.currentRow))
            .alias("terminal_last3_labels_fraud_share"),
            "terminal_fraud_streak_start_unix",
        )
    )
    last_at_instant = Window.partitionBy("terminal_id", "arrival_micros").orderBy(
        F.col("transaction_id").desc()
    )
    return (
        states.withColumn("rank_at_instant", F.row_number().over(last_at_instant))
        .where(F.col("rank_at_instant") == 1)
        .select("terminal_id", "event_timestamp", *TERMINAL_LABEL_FEATURES)
    )


def label_history_for(labels: DataFrame, first: dt.datetime) -> DataFrame:
    """The label rows the terminal label states of arrivals from ``first`` on depend on.

    Per terminal, a suffix of its arrivals: from the earlier of its last genuine label before
    ``first`` (where the fraud streak of any later row starts at the latest) and the instant of
    its second-newest arrival before it (the share of the last three labels looks two back),
    whole instants included; all of them for a terminal without both. Over such a suffix every
    window of ``build_terminal_labels`` gives the rows from ``first`` on the values it gives
    over the whole history: an aggregate over the history instead of its window sorts.
    """
    from pyspark.sql import functions as F

    arrival = F.unix_micros("label_available_at")
    labels = labels.where(F.col("label_available_at").isNotNull() & F.col("tx_fraud").isNotNull())
    before = labels.where(F.col("label_available_at") < F.lit(first)).select(
        "terminal_id", arrival.alias("arrival"), "tx_fraud"
    )
    newest = before.groupBy("terminal_id").agg(
        F.max("arrival").alias("newest"),
        F.max(F.when(F.col("tx_fraud") == 0, F.col("arrival"))).alias("last_genuine"),
    )
    second = (
        before.join(newest, "terminal_id")
        .where(F.col("arrival") < F.col("newest"))
        .groupBy("terminal_id")
        .agg(F.max("arrival").alias("second_newest"))
    )
    cutoffs = newest.join(second, "terminal_id", "left").select(
        "terminal_id",
        # No genuine label, or a single arrival instant, before `first`: keep everything.
        F.least("last_genuine", "second_newest").alias("cutoff"),
        (F.col("last_genuine").isNull() | F.col("second_newest").isNull()).alias("keep_all"),
    )
    # A terminal without labels before `first` has no cutoff row: all of its labels are new.
    kept = labels.join(F.broadcast(cutoffs), "terminal_id", "left").where(
        F.col("cutoff").isNull() | F.col("keep_all") | (arrival >= F.col("cutoff"))
    )
    return kept.drop("cutoff", "keep_all")


def build_terminal_features(tx: DataFrame, delay_days: int) -> DataFrame:
    """One row per transaction: the terminal's delayed activity and known fraud rate."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if delay_days < 0:
        raise ValueError(f"label delay must be >= 0 days, got {delay_days}")
    tx = _with_time_keys(tx)
    is_labelled = (F.col("label_available_at").isNotNull() & F.col("tx_fraud").isNotNull()).cast(
        "int"
    )
    tx = tx.withColumn("is_labelled", is_labelled).withColumn(
        "labelled_fraud", F.when(F.col("is_labelled") == 1, F.col("tx_fraud")).otherwise(0)
    )
    by_terminal = Window.partitionBy("terminal_id").orderBy("ts_seconds")
    windowed = tx
    for n in WINDOW_DAYS:
        # (t - (n + D) days, t - D days] on whole seconds.
        w = by_terminal.rangeBetween(
            -(n + delay_days) * SECONDS_PER_DAY + 1, -delay_days * SECONDS_PER_DAY
        )
        windowed = (
            windowed.withColumn(f"terminal_nb_tx_{n}d", F.count(F.lit(1)).over(w))
            .withColumn(f"labelled_{n}d", F.coalesce(F.sum("is_labelled").over(w), F.lit(0)))
            .withColumn(f"fraud_{n}d", F.coalesce(F.sum("labelled_fraud").over(w), F.lit(0)))
        )

    # A window function cannot say "label known at *this* row's t", because that is a second
    # condition besides the window range. So the labelled and fraud counts above come from
    # range windows over all labelled transactions, and the transactions whose label was
    # still pending at t (label_available_at > t) are subtracted; those are found by an
    # equi-join on (terminal, day bucket of t) against each labelled transaction exploded over
    # the days during which it sits in some window of a target but its label is pending (one
    # bucket per transaction whose label comes within a day of the delay), then filtered
    # exactly (``_pending_label_counts``).
    pending = _pending_label_counts(tx, delay_days)
    joined = windowed.join(pending, "transaction_id", "left")
    risks = {}
    for n in WINDOW_DAYS:
        known_labelled = F.col(f"labelled_{n}d") - F.coalesce(
            F.col(f"pending_labelled_{n}d"), F.lit(0)
        )
        known_fraud = F.col(f"fraud_{n}d") - F.coalesce(F.col(f"pending_fraud_{n}d"), F.lit(0))
        risks[f"terminal_risk_{n}d"] = F.when(
            known_labelled > 0, known_fraud / known_labelled
        ).otherwise(F.lit(0.0))
    return joined.select(
        "terminal_id",
        F.col("tx_datetime").alias("event_timestamp"),
        "transaction_id",
        *[risks[name].alias(name) if name in risks else F.col(name) for name in TERMINAL_FEATURES],
    )


# --- output ---------------------------------------------------------------------------------


STAGING_PREFIX = ".staging-"
REPLACED_PREFIX = ".replaced-"


def _remove_leftovers(spark: SparkSession, features_dir: str) -> None:
    """Delete the staging/replaced folders a killed run left behind (hidden from readers)."""
    fs, jdir = _hadoop_fs(spark, features_dir)
    if not fs.exists(jdir):
        return
    for status in fs.listStatus(jdir):
        if status.getPath().getName().startswith((STAGING_PREFIX, REPLACED_PREFIX)):
            fs.delete(status.getPath(), True)


def write_tables(
    spark: SparkSession,
    tables: dict[str, DataFrame],
    features_dir: str,
    since: dt.date | None = None,
) -> dict:
    """Write every table, day-partitioned, into a hidden staging folder, then move it into
    place: whole tables (``since`` None), or only the day partitions from ``since`` on.

    Readers see the previous tables until the move; nothing is moved unless every table was
    written completely. The move is not one atomic step: a reader can find a table (or a day)
    missing for that instant, and a crash between two moves would leave new days beside old
    ones; the next run deletes any leftovers and, its input unchanged, rebuilds the same days,
    so concurrent runs against one features dir are not supported (the DAG runs one at a
    time). The staging folder is hidden (leading dot) so that no reader globbing the features
    folder picks it up, while the tables inside keep their plain names (Spark refuses to read a
    path whose own name is hidden).
    """
    from pyspark.sql import functions as F

    base = features_dir.rstrip("/")
    run = uuid.uuid4().hex[:12]
    staging, replaced = f"{base}/{STAGING_PREFIX}{run}", f"{base}/{REPLACED_PREFIX}{run}"
    _remove_leftovers(spark, base)
    if since is not None:
        missing = [n for n in tables if not _exists(spark, f"{base}/{n}")]
        if missing:
            raise InputError(f"an incremental build needs the existing tables; missing {missing}")
    try:
        written = {}
        for name, frame in tables.items():
            day = F.date_format("event_timestamp", "yyyy-MM-dd")
            frame.withColumn(DAY_PARTITION, day).write.mode("overwrite").partitionBy(
                DAY_PARTITION
            ).parquet(f"{staging}/{name}")
            written[name] = _count(spark, f"{staging}/{name}")
        for name in tables:
            if since is None:
                _swap(spark, f"{staging}/{name}", f"{base}/{name}", f"{replaced}/{name}")
            else:
                _replace_days(
                    spark, f"{staging}/{name}", f"{base}/{name}", f"{replaced}/{name}", since
                )
        # A full run's rows are what readers get; an incremental run does not count the whole
        # table (that would read every day's footers, the cost it exists to avoid).
        rows = {name: written[name] if since is None else None for name in tables}
    finally:
        for leftover in (staging, replaced):
            fs, jpath = _hadoop_fs(spark, leftover)
            if fs.exists(jpath):
                fs.delete(jpath, True)
    return {
        name: {"path": f"{base}/{name}", "rows": rows[name], "rows_written": written[name]}
        for name in tables
    }


def _exists(spark: SparkSession, path: str) -> bool:
    fs, jpath = _hadoop_fs(spark, path)
    return bool(fs.exists(jpath))


def _day_partitions(spark: SparkSession, table: str) -> dict[dt.date, Any]:
    """The table's day partitions: day -> Hadoop path."""
    fs, jtable = _hadoop_fs(spark, table)
    if not fs.exists(jtable):
        return {}
    found = {}
    for status in fs.listStatus(jtable):
        name = status.getPath().getName()
        if status.isDirectory() and name.startswith(f"{DAY_PARTITION}="):
            found[dt.date.fromisoformat(name.split("=", 1)[1])] = status.getPath()
    return found


def _count(spark: SparkSession, table: str) -> int:
    # A table without rows is a folder without partitions, which Spark cannot infer a schema of.
    if not _day_partitions(spark, table):
        return 0
    return spark.read.parquet(table).count()


def _replace_days(
    spark: SparkSession, staged: str, final: str, replaced: str, since: dt.date
) -> None:
    """Move ``final``'s partitions of ``since`` and later aside, move the staged ones in, drop
    the old ones."""
    fs, jreplaced = _hadoop_fs(spark, replaced)
    fs.mkdirs(jreplaced)
    jvm = spark.sparkContext._jvm
    for day, path in _day_partitions(spark, final).items():
        if day >= since and not fs.rename(
            path, jvm.org.apache.hadoop.fs.Path(jreplaced, path.getName())
        ):
            raise OSError(f"could not move {path} aside to {replaced}")
    _, jfinal = _hadoop_fs(spark, final)
    for path in _day_partitions(spark, staged).values():
        if not fs.rename(path, jvm.org.apache.hadoop.fs.Path(jfinal, path.getName())):
            raise OSError(f"could not move {path} into {final}")


def _swap(spark: SparkSession, staged: str, final: str, replaced: str) -> None:
    """Move ``final`` aside (if present), rename ``staged`` to ``final``, drop the old one."""
    fs, jfinal = _hadoop_fs(spark, final)
    _, jstaged = _hadoop_fs(spark, staged)
    _, jreplaced = _hadoop_fs(spark, replaced)
    had_old = fs.exists(jfinal)
    # Hadoop's rename moves a folder *into* an existing one: the target must not exist, hence
    # the old table is moved aside first rather than overwritten.
    if had_old:
        fs.mkdirs(jreplaced.getParent())
        if not fs.rename(jfinal, jreplaced):
            raise OSError(f"could not move {final} aside to {replaced}")
    if not fs.rename(jstaged, jfinal):
        if had_old:  # put the previous table back rather than leave no table at all
            fs.rename(jreplaced, jfinal)
        raise OSError(f"could not rename {staged} to {final}")


# --- entry point ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marts-dir", required=True, help="Folder holding fct_transactions/.")
    parser.add_argument("--features-dir", required=True, help="Where the feature tables go.")
    parser.add_argument(
        "--label-delay-days",
        type=int,
        default=7,
        help="D: terminal windows end D days before the transaction (default 7).",
    )
    parser.add_argument(
        "--since",
        type=dt.date.fromisoformat,
        default=None,
        help="Rebuild only the days from this one (YYYY-MM-DD) on; default: every day.",
    )
    args = parser.parse_args(argv)
    if args.label_delay_days < 0:
        parser.error("--label-delay-days must be >= 0")
    return args


def run(
    spark: SparkSession,
    marts_dir: str,
    features_dir: str,
    delay_days: int,
    since: dt.date | None = None,
) -> dict:
    """Compute and write every feature table, or with ``since`` the days from ``since`` on
    (module docstring); returns a JSON-able summary (``tables``: each table's path, rows in
    place (None after an incremental run: not counted) and rows written, by name)."""
    from pyspark.sql import functions as F

    started = time.monotonic()
    everything = read_transactions(spark, marts_dir)
    if since is None:
        tx, counts = validate_transactions(everything)
        label_history = tx
    else:
        first = dt.datetime.combine(since, dt.time(), dt.UTC)
        reach = first - dt.timedelta(days=lookback_days(delay_days))
        recent = read_transactions(spark, marts_dir, reach.date())
        tx, counts = validate_transactions(recent.where(F.col("tx_datetime") >= reach))
        # Read once for the three tables built from it (and small: the lookback's days).
        tx = tx.cache()
        label_history = label_history_for(everything.where(_has_keys()), first)
    tables = {
        CUSTOMER_TABLE: build_customer_state(tx),
        TERMINAL_TABLE: build_terminal_features(tx, delay_days),
        TERMINAL_LABEL_TABLE: build_terminal_labels(label_history),
        CUSTOMER_TERMINAL_TABLE: build_customer_terminal_history(tx),
    }
    if since is not None:
        tables = {n: t.where(F.col("event_timestamp") >= first) for n, t in tables.items()}
    written = write_tables(spark, tables, features_dir, since)
    return {
        "tables": written,
        **counts,
        "label_delay_days": delay_days,
        "since": since.isoformat() if since else None,
        "seconds": round(time.monotonic() - started, 3),
    }


def _missing_local_input(marts_dir: str) -> str | None:
    """The input folder if it is a local path that does not exist (checked before the JVM
    starts, to fail in a second rather than after the session start); remote URIs are checked
    through Hadoop in ``read_transactions``."""
    from pathlib import Path
    from urllib.parse import urlparse

    parsed = urlparse(marts_dir)
    if parsed.scheme not in ("", "file"):
        return None
    source = Path(parsed.path if parsed.scheme else marts_dir) / INPUT_TABLE
    return None if source.exists() else str(source)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if missing := _missing_local_input(args.marts_dir):
        raise InputError(f"input dataset not found: {missing}")
    spark = create_session()
    try:
        summary = run(spark, args.marts_dir, args.features_dir, args.label_delay_days, args.since)
    finally:
        spark.stop()
    print(f"{RESULT_MARKER} {json.dumps(summary)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
