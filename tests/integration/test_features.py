"""The Spark feature job for real (spark-submit through ``run_feature_job``), with every column
of every row checked against a brute-force oracle written out plainly below: per row, filter the
key's transactions by the window's definition and count/average them (the terminal's windows)
or list them (the customer's state: their recent payments, from which the feature store's
on-demand view computes the customer windows; tests/integration/test_feature_store.py checks
those). No window functions, no cleverness, so that a disagreement points at the job.

The fixture is a 40-day simulated ``fct_transactions`` shaped like the dbt mart (labels arrive
D days after their transaction, as the ingest writes them, plus a random extra lag of up to 36 h
on a third of them, as late chargebacks from a landing zone would; labels not arrived by the end
of the last day are NULL) plus a few hand-made rows whose
expected values are written out (late label, same-second peers, exact window bounds).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings, load_settings
from pipelines.features import FeatureJobResult, FeatureTable, run_feature_job
from pipelines.features.job import (
    CUSTOMER_TABLE,
    CUSTOMER_TERMINAL_TABLE,
    TERMINAL_LABEL_TABLE,
    TERMINAL_TABLE,
)
from pipelines.simulate import SimulationConfig, TransactionSimulator

FIRST_DAY = dt.date(2018, 4, 1)
LAST_DAY = dt.date(2018, 5, 10)  # 40 days: the 30-day and the (30 + D)-day windows fill up
DELAY = 7
DAY = 86_400
WINDOWS = (1, 7, 30)
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")

# Hand-made world: ids far from the simulator's (customers < 200, terminals < 400).
HANDMADE_ID = 9_000_000_000
LATE_TERMINAL = 10_001  # a fraud whose label arrives late
PEER_CUSTOMER, PEER_TERMINAL = 10_004, 10_002  # same-second transactions, window bounds

MART_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.int64()),
        ("tx_datetime", pa.timestamp("us", tz="UTC")),
        ("tx_date", pa.date32()),
        ("customer_id", pa.int64()),
        ("terminal_id", pa.int64()),
        ("tx_amount", pa.float64()),
        ("tx_during_weekend", pa.int32()),
        ("tx_during_night", pa.int32()),
        ("tx_fraud", pa.int32()),
        ("tx_fraud_scenario", pa.int32()),
        ("label_available_at", pa.timestamp("us", tz="UTC")),
    ]
)
TS = pa.timestamp("us", tz="UTC")
CUSTOMER_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("event_timestamp", TS),
        ("transaction_id", pa.int64()),
        ("customer_last_tx_unix", pa.int64()),
        ("customer_recent_tx_id", pa.list_(pa.int64())),
        ("customer_recent_tx_unix", pa.list_(pa.int64())),
        ("customer_recent_tx_amount", pa.list_(pa.float64())),
    ]
)
TERMINAL_SCHEMA = pa.schema(
    [
        ("terminal_id", pa.int64()),
        ("event_timestamp", TS),
        ("transaction_id", pa.int64()),
        ("terminal_nb_tx_1d", pa.int64()),
        ("terminal_risk_1d", pa.float64()),
        ("terminal_nb_tx_7d", pa.int64()),
        ("terminal_risk_7d", pa.float64()),
        ("terminal_nb_tx_30d", pa.int64()),
        ("terminal_risk_30d", pa.float64()),
    ]
)
TERMINAL_LABEL_SCHEMA = pa.schema(
    [
        ("terminal_id", pa.int64()),
        ("event_timestamp", TS),
        ("terminal_last_label_fraud", pa.float64()),
        ("terminal_last3_labels_fraud_share", pa.float64()),
        ("terminal_fraud_streak_start_unix", pa.int64()),
    ]
)


# --- fixture data ---------------------------------------------------------------------------


def _mart_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Calendar flags as the dbt mart derives them (UTC)."""
    frame = frame.copy()
    frame["tx_date"] = frame["tx_datetime"].dt.date
    frame["tx_during_weekend"] = (frame["tx_datetime"].dt.weekday >= 5).astype("int32")
    frame["tx_during_night"] = (frame["tx_datetime"].dt.hour <= 6).astype("int32")
    return frame[MART_SCHEMA.names]


