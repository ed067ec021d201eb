"""The prediction log's journal: what a worker answered survives its ``kill -9``, once."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os

import pyarrow.parquet as pq

from pipelines.lake import day_files
from serving.prediction_log import (
    JOURNAL_DIR,
    PredictionLog,
    read_journal,
    recover_journals,
    write_parts,
)

DAY = dt.datetime(2018, 4, 20, 12, tzinfo=dt.UTC)


def _rows(first: int, n: int) -> list[dict]:
    return [
        {"transaction_id": i, "tx_datetime": DAY + dt.timedelta(hours=i % 20), "score": i / 100}
        for i in range(first, first + n)
    ]


def _logged_ids(directory) -> list[int]:
    files = day_files(directory, DAY.date())
    return sorted(pq.read_table(files).column("transaction_id").to_pylist()) if files else []


def _journals(directory) -> list:
    return sorted((directory / JOURNAL_DIR).glob("*.journal"))


def _answer_then_die(directory) -> None:
    log = PredictionLog(directory, flush_seconds=3600)
    log.append(_rows(0, 5))
    log.append(_rows(5, 5))
    os._exit(0)  # no close(), no flush: what SIGKILL leaves


def test_appended_rows_are_in_the_journal_before_any_flush(tmp_path):
    log = PredictionLog(tmp_path, flush_seconds=3600)
    log.append(_rows(0, 3))
    log.append(_rows(3, 2))
    (journal,) = _journals(tmp_path)
    assert [r["transaction_id"] for r in read_journal(journal)] == [0, 1, 2, 3, 4]
    assert read_journal(journal)[0]["tx_datetime"] == DAY  # types as appended
    assert log.flush() == 5
    assert _logged_ids(tmp_path) == [0, 1, 2, 3, 4]
    assert [read_journal(j) for j in _journals(tmp_path)] == [[]]  # the fresh journal only
    log.close()
    assert _journals(tmp_path) == []


def test_a_killed_workers_rows_are_recovered_by_the_next_start(tmp_path):
    child = multiprocessing.get_context("fork").Process(target=_answer_then_die, args=(tmp_path,))
    child.start()
    child.join()
    assert len(_journals(tmp_path)) == 1 and _logged_ids(tmp_path) == []
    log = PredictionLog(tmp_path, flush_seconds=3600)  # the respawned worker
    assert _logged_ids(tmp_path) == list(range(10))
    log.close()
    assert _journals(tmp_path) == []


def test_recovery_is_idempotent_and_leaves_live_journals_alone(tmp_path):
    child = multiprocessing.get_context("fork").Process(target=_answer_then_die, args=(tmp_path,))
    child.start()
    child.join()
    (orphan,) = _journals(tmp_path)
    # The dead worker had written the journal's parts and died before deleting it.
    write_parts(tmp_path, orphan.stem, read_journal(orphan))
    other = PredictionLog(tmp_path, flush_seconds=3600)  # recovers the orphan at start
    other.append(_rows(100, 2))
    assert _logged_ids(tmp_path) == list(range(10))  # once, not twice
    assert recover_journals(tmp_path) == 0  # other's journal is held: left alone
    assert len(_journals(tmp_path)) == 1
    other.close()
    assert _logged_ids(tmp_path) == [*range(10), 100, 101]


def test_a_frame_cut_short_by_a_crash_is_dropped(tmp_path):
    log = PredictionLog(tmp_path, flush_seconds=3600)
    log.append(_rows(0, 2))
    log.append(_rows(2, 2))
    (journal,) = _journals(tmp_path)
    cut = tmp_path / "cut.journal"
    cut.write_bytes(journal.read_bytes()[:-3])  # the second write never completed
    assert [r["transaction_id"] for r in read_journal(cut)] == [0, 1]
    log.close()
