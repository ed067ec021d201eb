"""Streaming features: every scored payment updates its card's online state, through Feast.

The customer's state is their payments of the last 30 days (``customer_state``: ids, whole
seconds, amounts), the pair's is when the customer last paid at the terminal
(``customer_terminal_history``). After a payment is scored, its card's state is read, the
payment folded in (``fold``, the online counterpart of the Spark job's arrays) and the new
states pushed to the views' push sources, all before the response returns: the card's next
payment reads them.

No update may be lost when payments of one card arrive together. The read-score-push of a card
holds the card's lock (``CardLocks``): a file lock per card stripe on this host for the SQLite
store, a Redis lock shared by every replica for the Redis store. Payments of one card within a
single request are scored one after the other, in time order (``rounds``).

A state is pushed stamped with its payment's time in whole seconds, or one second after the
stored state when that is not older (payments within one second, or a payment scored late):
both online stores skip a write that is not newer than what they hold (Feast's SQLite store
keeps whole seconds), so a later materialization of the batch tables never puts a card back in
time, and no streamed update is skipped. The stamp orders writes only: every window is
computed from the payments' own times.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import redis
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.type_map import python_values_to_proto_values

from pipelines.features.job import RECENT_EVENT_COLUMNS, RECENT_EVENTS_DAYS

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.online_response import OnlineResponse

    from pipelines.config import Settings
    from serving.schemas import Transaction

RECENT_SECONDS = RECENT_EVENTS_DAYS * 86_400
CUSTOMER_VIEW = "customer_state"
CUSTOMER_PUSH = "customer_state_push"
PAIR_PUSH = "customer_terminal_push"
ONE_SECOND = dt.timedelta(seconds=1)
VIEWS_REFRESH_SECONDS = 60.0
_push_views: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CustomerState:
    """A customer's recent payments, in time order, and when the state was written."""

    ids: tuple[int, ...]
    unix: tuple[int, ...]
    amounts: tuple[float, ...]
    event_time: dt.datetime | None = None


EMPTY = CustomerState((), (), ())


def fold(state: CustomerState, payment: Transaction) -> CustomerState | None:
    """``state`` with ``payment`` in it, the payments older than 30 days before the newest one
    dropped (the Spark job keeps the same ones); None if the payment is in it already (a
    retried request changes nothing)."""
    if payment.transaction_id in state.ids:
        return None
    unix = int(payment.tx_datetime.timestamp())
    events = [*zip(state.ids, state.unix, state.amounts, strict=True)]
    events.append((payment.transaction_id, unix, float(payment.tx_amount)))
    events.sort(key=lambda e: e[1])  # stable: same-second payments stay in arrival order
    newest = events[-1][1]
    kept = [e for e in events if e[1] > newest - RECENT_SECONDS]
    stamp = payment.tx_datetime.replace(microsecond=0)
    if state.event_time is not None and stamp <= state.event_time:
        stamp = state.event_time.replace(microsecond=0) + ONE_SECOND
    ids, seconds, amounts = zip(*kept, strict=True)
    return CustomerState(ids, seconds, amounts, stamp)


def rounds(transactions: Sequence[Transaction]) -> list[list[int]]:
    """Indexes of ``transactions`` in rounds: round k holds each card's k-th payment in time
    order, so a card's later payment is scored after its earlier one was pushed."""
    order = sorted(range(len(transactions)), key=lambda i: transactions[i].tx_datetime)
    seen: dict[int, int] = {}
    result: list[list[int]] = []
    for i in order:
        k = seen.get(transactions[i].customer_id, 0)
        seen[transactions[i].customer_id] = k + 1
        if k == len(result):
            result.append([])
        result[k].append(i)
    return [sorted(r) for r in result]


class CardLocks(Protocol):
    def holding(self, customer_ids: Sequence[int]) -> contextlib.AbstractContextManager[None]:
        """Hold the locks of these cards (each once, in a fixed order: no deadlock)."""


class FileCardLocks:
    """One ``flock`` file per stripe of cards, beside the SQLite online store: exclusive across
    the threads and worker processes of this host, released by the kernel if a process dies."""

    def __init__(self, folder: Path, stripes: int = 4096) -> None:
        self.folder = folder
        self.stripes = stripes
        folder.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def holding(self, customer_ids: Sequence[int]) -> Iterator[None]:
        held: list[int] = []
        try:
            for stripe in sorted({c % self.stripes for c in customer_ids}):
                fd = os.open(self.folder / f"{stripe}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                held.append(fd)  # an open file description per acquisition: threads exclude
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            for fd in held:
                os.close(fd)  # closing releases the lock


class RedisCardLocks:
    """A Redis lock per card, shared by every serving replica; it expires after ``timeout``
    seconds if its holder died."""

    def __init__(
        self, connection_string: str, prefix: str, timeout: float = 10.0, wait: float = 5.0
    ) -> None:

        # The online store's own connection string ("host:port,db=0,password=…"), read as
        # Feast reads it: the locks live beside the states they guard.
        nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
        self.client = redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params)
        self.prefix = prefix
        self.timeout = timeout
        self.wait = wait

    @contextlib.contextmanager
    def holding(self, customer_ids: Sequence[int]) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for customer in sorted(set(customer_ids)):
                lock = self.client.lock(
                    f"{self.prefix}:card-lock:{customer}",
                    timeout=self.timeout,
                    blocking_timeout=self.wait,
                )
                if not lock.acquire():
                    raise TimeoutError(f"card {customer} stayed locked for {self.wait:.0f} s")
                stack.callback(lock.release)
            yield


