"""Ingest of files dropped in the landing folder (Parquet or CSV).

A file is checked whole before anything is written: wrong columns or types, missing or
negative amounts, null keys, or transaction ids that repeat (in the file or in the lake) send
it to the quarantine folder with a ``.reason.json`` beside it. A good file is split by day and
written as one atomic part per day partition, named after the file, then moved to
``landing/processed``; a crash in between leaves it in the landing folder and the next run
rewrites the same parts, so nothing is half ingested or doubled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from pipelines.config import Settings
from pipelines.ingest import schema
from pipelines.lake import part_path, write_parquet_atomic

log = logging.getLogger(__name__)
SUFFIXES = {".parquet", ".csv"}


class InvalidFile(ValueError):
    """A landing file that breaks the schema contract; ``problems`` says how."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class LandingReport:
    ingested: dict[str, int] = field(default_factory=dict)  # file name -> rows
    quarantined: dict[str, list[str]] = field(default_factory=dict)  # file name -> problems


def source_name(path: Path) -> str:
    """The part-file source tag of a landing file: stable for the same file name."""
    digest = hashlib.sha1(path.name.encode()).hexdigest()[:10]
    return f"landing-{digest}"


def _read(path: Path) -> pa.Table:
    if path.suffix == ".csv":
        # Everything as text first, so that a bad value is reported with its column name.
        names = pcsv.read_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16)).column_names
        options = pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=True
        )
        table = pcsv.read_csv(path, convert_options=options)
    else:
        try:
            table = pq.read_table(path)
        except pa.ArrowInvalid as exc:
            raise InvalidFile([f"not a readable Parquet file: {exc}"]) from exc
    if set(table.column_names) != set(schema.TRANSACTIONS.names):
        raise InvalidFile(_column_problems(table.column_names))
    return table


def _column_problems(names: list[str]) -> list[str]:
    expected = schema.TRANSACTIONS.names
    problems = []
    missing = [c for c in expected if c not in names]
    extra = [c for c in names if c not in expected]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected columns: {', '.join(extra)}")
    return problems


def _conform(table: pa.Table) -> pa.Table:
    """Cast to the contract's types; a lossy or impossible cast is a type error."""
    problems = []
    columns = []
    for f in schema.TRANSACTIONS:
        col = table.column(f.name)
        try:
            if f.name == "tx_datetime":
                col = _to_utc_timestamp(col)
            columns.append(col.cast(f.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            problems.append(f"wrong type in column {f.name} (expected {f.type}): {exc}")
    if problems:
        raise InvalidFile(problems)
    return pa.Table.from_arrays(columns, schema=schema.TRANSACTIONS)


def _to_utc_timestamp(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps with an offset keep it; naive ones (and naive text) are taken as UTC."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            return col.cast(pa.timestamp("us", tz="UTC"))
        except pa.ArrowInvalid:
            col = col.cast(pa.timestamp("us"))
    if pa.types.is_timestamp(col.type) and col.type.tz is None:
        col = pc.assume_timezone(col, "UTC")
    return col


def validate(table: pa.Table) -> list[str]:
    """Row-level problems of a conformed table (empty list: the file is good)."""
    problems = []
    if table.num_rows == 0:
        return ["file has no rows"]
    for name in table.column_names:
        nulls = table.column(name).null_count
        if nulls:
            problems.append(f"{nulls} missing values in {name}")
    amount = table.column("tx_amount")
    if negative := pc.sum(pc.less(amount, 0)).as_py():
        problems.append(f"{negative} negative amounts in tx_amount")
    if non_finite := pc.sum(pc.invert(pc.is_finite(amount))).as_py():
        problems.append(f"{non_finite} non-finite amounts (NaN or infinite) in tx_amount")
    ids = table.column("transaction_id")
    duplicates = ids.length() - pc.count_distinct(ids).as_py()
    if duplicates:
        problems.append(f"{duplicates} duplicate transaction_id values in the file")
    return problems


def ids_already_in_lake(table: pa.Table, settings: Settings, own_source: str) -> int:
    """How many of the file's ids the lake already holds under another part file."""
    pattern = settings.raw_transactions_dir / "date=*" / "*.parquet"
    if not any(settings.raw_transactions_dir.glob("date=*/*.parquet")):
        return 0
    with duckdb.connect() as con:
        con.register("landing_ids", table.select(["transaction_id"]))
        return con.execute(
            f"""
            select count(*) from read_parquet('{pattern}', filename = true) lake
            join landing_ids using (transaction_id)
            where not ends_with(lake.filename, 'part-{own_source}.parquet')
            """
        ).fetchone()[0]


def quarantine(path: Path, problems: list[str], settings: Settings) -> Path:
    settings.quarantine_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    target = settings.quarantine_dir / f"{stamp}-{path.name}"
    shutil.move(path, target)
    reason = {"file": path.name, "quarantined_at": stamp, "problems": problems}
    target.with_name(target.name + ".reason.json").write_text(json.dumps(reason, indent=2))
    log.warning("quarantined %s: %s", path.name, "; ".join(problems))
    return target


def ingest_file(path: Path, settings: Settings) -> int:
    """Validate and ingest one landing file; raises ``InvalidFile`` without writing anything."""
    table = _conform(_read(path))
    problems = validate(table)
    source = source_name(path)
    if not problems and (dup := ids_already_in_lake(table, settings, source)):
        problems.append(f"{dup} transaction_id values already in the lake")
    if problems:
        raise InvalidFile(problems)
    days = pc.cast(table.column("tx_datetime"), pa.date32())
    for day in pc.unique(days).to_pylist():
        part = table.filter(pc.equal(days, pa.scalar(day, pa.date32())))
        part = part.sort_by([("tx_datetime", "ascending"), ("transaction_id", "ascending")])
        write_parquet_atomic(part, part_path(settings.raw_transactions_dir, day, source))
    return table.num_rows


def ingest_landing(settings: Settings) -> LandingReport:
    """Process every file waiting in the landing folder."""
    report = LandingReport()
    processed = settings.landing_dir / "processed"
    if not settings.landing_dir.is_dir():
        return report
    for path in sorted(p for p in settings.landing_dir.iterdir() if p.is_file()):
        if path.suffix not in SUFFIXES or path.name.startswith("."):
            continue
        try:
            rows = ingest_file(path, settings)
        except InvalidFile as exc:
            quarantine(path, exc.problems, settings)
            report.quarantined[path.name] = exc.problems
            continue
        processed.mkdir(parents=True, exist_ok=True)
        shutil.move(path, processed / path.name)
        report.ingested[path.name] = rows
        log.info("ingested %d rows from %s", rows, path.name)
    return report
