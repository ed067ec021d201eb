"""The offline store: Feast's DuckDB store, whose point-in-time join carries the feature values
of the one row it picks per entity row, not of every candidate.

Feast's join (``feast.infra.offline_stores.ibis.point_in_time_join``) pairs each entity row with
*every* feature row of its entity inside the view's TTL, then keeps the newest. The candidates
carry all feature columns: with a customer's recent payments in its state (three arrays of
dozens of values, ``pipelines/features/job.py``) and a 30-day TTL, a training set of 250,000
payments became some 15 million candidates with arrays, and the retrieval was killed for
memory at the default world size (19 GB).

This store runs the same join on the row keys alone (join keys, event timestamp), keeps the
newest candidate per entity row by Feast's own rule (``deduplicate``), and only then fetches
the features of the rows picked: the feature table is filtered to them by a semi-join (which
streams it) and joined back. Same rows, same predicates, same tie rule as Feast; memory grows
with the entity rows, not with the candidates.

Materialization reads only the day partitions of the interval it loads: the Spark tables are
partitioned by the UTC day of ``event_timestamp``, and Feast's reader opens a whole folder,
so every daily load would otherwise scan the history (``pull_all_from_table_or_query``, what
Feast's local compute engine materializes from, and ``pull_latest_from_table_or_query``).

Configured by ``pipelines.featurestore.repo.render_config`` (``OFFLINE_STORE``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import ibis
from feast import FileSource
from feast.data_source import DataSource
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores import ibis as feast_ibis
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.repo_config import RepoConfig
from ibis.expr.types import Table

from pipelines.lake import files_of_days, partition_days


class LeanJoinDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: Literal["pipelines.featurestore.offline.LeanJoinDuckDBOfflineStore"] = (
        "pipelines.featurestore.offline.LeanJoinDuckDBOfflineStore"
    )


def point_in_time_join(
    entity_table: Table,
    feature_tables: list[tuple[Table, str, str | None, dict[str, str], list[str], timedelta]],
    event_timestamp_col: str = "event_timestamp",
    event_expire_timestamp_fn: Any = None,
    filter_by_created_timestamp: bool = False,
) -> Table:
    """``feast_ibis.point_in_time_join`` with the feature values joined after the pick."""
    if event_expire_timestamp_fn is not None:  # not used by the DuckDB store
        raise NotImplementedError("a custom expiry expression is not supported")
    all_entities = [event_timestamp_col]
    for _, _, _, join_key_map, _, _ in feature_tables:
        all_entities.extend(join_key_map.values())
    entity_table = entity_table.mutate(
        entity_row_id=feast_ibis._entity_row_id(entity_table, set(all_entities))
    )
    acc_table = entity_table
    entity_columns = list(entity_table.columns)
    all_feature_cols: list[str] = []

    for feature_table, timestamp_field, created_field, join_key_map, refs, ttl in feature_tables:
        row_key = list(dict.fromkeys([*join_key_map, timestamp_field, created_field or ""]))
        row_key = [c for c in row_key if c]
        candidates = feature_table.select(*row_key)
        predicates = [candidates[k] == entity_table[v] for k, v in join_key_map.items()]
        predicates.append(candidates[timestamp_field] <= entity_table[event_timestamp_col])
        if filter_by_created_timestamp and created_field:
            predicates.append(candidates[created_field] <= entity_table[event_timestamp_col])
        if ttl:
            predicates.append(
                candidates[timestamp_field] + ibis.literal(ttl) >= entity_table[event_timestamp_col]
            )
        joined = candidates.inner_join(entity_table, predicates, lname="", rname="{name}_y")
        joined = joined.drop(*[c for c in joined.columns if c.endswith("_y")])
        picked = feast_ibis.deduplicate(
            table=joined,
            group_by_cols=["entity_row_id"],
            event_timestamp_col=timestamp_field,
            created_timestamp_col=created_field,
        ).select("entity_row_id", *row_key)
        # Rows equal in key and time are one state (the job writes the same values for
        # payments at the same instant): any of them serves, as in Feast's own tie rule.
        values = (
            feature_table.select(*row_key, *refs)
            .semi_join(picked, row_key)
            .distinct(on=row_key, keep="first")
        )
        features = picked.inner_join(values, row_key).select("entity_row_id", *refs)
        all_feature_cols.extend(refs)
        acc_table = acc_table.left_join(
            features,
            predicates=[features.entity_row_id == acc_table.entity_row_id],
            lname="",
            rname="{name}_yyyy",
        )

    final_cols = [c for c in entity_columns if c != "entity_row_id"] + all_feature_cols
    return acc_table.select(final_cols)


@contextlib.contextmanager
def _lean_join() -> Iterator[None]:
    # get_historical_features_ibis builds its query through the module's function at call time.
    feast_join = feast_ibis.point_in_time_join
    feast_ibis.point_in_time_join = point_in_time_join
    try:
        yield
    finally:
        feast_ibis.point_in_time_join = feast_join


def interval_reader(
    start: datetime | None, end: datetime | None
) -> Callable[[DataSource, str], Table]:
    """Feast's DuckDB source reader, limited to the day partitions from ``start``'s UTC day to
    ``end``'s (an open end: the oldest or newest day) when the source is a day-partitioned
    folder; anything else, Feast's reader."""

    def read(data_source: DataSource, repo_path: str) -> Table:
        if isinstance(data_source, FileSource):
            folder = Path(data_source.path)
            days = partition_days(folder)
            if days:
                first = start.astimezone(UTC).date() if start else days[0]
                last = end.astimezone(UTC).date() if end else days[-1]
                # Nothing in the interval: the same empty answer, from the newest day alone.
                files = files_of_days(folder, first, last) or files_of_days(
                    folder, days[-1], days[-1]
                )
                if files:
                    return ibis.read_parquet([str(f) for f in files])
        return feast_duckdb._read_data_source(data_source, repo_path)

    return read


def _pull_interval(
    feast_pull: Callable[..., RetrievalJob],
    config: RepoConfig,
    start: datetime | None,
    end: datetime | None,
    **query: Any,
) -> RetrievalJob:
    """Feast's ibis pull (``pull_all`` or ``pull_latest``) as ``DuckDBOfflineStore`` calls it,
    with the source read through ``interval_reader``."""
    return feast_pull(
        config=config,
        start_date=start,
        end_date=end,
        data_source_reader=interval_reader(start, end),
        data_source_writer=feast_duckdb._write_data_source,
        staging_location=config.offline_store.staging_location,
        staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
        **query,
    )


class LeanJoinDuckDBOfflineStore(DuckDBOfflineStore):
    """``DuckDBOfflineStore`` with the lean point-in-time join, and materialization reading the
    day partitions of its interval only (module docstring)."""

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        # What Feast's local compute engine materializes from (it deduplicates afterwards).
        return _pull_interval(
            feast_ibis.pull_all_from_table_or_query_ibis, config, start_date, end_date,
            data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
        )  # fmt: skip

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        return _pull_interval(
            feast_ibis.pull_latest_from_table_or_query_ibis, config, start_date, end_date,
            data_source=data_source, join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns, timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
        )  # fmt: skip

    @staticmethod
    def get_historical_features(*args: Any, **kwargs: Any) -> Any:
        with _lean_join():
            return DuckDBOfflineStore.get_historical_features(*args, **kwargs)