def card_locks(settings: Settings) -> CardLocks:
    """The locks that match the online store of ``settings``."""
    if settings.feast_online_store == "redis":
        return RedisCardLocks(settings.feast_redis_url, settings.feast_project)
    return FileCardLocks(settings.feast_dir / "card-locks")


STATE_REFS = [f"{CUSTOMER_VIEW}:{c}" for c in RECENT_EVENT_COLUMNS]


def read_states(store: FeatureStore, customer_ids: Sequence[int]) -> dict[int, CustomerState]:
    """The online state of each customer (``EMPTY`` when there is none)."""
    unique = sorted(set(customer_ids))
    response = store.get_online_features(features=STATE_REFS, entity_rows={"customer_id": unique})
    return states_in(response, unique)


def states_in(
    response: OnlineResponse, customer_ids: Sequence[int], values: dict | None = None
) -> dict[int, CustomerState]:
    """The customer states in an online response that read ``STATE_REFS`` for entity rows of
    ``customer_ids`` (one per row, in order; a customer may repeat); ``values``: the
    response's ``to_dict()`` if the caller has it already."""
    values = response.to_dict() if values is None else values
    names = list(response.proto.metadata.feature_names.val)
    stamps = response.proto.results[names.index(RECENT_EVENT_COLUMNS[0])].event_timestamps
    states = {}
    for j, customer in enumerate(customer_ids):
        ids, unix, amounts = (values[c][j] for c in RECENT_EVENT_COLUMNS)
        if ids is None:
            states[customer] = EMPTY
            continue
        stamp = stamps[j].ToDatetime(tzinfo=dt.UTC)
        states[customer] = CustomerState(tuple(ids), tuple(unix), tuple(amounts), stamp)
    return states


def push_payments(
    store: FeatureStore,
    transactions: Sequence[Transaction],
    states: dict[int, CustomerState] | None = None,
) -> int:
    """Fold ``transactions`` (at most one per card, their cards' locks held) into the online
    state and push it; returns how many changed a state (a retried payment does not).
    ``states``: the cards' states as read under the same locks (the scoring read them with
    its features); the cards missing there are read here."""
    states = dict(states or {})
    unread = [t.customer_id for t in transactions if t.customer_id not in states]
    if unread:
        states |= read_states(store, unread)
    customer_rows, pair_rows = [], []
    for t in transactions:
        new = fold(states[t.customer_id], t)
        if new is None:
            continue
        customer_rows.append(
            {
                "customer_id": t.customer_id,
                "event_timestamp": new.event_time,
                "customer_recent_tx_id": list(new.ids),
                "customer_recent_tx_unix": list(new.unix),
                "customer_recent_tx_amount": list(new.amounts),
            }
        )
        pair_rows.append(
            {
                "customer_id": t.customer_id,
                "terminal_id": t.terminal_id,
                "event_timestamp": t.tx_datetime,
                "pair_last_tx_unix": int(t.tx_datetime.timestamp()),
            }
        )
    if customer_rows:
        push(store, CUSTOMER_PUSH, customer_rows)
        push(store, PAIR_PUSH, pair_rows)
    return len(customer_rows)


def push(store: FeatureStore, source: str, rows: list[dict]) -> None:
    """What ``store.push(source, pd.DataFrame(rows))`` writes to the online store, without
    the DataFrame: for each feature view that reads the push source, Feast's online rows
    (entity key, the features typed by the view's schema, ``event_timestamp``) through the
    provider's ``online_write_batch``, where Feast's push ends. Feast's way there (DataFrame,
    Arrow, then protos) cost ~1.3 ms per payment; Feast's push also rebuilds every view from
    the registry's protobufs at each call (~30 ms at the default world size): the views are
    resolved once a minute."""
    at, targets = _push_views.get(store, {}).get(source, (-VIEWS_REFRESH_SECONDS, []))
    if time.monotonic() - at >= VIEWS_REFRESH_SECONDS:
        targets = [
            PushTarget.of(v)
            for v in store.list_feature_views()
            if v.stream_source is not None and v.stream_source.name == source
        ]
        if not targets:
            raise ValueError(f"no feature view reads the push source {source!r}")
        _push_views.setdefault(store, {})[source] = (time.monotonic(), targets)
    provider = store._get_provider()
    for target in targets:
        provider.online_write_batch(store.config, target.view, target.rows(rows), progress=None)


@dataclass(frozen=True)
class PushTarget:
    """A feature view that reads a push source, with its columns' value types resolved once
    (Feast's view objects type-check every attribute access)."""

    view: FeatureView
    keys: list[tuple[str, Any]]  # (join key, ValueType)
    features: list[tuple[str, Any]]  # (feature, ValueType)

    @classmethod
    def of(cls, view: FeatureView) -> PushTarget:
        return cls(
            view,
            [(e.name, e.dtype.to_value_type()) for e in view.entity_columns],
            [(f.name, f.dtype.to_value_type()) for f in view.features],
        )

    def rows(self, rows: list[dict]) -> list[tuple]:
        """``rows`` (one dict per entity) as Feast's online rows for the view: each column
        converted in one call, as Feast converts a pushed frame (value by value, Feast infers
        the type again each time: ~4x the cost)."""

        def column(name: str, kind: Any) -> list:
            return python_values_to_proto_values([row[name] for row in rows], kind)

        join_keys = [name for name, _ in self.keys]
        keys = [column(name, kind) for name, kind in self.keys]
        features = {name: column(name, kind) for name, kind in self.features}
        return [
            (
                EntityKey(join_keys=join_keys, entity_values=[k[i] for k in keys]),
                {name: values[i] for name, values in features.items()},
                row["event_timestamp"],
                None,
            )
            for i, row in enumerate(rows)
        ]
