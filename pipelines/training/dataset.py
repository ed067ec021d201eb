"""Training, validation and test sets: labelled transactions + Feast point-in-time features.

Transactions and labels come from the ``fct_transactions`` mart (``tx_fraud`` and
``label_available_at`` are NULL until the label arrives). Features come only from Feast's
historical retrieval through the model's feature service (as of 1 µs before each transaction:
what the online store holds when that transaction is scored), so the model is trained on
exactly what serving will read.

Label rules (see ``protocol`` for the windows):
* a training period keeps the transactions whose label is known at its training cutoff
  (``label_available_at <= cutoff``); the others are dropped and counted;
* an assessment period (test or validation) is scored after the fact: every transaction must
  have its label, else the period is not assessable yet and building fails;
* the handbook drops from test day i the cards known to be compromised at the start of that
  day: cards with a fraud made since the start of the training period whose label had arrived
  by then (with the handbook's delays: frauds of the training week and of the first i days of
  the delay week).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from pipelines.config import Settings
from pipelines.featurestore.repo import FEATURE_SERVICE
from pipelines.featurestore.store import get_store, historical_features, training_entities
from pipelines.protocol import SplitWindows
from pipelines.transform.mart import mart_files

log = logging.getLogger(__name__)

LABEL = "tx_fraud"
# Kept beside the features: what metrics (day, card) and lineage (ids) need, never model input.
KEYS = ["transaction_id", "customer_id", "terminal_id", "tx_datetime", "tx_day"]
# What only the request carries; it is a model input too (the scored amount).
REQUEST_INPUTS = ["tx_amount"]
MART_COLUMNS = [
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "tx_fraud",
    "tx_fraud_scenario",
    "label_available_at",
]
PERIODS = ("validation_train", "validation", "train", "test")


class LabelsNotAvailable(RuntimeError):
    """An assessment period whose labels have not all arrived yet."""


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def read_mart(settings: Settings, first_day: dt.date, last_day: dt.date) -> pd.DataFrame:
    """Mart rows of days ``first_day`` .. ``last_day`` (inclusive), sorted by time."""

    exported = mart_files(settings)
    if not exported:
        raise FileNotFoundError("no fct_transactions export yet: run the feature build")
    # No exported day in the range: any one file gives the same empty, typed answer.
    files = mart_files(settings, first_day, last_day) or exported[-1:]
    query = f"""
        select {", ".join(MART_COLUMNS)} from read_parquet(?, hive_partitioning = false)
        where tx_datetime >= ? and tx_datetime < ?
        order by tx_datetime, transaction_id
    """
    with duckdb.connect() as con:
        frame = con.execute(
            query, [files, _midnight(first_day), _midnight(last_day + dt.timedelta(days=1))]
        ).df()
    for column in ("tx_datetime", "label_available_at"):
        frame[column] = frame[column].dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    frame["tx_day"] = frame["tx_datetime"].dt.date
    return frame


def _in_days(mart: pd.DataFrame, first: dt.date, last: dt.date) -> pd.Series:
    return (mart.tx_day >= first) & (mart.tx_day <= last)


def training_period(mart: pd.DataFrame, windows: SplitWindows) -> tuple[pd.DataFrame, int]:
    """Training transactions labelled by the cutoff, and how many were dropped unlabelled."""

    rows = mart[_in_days(mart, windows.train_start, windows.train_end)]
    known = rows.label_available_at.notna() & (
        rows.label_available_at <= pd.Timestamp(windows.training_cutoff)
    )
    return rows[known].copy(), int((~known).sum())


def known_compromised_cards(mart: pd.DataFrame, windows: SplitWindows, at: dt.datetime) -> set[int]:
    """Cards with a fraud since the training start whose label had arrived by ``at``."""

    frauds = mart[
        (mart.tx_day >= windows.train_start)
        & (mart.tx_fraud == 1)
        & (mart.label_available_at <= pd.Timestamp(at))
    ]
    return set(frauds.customer_id.astype("int64"))


def assessment_period(mart: pd.DataFrame, windows: SplitWindows) -> tuple[pd.DataFrame, int]:
    """Test transactions without the cards known compromised, and how many rows were dropped.

    Raises ``LabelsNotAvailable`` if a transaction of the period has no label yet.
    """
    rows = mart[_in_days(mart, windows.test_start, windows.test_end)]
    missing = int(rows[LABEL].isna().sum())
    if missing:
        raise LabelsNotAvailable(
            f"{missing} of {len(rows)} transactions of {windows.test_start}..{windows.test_end} "
            "have no label yet: that period cannot be assessed before its labels arrive"
        )
    kept = []
    for start in windows.test_day_starts():
        day_rows = rows[rows.tx_day == start.date()]
        known = known_compromised_cards(mart, windows, start)
        kept.append(day_rows[~day_rows.customer_id.isin(known)])

    frame = pd.concat(kept) if kept else rows.iloc[:0]
    return frame.copy(), len(rows) - len(frame)


def model_inputs(settings: Settings, service: str = FEATURE_SERVICE) -> list[str]:
    """The model's input columns: the request's amount, then the service's features in order."""

    svc = get_store(settings).get_feature_service(service)
    names = [f.name for projection in svc.feature_view_projections for f in projection.features]
    return REQUEST_INPUTS + [n for n in names if n not in REQUEST_INPUTS]


