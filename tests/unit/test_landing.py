"""Landing-folder mode: good files land whole, bad files are quarantined with the reason."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.ingest.landing import ingest_landing
from pipelines.lake import table_status


def _good(ids=(900_001, 900_002, 900_003)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": list(ids),
            "tx_datetime": pd.to_datetime(
                ["2018-04-03 10:00:00", "2018-04-03 23:59:59", "2018-04-04 00:00:01"]
            ),
            "customer_id": [1, 2, 3],
            "terminal_id": [10, 20, 30],
            "tx_amount": [12.5, 0.0, 230.1],
        }
    )


@pytest.fixture
def landing(settings):
    settings.landing_dir.mkdir(parents=True)
    return settings.landing_dir


def _lake_ids(settings) -> list[int]:
    if table_status(settings.raw_transactions_dir, "tx").rows == 0:
        return []
    return sorted(pq.read_table(settings.raw_transactions_dir).column("transaction_id").to_pylist())


def test_good_csv_and_parquet_land_by_day(settings, landing):
    _good().to_csv(landing / "batch1.csv", index=False)
    _good(ids=(7, 8, 9)).to_parquet(landing / "batch2.parquet")
    report = ingest_landing(settings)
    assert report.ingested == {"batch1.csv": 3, "batch2.parquet": 3}
    assert report.quarantined == {}
    assert _lake_ids(settings) == [7, 8, 9, 900_001, 900_002, 900_003]
    day3 = pq.read_table(settings.raw_transactions_dir / "date=2018-04-03").to_pandas()
    assert len(day3) == 4  # two rows of each file; the third row of each is on the 4th
    assert sorted(p.name for p in (landing / "processed").iterdir()) == [
        "batch1.csv",
        "batch2.parquet",
    ]


def test_the_same_file_dropped_twice_is_not_doubled(settings, landing):
    _good().to_csv(landing / "batch.csv", index=False)
    ingest_landing(settings)
    _good().to_csv(landing / "batch.csv", index=False)
    report = ingest_landing(settings)
    assert report.ingested == {"batch.csv": 3}
    assert _lake_ids(settings) == [900_001, 900_002, 900_003]


BAD_FILES = {
    "missing_column.csv": (
        lambda df: df.drop(columns="terminal_id"),
        "missing columns: terminal_id",
    ),
    "extra_column.csv": (lambda df: df.assign(note="x"), "unexpected columns: note"),
    "negative.csv": (lambda df: df.assign(tx_amount=[1.0, -2.0, 3.0]), "negative amounts"),
    "missing_amount.csv": (lambda df: df.assign(tx_amount=[1.0, None, 3.0]), "missing values"),
    "text_amount.csv": (lambda df: df.assign(tx_amount=["1", "abc", "3"]), "column tx_amount"),
    "bad_date.csv": (
        lambda df: df.assign(tx_datetime=["2018-04-03", "yesterday", "x"]),
        "tx_datetime",
    ),
    "duplicates.parquet": (
        lambda df: df.assign(transaction_id=[5, 5, 6]),
        "duplicate transaction_id",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_quarantined_with_its_reason_and_nothing_lands(settings, landing, name):
    change, expected_reason = BAD_FILES[name]
    bad = change(_good())
    if name.endswith(".csv"):
        bad.to_csv(landing / name, index=False)
    else:
        bad.to_parquet(landing / name)
    report = ingest_landing(settings)
    assert report.ingested == {}
    assert expected_reason in "; ".join(report.quarantined[name])
    assert _lake_ids(settings) == []
    assert not (landing / name).exists()
    [reason_file] = settings.quarantine_dir.glob("*.reason.json")
    reason = json.loads(reason_file.read_text())
    assert reason["file"] == name and any(expected_reason in p for p in reason["problems"])


def test_ids_already_in_the_lake_from_another_file_are_rejected(settings, landing):
    _good().to_csv(landing / "first.csv", index=False)
    ingest_landing(settings)
    _good(ids=(1, 2, 900_003)).to_csv(landing / "second.csv", index=False)
    report = ingest_landing(settings)
    assert "1 transaction_id values already in the lake" in report.quarantined["second.csv"]
    assert _lake_ids(settings) == [900_001, 900_002, 900_003]