def simulated_mart() -> pd.DataFrame:
    sim = TransactionSimulator(SimulationConfig(seed=1, n_customers=200, n_terminals=400))
    frame = sim.generate_range(FIRST_DAY, LAST_DAY)
    # A label arrives D days after its transaction; a third arrive up to 36 h later still, so
    # that some labels inside a delayed window are pending at t. Labels not arrived by the end
    # of LAST_DAY are NULL, like the mart's left join.
    rng = np.random.default_rng(7)
    late = rng.random(len(frame)) < 1 / 3
    extra = pd.to_timedelta(np.where(late, rng.integers(0, 36 * 3600, len(frame)), 0), unit="s")
    frame["label_available_at"] = frame["tx_datetime"] + pd.Timedelta(days=DELAY) + extra
    end = pd.Timestamp(LAST_DAY + dt.timedelta(days=1), tz="UTC")
    unlabelled = frame["label_available_at"] >= end
    frame["tx_fraud"] = frame["tx_fraud"].astype("Int32").mask(unlabelled)
    frame["tx_fraud_scenario"] = frame["tx_fraud_scenario"].astype("Int32").mask(unlabelled)
    frame.loc[unlabelled, "label_available_at"] = pd.NaT
    return _mart_columns(frame)


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


HANDMADE = [
    # id offset, datetime, customer, terminal, amount, fraud, label available at
    # A fraud on LATE_TERMINAL whose label arrives late, and a genuine one labelled next day.
    (1, "2018-04-02 10:00:00", 10_001, LATE_TERMINAL, 50.0, 1, "2018-04-10 12:00:00"),
    (2, "2018-04-02 09:00:00", 10_002, LATE_TERMINAL, 20.0, 0, "2018-04-03 00:00:00"),
    # Later transactions on that terminal (labels not arrived).
    (3, "2018-04-09 11:00:00", 10_003, LATE_TERMINAL, 30.0, None, None),
    (4, "2018-04-10 11:59:59", 10_003, LATE_TERMINAL, 30.0, None, None),
    (5, "2018-04-10 12:00:00", 10_003, LATE_TERMINAL, 30.0, None, None),
    # One customer: exactly one day apart, one second later, then two in the same second, and
    # one exactly 30 days (the recent payments' span) after the first.
    (8, "2018-04-04 08:00:00", PEER_CUSTOMER, PEER_TERMINAL, 10.0, 0, "2018-04-12 00:00:00"),
    (9, "2018-04-04 08:00:01", PEER_CUSTOMER, PEER_TERMINAL, 20.0, 0, "2018-04-12 00:00:00"),
    (6, "2018-04-05 08:00:00", PEER_CUSTOMER, PEER_TERMINAL, 30.0, 0, "2018-04-13 00:00:00"),
    (7, "2018-04-05 08:00:00", PEER_CUSTOMER, PEER_TERMINAL, 60.0, 0, "2018-04-13 00:00:00"),
    (10, "2018-05-04 08:00:00", PEER_CUSTOMER, PEER_TERMINAL, 40.0, None, None),
]


def handmade_mart() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "transaction_id": [HANDMADE_ID + r[0] for r in HANDMADE],
            "tx_datetime": [_ts(r[1]) for r in HANDMADE],
            "customer_id": [r[2] for r in HANDMADE],
            "terminal_id": [r[3] for r in HANDMADE],
            "tx_amount": [r[4] for r in HANDMADE],
            "tx_fraud": pd.array([r[5] for r in HANDMADE], dtype="Int32"),
            "tx_fraud_scenario": pd.array([r[5] and 2 for r in HANDMADE], dtype="Int32"),
            "label_available_at": [_ts(r[6]) if r[6] else pd.NaT for r in HANDMADE],
        }
    )
    frame["tx_datetime"] = frame["tx_datetime"].astype("datetime64[us, UTC]")
    frame["label_available_at"] = frame["label_available_at"].astype("datetime64[us, UTC]")
    return _mart_columns(frame)


def write_mart(settings: Settings, parts: dict[str, pd.DataFrame]) -> Path:
    """Write ``fct_transactions`` as several files, nested, with a hidden writer leftover."""
    root = settings.marts_dir / "fct_transactions"
    for relative, frame in parts.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(frame, schema=MART_SCHEMA, preserve_index=False)
        pq.write_table(table, root / relative)
    # A half-written temp file of some writer: hidden, so the job must never read it.
    (root / ".fct_transactions.parquet.tmp.parquet").write_bytes(b"not parquet")
    return root


# --- the brute-force oracle -----------------------------------------------------------------


