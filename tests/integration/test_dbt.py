"""The dbt project end to end: a small simulated raw lake, a real ``dbt build`` (in process),
and the exported Parquet mart checked against the raw files with pandas.

Each test works on its own copy of the lake and its own DuckDB file (one writer per file).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings, load_settings
from pipelines.ingest import schema
from pipelines.ingest.daily import ingest_day, ingest_days
from pipelines.lake import part_path, write_parquet_atomic
from pipelines.transform.dbt import DbtBuildError, run_dbt_build
from pipelines.transform.mart import mart_days, mart_files, marts_path, read_export

FIRST_DAY = dt.date(2018, 4, 1)
N_DAYS = 12
LABEL_DELAY_DAYS = 7
MART_COLUMNS = [
    "transaction_id",
    "tx_datetime",
    "tx_date",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "tx_during_weekend",
    "tx_during_night",
    "tx_fraud",
    "tx_fraud_scenario",
    "label_available_at",
]


def _settings_for(home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings rooted in ``home``; every path is set explicitly so a developer's .env (or an
    exported FRAUD_WAREHOUSE_PATH) can never point a test at the real lake or warehouse."""
    env = {
        "FRAUD_HOME": str(home),
        "FRAUD_DATA_DIR": str(home / "data"),
        "FRAUD_WAREHOUSE_PATH": str(home / "warehouse" / "fraud.duckdb"),
        "FRAUD_N_CUSTOMERS": "300",
        "FRAUD_N_TERMINALS": "600",
        "FRAUD_HISTORY_START": FIRST_DAY.isoformat(),
        "FRAUD_LABEL_DELAY_DAYS": str(LABEL_DELAY_DAYS),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def _ingest(settings: Settings, days: int) -> None:
    ingest_days(FIRST_DAY, FIRST_DAY + dt.timedelta(days=days - 1), settings)


@pytest.fixture(scope="module")
def base_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 ingested days (labels for the first 5 have arrived), built once and copied per test."""
    home = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        _ingest(_settings_for(home, mp), N_DAYS)
    return home / "data"


@pytest.fixture
def settings(
    base_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    shutil.copytree(base_lake, tmp_path / "data")
    yield _settings_for(tmp_path, monkeypatch)


def _read_raw(table_dir: Path) -> pd.DataFrame:
    files = sorted(table_dir.glob("date=*/*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def _read_mart(settings: Settings) -> pd.DataFrame:
    return read_export(settings)


def _raw_days(settings: Settings) -> list[dt.date]:
    return sorted(
        dt.date.fromisoformat(p.name.removeprefix("date="))
        for p in settings.raw_transactions_dir.glob("date=*")
    )


def _export_layout(settings: Settings) -> dict[str, list[str]]:
    """Each day folder of the export and the files in it."""
    return {
        day.name: sorted(p.name for p in day.iterdir())
        for day in sorted(marts_path(settings).iterdir())
    }


def _label_partition_days(settings: Settings) -> set[dt.date]:
    return {
        dt.date.fromisoformat(p.name.removeprefix("date="))
        for p in settings.raw_labels_dir.glob("date=*")
        if any(p.glob("*.parquet"))
    }


def test_build_exports_one_row_per_raw_transaction(settings: Settings) -> None:
    result = run_dbt_build(settings)

    assert result.mart_path == marts_path(settings) == settings.marts_dir / "fct_transactions"
    assert result.models == 3
    assert result.tests_passed > 20
    assert result.tests_warned == 0
    # One file per raw day, each holding that day's transactions only.
    assert mart_days(settings) == _raw_days(settings)
    assert set(map(tuple, _export_layout(settings).values())) == {("fct_transactions.parquet",)}

    table = pq.read_table(mart_files(settings), partitioning=None)
    assert table.column_names == MART_COLUMNS
    assert table.schema.field("tx_datetime").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("tx_date").type == pa.date32()
    for name in ("tx_during_weekend", "tx_during_night", "tx_fraud", "tx_fraud_scenario"):
        assert pa.types.is_integer(table.schema.field(name).type), name

    raw = _read_raw(settings.raw_transactions_dir)
    mart = table.to_pandas()
    assert len(mart) == len(raw) > 0
    assert mart["transaction_id"].is_unique
    assert set(mart["transaction_id"]) == set(raw["transaction_id"])
    merged = raw.merge(mart, on="transaction_id", suffixes=("_raw", ""))
    assert (merged["tx_datetime_raw"] == merged["tx_datetime"]).all()
    assert (merged["tx_amount_raw"] == merged["tx_amount"]).all()
    assert (merged["customer_id_raw"] == merged["customer_id"]).all()
    assert (merged["terminal_id_raw"] == merged["terminal_id"]).all()

    # The build released the DuckDB file: another process can open it (one writer per file).
    probe = (
        "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
        "print(con.execute('select count(*) from fct_transactions').fetchone()[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(settings.warehouse_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(mart)


def test_labels_joined_only_where_their_partition_exists(settings: Settings) -> None:
    run_dbt_build(settings)
    mart = _read_mart(settings)
    labels = _read_raw(settings.raw_labels_dir)
    label_days = _label_partition_days(settings)

    # 12 days with a 7-day delay: labels of the first 5 days have arrived, not the others.
    assert label_days == {
        FIRST_DAY + dt.timedelta(days=i) for i in range(N_DAYS - LABEL_DELAY_DAYS)
    }
    labelled = mart["tx_fraud"].notna()
    assert (labelled == mart["tx_date"].isin(label_days)).all()
    assert set(mart.loc[labelled, "transaction_id"]) == set(labels["transaction_id"])
    # Unlabelled rows are NULL in all three label columns (unknown, not "genuine").
    unlabelled = mart.loc[~labelled]
    assert len(unlabelled) > 0
    assert unlabelled[["tx_fraud_scenario", "label_available_at"]].isna().all().all()

    joined = labels.merge(mart, on="transaction_id", suffixes=("_raw", ""))
    assert len(joined) == len(labels)
    assert (joined["tx_fraud_raw"].astype(int) == joined["tx_fraud"].astype(int)).all()
    assert (
        joined["tx_fraud_scenario_raw"].astype(int) == joined["tx_fraud_scenario"].astype(int)
    ).all()
    assert (joined["label_available_at_raw"] == joined["label_available_at"]).all()
    assert joined["tx_fraud"].astype(int).sum() > 0  # some fraud, or the join proves little


def test_calendar_flags_match_pandas(settings: Settings) -> None:
    run_dbt_build(settings)
    mart = _read_mart(settings)
    when = mart["tx_datetime"].dt.tz_convert("UTC")

    assert (mart["tx_date"] == when.dt.date).all()
    assert (mart["tx_during_weekend"] == (when.dt.dayofweek >= 5).astype(int)).all()
    assert (mart["tx_during_night"] == (when.dt.hour <= 6).astype(int)).all()
    # 12 days from a Sunday include two weekends, and nights have transactions.
    assert mart["tx_during_weekend"].sum() > 0
    assert mart["tx_during_night"].sum() > 0


def test_rerun_replaces_the_export_without_duplicates(settings: Settings) -> None:
    run_dbt_build(settings)
    first = _read_mart(settings)
    again = run_dbt_build(settings)
    second = _read_mart(settings)

    assert again.models == 3
    assert len(second) == len(first)
    pd.testing.assert_frame_equal(first, second)
    assert set(map(tuple, _export_layout(settings).values())) == {("fct_transactions.parquet",)}


def test_new_day_appears_in_the_export_on_rebuild(settings: Settings) -> None:
    run_dbt_build(settings)
    before = len(_read_mart(settings))
    new_day = ingest_day(FIRST_DAY + dt.timedelta(days=N_DAYS), settings)
    run_dbt_build(settings)

    assert len(_read_mart(settings)) == before + new_day.transactions


def test_negative_amount_fails_the_build_and_keeps_the_previous_export(
    settings: Settings,
) -> None:
    run_dbt_build(settings)
    good = _read_mart(settings)
    day = FIRST_DAY + dt.timedelta(days=3)
    bad = pa.Table.from_pylist(
        [
            {
                "transaction_id": 999_000_001,
                "tx_datetime": dt.datetime.combine(day, dt.time(12), dt.UTC),
                "customer_id": 1,
                "terminal_id": 1,
                "tx_amount": -5.0,
            }
        ],
        schema=schema.TRANSACTIONS,
    )
    write_parquet_atomic(bad, part_path(settings.raw_transactions_dir, day, "bad"))

    with pytest.raises(DbtBuildError) as excinfo:
        run_dbt_build(settings)

    message = str(excinfo.value)
    assert isinstance(excinfo.value, RuntimeError)
    assert "accepted_range_stg_transactions_tx_amount__0" in message
    assert any("accepted_range_stg_transactions_tx_amount" in f for f in excinfo.value.failures)
    # The failing staging test stops the mart: the last good export is still there, untouched.
    assert "fct_transactions" in message  # listed among the skipped nodes
    pd.testing.assert_frame_equal(_read_mart(settings), good)


def _resend(settings: Settings, change=None) -> pd.DataFrame:
    """A second file re-delivering 10 transactions of a day, optionally altered.

    Written with a nullable copy of the lake schema: the point is to see dbt catch what a
    careless writer (not our ingest, which enforces the contract) could put in the lake.
    """
    day = FIRST_DAY + dt.timedelta(days=2)
    original = pq.read_table(part_path(settings.raw_transactions_dir, day, "simulated"))
    resent = original.slice(0, 10).to_pandas()
    if change:
        resent = change(resent)
    loose = pa.schema([f.with_nullable(True) for f in schema.TRANSACTIONS])
    write_parquet_atomic(
        pa.Table.from_pandas(resent, schema=loose, preserve_index=False),
        part_path(settings.raw_transactions_dir, day, "zz-resent"),
    )
    return resent


def test_exact_redelivery_is_deduplicated_with_a_warning(settings: Settings) -> None:
    _resend(settings)

    result = run_dbt_build(settings)

    assert "source_unique_raw_transactions_transaction_id" in result.warnings
    mart = _read_mart(settings)
    raw = _read_raw(settings.raw_transactions_dir)
    assert len(mart) == raw["transaction_id"].nunique() == len(raw) - 10
    assert mart["transaction_id"].is_unique


@pytest.mark.parametrize(
    ("change", "failing_test"),
    [
        (
            lambda df: df.assign(tx_amount=df["tx_amount"] + 1.0),
            "assert_no_conflicting_transaction_ids",
        ),
        (
            lambda df: df.assign(transaction_id=df["transaction_id"] + 10**9, customer_id=None),
            "not_null_stg_transactions_customer_id",
        ),
    ],
    ids=["conflicting-duplicates", "null-customer"],
)
def test_bad_batch_fails_the_build_and_keeps_the_previous_export(
    settings: Settings, change, failing_test: str
) -> None:
    run_dbt_build(settings)
    good = _read_mart(settings)
    _resend(settings, change)

    with pytest.raises(DbtBuildError) as excinfo:
        run_dbt_build(settings)

    assert failing_test in str(excinfo.value)
    pd.testing.assert_frame_equal(_read_mart(settings), good)


def test_build_before_any_label_has_arrived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_for(tmp_path, monkeypatch)
    _ingest(settings, 2)  # labels only arrive after LABEL_DELAY_DAYS
    assert not settings.raw_labels_dir.exists()

    run_dbt_build(settings)

    mart = _read_mart(settings)
    assert len(mart) == len(_read_raw(settings.raw_transactions_dir)) > 0
    assert mart[["tx_fraud", "tx_fraud_scenario", "label_available_at"]].isna().all().all()


def test_build_without_raw_transactions_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_for(tmp_path, monkeypatch)
    with pytest.raises(DbtBuildError, match="no raw transactions"):
        run_dbt_build(settings)


def test_unreadable_raw_file_fails_the_build_naming_the_file(settings: Settings) -> None:
    partition = part_path(settings.raw_transactions_dir, FIRST_DAY, "broken").parent
    (partition / "part-broken.parquet").write_bytes(b"not parquet at all")

    with pytest.raises(DbtBuildError) as excinfo:
        run_dbt_build(settings)

    message = str(excinfo.value)
    # The source tests read the file first and fail naming it; staging is then skipped.
    assert "source_not_null_raw_transactions_transaction_id [error]" in message
    assert "part-broken.parquet" in message
    assert "model stg_transactions" in message
    assert mart_files(settings) == []  # nothing half-built was exported


def _day_file_versions(settings: Settings) -> dict[dt.date, int]:
    return {
        day: Path(path).stat().st_mtime_ns
        for day, path in zip(mart_days(settings), mart_files(settings), strict=True)
    }


def _alter_amounts(settings: Settings, day: dt.date) -> None:
    """Re-deliver ``day``'s raw file with every amount one unit higher."""
    path = part_path(settings.raw_transactions_dir, day, "simulated")
    table = pq.read_table(path)
    amounts = table.column("tx_amount").to_pandas() + 1.0
    altered = table.set_column(
        table.schema.get_field_index("tx_amount"), "tx_amount", pa.array(amounts, pa.float64())
    )
    write_parquet_atomic(altered.cast(schema.TRANSACTIONS), path)


def test_incremental_build_equals_a_full_refresh(settings: Settings) -> None:
    run_dbt_build(settings)
    built = _day_file_versions(settings)
    redelivered = FIRST_DAY + dt.timedelta(days=4)
    _alter_amounts(settings, redelivered)
    new_day = FIRST_DAY + dt.timedelta(days=N_DAYS)
    ingest_day(new_day, settings)  # and the labels of new_day - LABEL_DELAY_DAYS arrive

    run_dbt_build(settings, since=redelivered)
    incremental = _read_mart(settings)
    rebuilt = _day_file_versions(settings)

    # Only the days from `since` on were rewritten; the new day was added.
    assert {d for d in built if rebuilt[d] != built[d]} == {d for d in built if d >= redelivered}
    assert set(rebuilt) == set(built) | {new_day}
    raw = _read_raw(settings.raw_transactions_dir).set_index("transaction_id")
    day_rows = incremental[incremental.tx_date == redelivered].set_index("transaction_id")
    assert (day_rows.tx_amount == raw.loc[day_rows.index, "tx_amount"]).all()
    labels_day = new_day - dt.timedelta(days=LABEL_DELAY_DAYS)
    assert incremental[incremental.tx_date == labels_day].tx_fraud.notna().all()

    run_dbt_build(settings, full_refresh=True)
    pd.testing.assert_frame_equal(incremental, _read_mart(settings), check_exact=True)


def test_incremental_build_reads_only_the_days_from_since(settings: Settings) -> None:
    run_dbt_build(settings)
    before = _read_mart(settings)
    old_day, since = FIRST_DAY + dt.timedelta(days=2), FIRST_DAY + dt.timedelta(days=6)
    _alter_amounts(settings, old_day)

    run_dbt_build(settings, since=since)

    # A change before `since` is not read: finding the days that changed is the caller's job
    # (pipelines/featurestore/changes.py), and a full refresh picks it up.
    pd.testing.assert_frame_equal(_read_mart(settings), before)
    run_dbt_build(settings, full_refresh=True)
    after = _read_mart(settings)
    changed = after.tx_amount != before.tx_amount
    assert (after.tx_date[changed] == old_day).all() and changed.sum() > 0