def with_features(
    settings: Settings,
    transactions: pd.DataFrame,
    inputs: list[str],
    service: str = FEATURE_SERVICE,
) -> pd.DataFrame:
    """``transactions`` with the feature service's point-in-time features joined on."""

    unique = transactions.drop_duplicates("transaction_id")
    features = historical_features(settings, training_entities(unique), service)
    wanted = ["transaction_id", *[c for c in inputs if c not in transactions.columns]]
    return transactions.merge(features[wanted], on="transaction_id", how="left", validate="m:1")


@dataclass
class ProtocolData:
    """The four periods of one run: model selection on ``validation_train`` -> ``validation``,
    the final model on ``train`` -> ``test``."""

    windows: SplitWindows
    frames: dict[str, pd.DataFrame]
    inputs: list[str]
    service: str
    dropped: dict[str, int] = field(default_factory=dict)

    def fingerprint(self) -> str:
        return dataset_fingerprint(self.frames, self.inputs)

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"feature_service": self.service, "inputs": self.inputs}
        for name, frame in self.frames.items():
            out[f"{name}_rows"] = len(frame)
            out[f"{name}_frauds"] = int(frame[LABEL].sum())
            out[f"{name}_dropped"] = self.dropped.get(name, 0)
        return out


def build_protocol_data(
    settings: Settings, windows: SplitWindows, service: str = FEATURE_SERVICE
) -> ProtocolData:
    """Labelled periods of ``windows`` and of its model-selection split, features from Feast
    (one retrieval for all of them)."""

    validation = windows.validation()
    first = min(validation.train_start, validation.test_start)
    mart = read_mart(settings, first, windows.test_end)
    periods: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    periods["validation_train"], dropped["validation_train"] = training_period(mart, validation)
    periods["validation"], dropped["validation"] = assessment_period(mart, validation)
    periods["train"], dropped["train"] = training_period(mart, windows)
    periods["test"], dropped["test"] = assessment_period(mart, windows)
    for name, frame in periods.items():
        if frame.empty or frame[LABEL].sum() == 0:
            raise ValueError(f"period {name} has {len(frame)} rows and no fraud: cannot train")

    inputs = model_inputs(settings, service)
    union = pd.concat(periods.values()).drop_duplicates("transaction_id")
    featured = with_features(settings, union, inputs, service).set_index("transaction_id")
    columns = [c for c in KEYS if c != "transaction_id"] + [LABEL, "tx_fraud_scenario"] + inputs
    frames = {
        name: featured.loc[frame.transaction_id, columns].reset_index()
        for name, frame in periods.items()
    }
    for name, frame in frames.items():
        frame[LABEL] = frame[LABEL].astype("int8")
        log.info(
            "%s: %d transactions, %d frauds (%d dropped)",
            name,
            len(frame),
            int(frame[LABEL].sum()),
            dropped[name],
        )
    return ProtocolData(windows, frames, inputs, service, dropped)


def prequential_data(
    settings: Settings, splits: list[SplitWindows], service: str = FEATURE_SERVICE
) -> list[ProtocolData]:
    """One ``ProtocolData`` per prequential fold (see ``protocol.prequential_splits``)."""
    return [build_protocol_data(settings, split, service) for split in splits]


def dataset_fingerprint(frames: dict[str, pd.DataFrame], inputs: list[str]) -> str:
    """sha256 over every period's ids, labels and input values (row order included)."""

    digest = hashlib.sha256()
    for name in sorted(frames):
        frame = frames[name]
        digest.update(name.encode())
        hashed = pd.util.hash_pandas_object(frame[["transaction_id", LABEL, *inputs]], index=False)
        digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()


def save(data: ProtocolData, folder: Path) -> Path:
    """Write the periods as Parquet and a manifest; returns the folder (what XCom carries)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in data.frames.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    manifest = {
        "windows": {k: v for k, v in data.windows.as_tags().items()},
        "inputs": data.inputs,
        "service": data.service,
        "dropped": data.dropped,
        "fingerprint": data.fingerprint(),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def load(folder: Path) -> ProtocolData:
    """Read what ``save`` wrote; fails if the files no longer match the manifest."""

    manifest = json.loads((folder / "manifest.json").read_text())
    w = manifest["windows"]
    windows = SplitWindows(
        train_start=dt.date.fromisoformat(w["train_start"]),
        train_end=dt.date.fromisoformat(w["train_end"]),
        test_start=dt.date.fromisoformat(w["test_start"]),
        test_end=dt.date.fromisoformat(w["test_end"]),
        delay_days=int(w["delay_days"]),
    )
    frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in PERIODS}
    data = ProtocolData(
        windows, frames, manifest["inputs"], manifest["service"], manifest["dropped"]
    )
    if data.fingerprint() != manifest["fingerprint"]:
        raise ValueError(f"datasets in {folder} do not match their manifest fingerprint")
    return data