def _micros(values: pd.Series) -> np.ndarray:
    """Microseconds since the epoch; NaT becomes -1 (callers mask it out first)."""
    return ((values - EPOCH) // pd.Timedelta(microseconds=1)).fillna(-1).astype("int64").to_numpy()


def oracle_customer_state(mart: pd.DataFrame) -> pd.DataFrame:
    """Per transaction: its whole second and the customer's payments up to it (to the
    microsecond, same-microsecond peers included) whose second lies in (t - 30 days, t]."""
    records = []
    for _, rows in mart.groupby("customer_id"):
        ids = rows["transaction_id"].to_numpy()
        micros = _micros(rows["tx_datetime"])
        seconds = micros // 1_000_000
        amounts = rows["tx_amount"].to_numpy()
        for i in range(len(rows)):
            t = seconds[i]
            recent = (micros <= micros[i]) & (seconds > t - 30 * DAY)
            records.append(
                {
                    "transaction_id": ids[i],
                    "customer_last_tx_unix": int(t),
                    "customer_recent_payments": sorted(
                        zip(
                            ids[recent].tolist(),
                            seconds[recent].tolist(),
                            amounts[recent].tolist(),
                            strict=True,
                        )
                    ),
                }
            )
    return pd.DataFrame(records)


def recent_payments(state: pd.DataFrame) -> pd.DataFrame:
    """The three aligned arrays of each state row as one sorted list of (id, unix, amount)."""
    arrays = state[[f"customer_recent_tx_{a}" for a in ("id", "unix", "amount")]]
    return state.drop(columns=arrays.columns).assign(
        customer_recent_payments=[
            sorted(zip(*(a.tolist() for a in row), strict=True))
            for row in arrays.itertuples(index=False)
        ]
    )


def oracle_terminal_features(mart: pd.DataFrame, delay: int) -> pd.DataFrame:
    records = []
    for _, rows in mart.groupby("terminal_id"):
        ids = rows["transaction_id"].to_numpy()
        micros = _micros(rows["tx_datetime"])
        seconds = micros // 1_000_000
        has_label = (rows["label_available_at"].notna() & rows["tx_fraud"].notna()).to_numpy()
        label_micros = _micros(rows["label_available_at"])
        fraud = rows["tx_fraud"].fillna(0).astype("int64").to_numpy()
        for i in range(len(rows)):
            t = seconds[i]
            known_at_t = has_label & (label_micros <= micros[i])
            record = {"transaction_id": ids[i]}
            for n in WINDOWS:
                inside = (seconds > t - (n + delay) * DAY) & (seconds <= t - delay * DAY)
                labelled = inside & known_at_t
                frauds = int(fraud[labelled].sum())
                record[f"terminal_nb_tx_{n}d"] = int(inside.sum())
                record[f"terminal_risk_{n}d"] = frauds / labelled.sum() if labelled.any() else 0.0
            records.append(record)
    return pd.DataFrame(records)


def oracle_terminal_labels(mart: pd.DataFrame) -> pd.DataFrame:
    """Brute force: at each instant a label of the terminal arrives, every label known then."""
    records = []
    labelled = mart[mart["label_available_at"].notna() & mart["tx_fraud"].notna()]
    for terminal, rows in labelled.groupby("terminal_id"):
        ids = rows["transaction_id"].to_numpy()
        seconds = _micros(rows["tx_datetime"]) // 1_000_000
        label_micros = _micros(rows["label_available_at"])
        fraud = rows["tx_fraud"].astype("int64").to_numpy()
        for instant in np.unique(label_micros):
            known = label_micros <= instant
            # By arrival, then transaction id.
            order = sorted(zip(label_micros[known], ids[known], range(known.sum()), strict=True))
            newest = [fraud[known][i] for *_, i in order]
            streak: list[int] = []  # positions (in ``known``) of the frauds since the last genuine
            for *_, i in order:
                streak = [*streak, i] if fraud[known][i] == 1 else []
            records.append(
                {
                    "terminal_id": terminal,
                    "event_timestamp": pd.Timestamp(int(instant), unit="us", tz="UTC"),
                    "terminal_last_label_fraud": float(newest[-1]),
                    "terminal_last3_labels_fraud_share": sum(newest[-3:]) / len(newest[-3:]),
                    "terminal_fraud_streak_start_unix": (
                        float(seconds[known][streak].min()) if streak else np.nan
                    ),
                }
            )
    return pd.DataFrame(records)


def assert_matches_oracle(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert actual["transaction_id"].is_unique
    assert set(actual["transaction_id"]) == set(expected["transaction_id"])
    merged = expected.merge(actual, on="transaction_id", suffixes=("_oracle", ""))
    problems = []
    for column in expected.columns.drop("transaction_id"):
        want, got = merged[f"{column}_oracle"].to_numpy(), merged[column].to_numpy()
        if want.dtype == object:  # lists
            bad = np.array([w != g for w, g in zip(want, got, strict=True)], dtype=bool)
        elif np.issubdtype(want.dtype, np.integer):
            bad = want != got
        else:
            bad = ~np.isclose(got.astype(float), want, rtol=1e-9, atol=1e-9, equal_nan=True)
        if bad.any():
            sample = merged.loc[bad, ["transaction_id", f"{column}_oracle", column]].head(5)
            problems.append(f"{column}: {int(bad.sum())} rows differ, e.g.\n{sample}")
    assert not problems, "\n".join(problems)


# --- fixtures -------------------------------------------------------------------------------


def _settings_for(home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # Every path pinned inside ``home``: a developer's .env can never point at the real lake.
    monkeypatch.setenv("FRAUD_HOME", str(home))
    monkeypatch.setenv("FRAUD_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("FRAUD_LABEL_DELAY_DAYS", str(DELAY))
    monkeypatch.setenv("FRAUD_SPARK_MASTER", "local[2]")
    return load_settings()


@pytest.fixture(scope="module")
def job_run(tmp_path_factory) -> Iterator[tuple[Settings, pd.DataFrame, FeatureJobResult]]:
    """One real run of the job over the simulated + hand-made mart, shared by the tests."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = _settings_for(tmp_path_factory.mktemp("features"), monkeypatch)
        simulated, handmade = simulated_mart(), handmade_mart()
        middle = pd.Timestamp(FIRST_DAY + dt.timedelta(days=20), tz="UTC")
        early = simulated["tx_datetime"] < middle
        write_mart(
            settings,
            {
                "part-0.parquet": simulated[early],
                "nested/deeper/part-1.parquet": simulated[~early],
                "handmade.parquet": handmade,
            },
        )
        mart = pd.concat([simulated, handmade], ignore_index=True)
        yield settings, mart, run_feature_job(settings)


def _read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("transaction_id")


# --- tests ----------------------------------------------------------------------------------


def test_every_customer_state_matches_the_oracle(job_run) -> None:
    _, mart, result = job_run
    table = _read(result.tables[CUSTOMER_TABLE].path)
    assert_matches_oracle(recent_payments(table), oracle_customer_state(mart))
    # Time order within each state's arrays (ties aside), so a reader can trust the last.
    unix = table["customer_recent_tx_unix"]
    assert all((np.diff(u) >= 0).all() for u in unix)
    # The state's time is its newest payment's.
    assert (unix.map(max) == table["customer_last_tx_unix"]).all()


def test_every_terminal_feature_matches_the_oracle(job_run) -> None:
    _, mart, result = job_run
    expected = oracle_terminal_features(mart, DELAY)
    assert_matches_oracle(_read(result.tables[TERMINAL_TABLE].path), expected)
    # The fixture must exercise the risk, including partly-labelled windows.
    assert (expected["terminal_risk_7d"] > 0).sum() > 1000
    assert ((expected["terminal_risk_1d"] > 0) & (expected["terminal_risk_1d"] < 1)).any()


def test_every_terminal_label_state_matches_the_oracle(job_run) -> None:
    settings, mart, _ = job_run
    actual = _read(settings.features_dir / "terminal_label_features")
    expected = oracle_terminal_labels(mart)
    keys = ["terminal_id", "event_timestamp"]
    assert not actual.duplicated(keys).any()  # one state per terminal and arrival instant
    assert len(actual) == len(expected)
    merged = expected.merge(actual, on=keys, suffixes=("_oracle", ""), validate="1:1")
    assert len(merged) == len(expected)
    for column in expected.columns.drop(keys):
        want, got = merged[f"{column}_oracle"].to_numpy(float), merged[column].to_numpy(float)
        bad = ~np.isclose(got, want, rtol=0, atol=1e-9, equal_nan=True)
        assert not bad.any(), f"{column}: {int(bad.sum())} rows differ\n{merged[bad].head()}"
    # The fixture must exercise every case: a fraud last, every share of three, streaks of
    # several labels, and labels of one terminal arriving at the same instant.
    assert (expected["terminal_last_label_fraud"] == 1).sum() > 100
    shares = set(expected["terminal_last3_labels_fraud_share"].round(3))
    assert {0.0, 0.333, 0.667, 1.0} <= shares
    streaks = expected.dropna(subset=["terminal_fraud_streak_start_unix"])
    assert (streaks.groupby(["terminal_id", "terminal_fraud_streak_start_unix"]).size() > 3).any()
    labelled = mart.dropna(subset=["label_available_at", "tx_fraud"])
    assert labelled.duplicated(["terminal_id", "label_available_at"]).any()


def test_terminal_features_with_another_label_delay(job_run, tmp_path, monkeypatch) -> None:
    """D = 0: the windows end at t (the transaction itself is inside) and nearly every label in
    them is still pending at t, the hardest case for the pending-label correction."""
    source_settings, mart, _ = job_run
    settings = _settings_for(tmp_path, monkeypatch)
    shutil.copytree(source_settings.marts_dir, settings.marts_dir)
    result = run_feature_job(settings, label_delay_days=0)
    assert result.label_delay_days == 0
    expected = oracle_terminal_features(mart, 0)
    assert_matches_oracle(_read(result.tables[TERMINAL_TABLE].path), expected)
    assert (expected["terminal_nb_tx_1d"] >= 1).all()  # the current transaction counts


def test_tables_schema_paths_and_row_counts(job_run) -> None:
    settings, mart, result = job_run
    # Every table the job wrote is reported, with its path and the row count on disk (a full
    # run writes every row), partitioned by its event's UTC day.
    on_disk = {p.name: p for p in settings.features_dir.iterdir()}
    written = {CUSTOMER_TABLE, TERMINAL_TABLE, TERMINAL_LABEL_TABLE, CUSTOMER_TERMINAL_TABLE}
    assert set(result.tables) == set(on_disk) == written
    for name, table in result.tables.items():
        frame = pq.read_table(on_disk[name]).to_pandas()
        assert table == FeatureTable(path=on_disk[name], rows=len(frame), rows_written=len(frame))
        days = frame["event_timestamp"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
        assert (frame["date"].astype(str) == days).all(), name
    assert result.since is None
    assert result.input_rows == len(mart) and result.dropped_rows == 0
    for name in (CUSTOMER_TABLE, TERMINAL_TABLE, CUSTOMER_TERMINAL_TABLE):
        assert result.tables[name].rows == len(mart)  # one row per transaction
    assert 0 < result.tables[TERMINAL_LABEL_TABLE].rows < len(mart)  # one per label arrival
    assert result.label_delay_days == DELAY
    # The day partition (``date=``) is the folder's, not a column of the files.
    customers = pq.read_table(result.tables[CUSTOMER_TABLE].path).drop_columns(["date"])
    terminals = pq.read_table(result.tables[TERMINAL_TABLE].path).drop_columns(["date"])
    # Names, order and types (nullability flags are Spark's inference, not part of the contract).
    assert [(f.name, f.type) for f in customers.schema] == [
        (f.name, f.type) for f in CUSTOMER_SCHEMA
    ]
    assert [(f.name, f.type) for f in terminals.schema] == [
        (f.name, f.type) for f in TERMINAL_SCHEMA
    ]
    assert customers.num_rows == terminals.num_rows == len(mart)
    # Event timestamps are the transactions' own, to the microsecond.
    times = _by_id(mart)["tx_datetime"]
    for table, key in ((customers, "customer_id"), (terminals, "terminal_id")):
        frame = _by_id(table.to_pandas())
        assert (frame["event_timestamp"] == times.loc[frame.index]).all()
        assert (frame[key] == _by_id(mart)[key].loc[frame.index]).all()
    # Nothing but the tables is visible in the features folder.
    assert sorted(p.name for p in settings.features_dir.iterdir()) == [
        "customer_features",
        "customer_terminal_features",
        "terminal_features",
        "terminal_label_features",
    ]
    labels = pq.read_table(settings.features_dir / "terminal_label_features").drop_columns(["date"])
    assert [(f.name, f.type) for f in labels.schema] == [
        (f.name, f.type) for f in TERMINAL_LABEL_SCHEMA
    ]
    pairs = _by_id(pq.read_table(settings.features_dir / "customer_terminal_features").to_pandas())
    assert len(pairs) == len(mart)
    assert (pairs["terminal_id"] == _by_id(mart)["terminal_id"].loc[pairs.index]).all()
    assert (pairs["pair_last_tx_unix"] == _micros(times.loc[pairs.index]) // 1_000_000).all()


def test_a_label_arriving_after_t_is_not_used(job_run) -> None:
    _, _, result = job_run
    terminal = _by_id(_read(result.tables[TERMINAL_TABLE].path))
    # 2018-04-09 11:00: the 1-day window (04-01 11:00, 04-02 11:00] holds the fraud (label
    # arrives 04-10 12:00, later) and the genuine one (label known): 0 frauds out of 1 label.
    t1 = terminal.loc[HANDMADE_ID + 3]
    assert (t1["terminal_nb_tx_1d"], t1["terminal_risk_1d"]) == (2, 0.0)
    assert (t1["terminal_nb_tx_7d"], t1["terminal_risk_7d"]) == (2, 0.0)
    # One second before the label arrives it is still unknown ...
    t2 = terminal.loc[HANDMADE_ID + 4]
    assert (t2["terminal_nb_tx_7d"], t2["terminal_risk_7d"]) == (2, 0.0)
    assert (t2["terminal_nb_tx_1d"], t2["terminal_risk_1d"]) == (0, 0.0)
    # ... and at the very second it arrives it counts: 1 fraud out of 2 labelled.
    t3 = terminal.loc[HANDMADE_ID + 5]
    assert (t3["terminal_nb_tx_7d"], t3["terminal_risk_7d"]) == (2, 0.5)
    assert t3["terminal_risk_30d"] == 0.5


def test_window_bounds_and_same_second_transactions(job_run) -> None:
    """The recent payments' bounds: (t - 30 days, t] on whole seconds, and up to t to the
    microsecond. The windows' own bounds (1 hour, 1/7/30 days) are the on-demand view's, checked
    in tests/integration/test_feature_store.py."""
    _, _, result = job_run
    customer = _by_id(_read(result.tables[CUSTOMER_TABLE].path))
    first, one_second_later, peer_a, peer_b, month_later = (
        customer.loc[HANDMADE_ID + k] for k in (8, 9, 6, 7, 10)
    )
    assert sorted(first["customer_recent_tx_id"]) == [HANDMADE_ID + 8]
    assert sorted(one_second_later["customer_recent_tx_id"]) == [HANDMADE_ID + k for k in (8, 9)]
    # Same-microsecond peers hold each other in their recent payments: both states are equal.
    expected = sorted(HANDMADE_ID + k for k in (6, 7, 8, 9))
    for peer in (peer_a, peer_b):
        assert sorted(peer["customer_recent_tx_id"]) == expected
        assert peer["customer_last_tx_unix"] == int(_ts("2018-04-05 08:00:00").timestamp())
        assert sorted(peer["customer_recent_tx_amount"]) == [10.0, 20.0, 30.0, 60.0]
    # Exactly 30 days older is outside (t - 30 days, t]; one second less is inside.
    assert sorted(month_later["customer_recent_tx_id"]) == sorted(
        HANDMADE_ID + k for k in (9, 6, 7, 10)
    )
    assert list(month_later["customer_recent_tx_unix"]) == [
        int(_ts(text).timestamp())
        for text in (
            "2018-04-04 08:00:01",
            "2018-04-05 08:00:00",
            "2018-04-05 08:00:00",
            "2018-05-04 08:00:00",
        )
    ]


def test_a_job_failing_mid_write_keeps_the_previous_tables(job_run) -> None:
    settings, mart, _ = job_run
    before = {
        p.relative_to(settings.features_dir): p.stat().st_mtime_ns
        for p in settings.features_dir.rglob("*")
    }
    # New transactions whose tx_fraud is text: only the terminal table reads that column, so
    # the customer table is already written (staged) when Spark fails on the second one.
    bad = mart.head(10).assign(
        transaction_id=lambda f: f["transaction_id"] + 8_000_000_000, tx_fraud="fraud"
    )
    bad_file = settings.marts_dir / "fct_transactions" / "zz-bad.parquet"
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), bad_file)
    try:
        with pytest.raises(RuntimeError) as failure:
            run_feature_job(settings)
    finally:
        bad_file.unlink()
    message = str(failure.value)
    assert "feature job failed" in message
    assert "tx_fraud" in message  # the reason, not just an exit code
    after = {
        p.relative_to(settings.features_dir): p.stat().st_mtime_ns
        for p in settings.features_dir.rglob("*")
    }
    assert after == before  # no staging leftovers, the previous tables untouched


def test_missing_input_raises_with_the_reason(tmp_path, monkeypatch) -> None:
    settings = _settings_for(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match=r"input dataset not found: .*fct_transactions"):
        run_feature_job(settings)
    assert not settings.features_dir.exists()
