"""Streaming features through a real ``bentoml serve``: every scored payment updates its card's
online state before the response returns, and what the service used equals what training sees.

The module's world is a copy of the shared world with its own server: live traffic changes
the online state of every card it touches, which the other serving tests must not see.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings
from pipelines.features.build import build_features
from pipelines.featurestore import store
from pipelines.ingest import schema
from pipelines.ingest.landing import ingest_landing
from pipelines.ingest.simulated import ingest_simulated_day
from pipelines.simulate.generator import SimulationConfig, TransactionSimulator
from serving.stream import read_states
from tests.e2e.serving_world import MAX_BATCH, build_serving_world, serve
from tests.waiting import wait_for
from tests.worlds import LAST_DAY, settings_from_env

LIVE_DAY = LAST_DAY + dt.timedelta(days=1)
LIVE_START = pd.Timestamp(LIVE_DAY, tz="UTC")
BURST_CUSTOMER = 5_000_000  # no such card in the world: its state is the stream's alone


@pytest.fixture(scope="module")
def world(shared_world, tmp_path_factory) -> dict:
    return build_serving_world(shared_world, tmp_path_factory.mktemp("streaming"))


@pytest.fixture(scope="module")
def settings(world) -> Iterator[Settings]:
    """The world's settings, its variables set (in-process Feast, dbt and Spark read them)."""
    env = {k: v for k, v in world["env"].items() if k.startswith(("FRAUD_", "BENTOML_"))}
    with settings_from_env(env) as settings:
        yield settings


@pytest.fixture(scope="module")
def server(world):
    with serve(world["env"]) as server:
        yield server


def _request(tx: pd.Series | dict) -> dict:
    return {
        "transaction_id": int(tx["transaction_id"]),
        "customer_id": int(tx["customer_id"]),
        "terminal_id": int(tx["terminal_id"]),
        "tx_amount": float(tx["tx_amount"]),
        "tx_datetime": pd.Timestamp(tx["tx_datetime"]).isoformat(),
    }


def _score(client: httpx.Client, batch: list[dict]) -> list[dict]:
    r = client.post("/score", json={"transactions": batch}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _logged(settings: Settings, ids: list[int]) -> pd.DataFrame:
    """The prediction-log rows of ``ids`` (waiting for the log's flush), indexed by id."""
    folder = settings.predictions_dir

    def rows() -> pd.DataFrame | None:
        files = list(folder.rglob("*.parquet"))
        if not files:
            return None
        log = pq.read_table(files).to_pandas()
        log = log[log.transaction_id.isin(ids)]
        return log if set(log.transaction_id) == set(ids) else None

    log = wait_for("the payments in the prediction log", rows, timeout=30, interval=0.5)
    assert not log.transaction_id.duplicated().any()
    return log.set_index("transaction_id").loc[ids]


def test_a_burst_of_one_card_counts_every_payment(server, settings):
    """Card testing: six payments of one card five seconds apart. Each one sees the ones
    before it, although no materialization ran in between."""
    burst = [
        {
            "transaction_id": 8_000_000 + k,
            "customer_id": BURST_CUSTOMER,
            "terminal_id": 3,
            "tx_amount": 1.0 + k,
            "tx_datetime": (LIVE_START + pd.Timedelta(seconds=5 * k)).isoformat(),
        }
        for k in range(6)
    ]
    with httpx.Client(base_url=server.url) as client:
        answers = [_score(client, [tx])[0] for tx in burst]
    assert [a["unknown_customer"] for a in answers] == [True] + [False] * 5
    log = _logged(settings, [tx["transaction_id"] for tx in burst])
    assert log.feature_customer_nb_tx_1h_now.tolist() == [1, 2, 3, 4, 5, 6]
    assert log.feature_customer_nb_tx_1d_now.tolist() == [1, 2, 3, 4, 5, 6]
    assert log.feature_customer_seconds_since_prev_tx.tolist() == [30 * 86_400] + [5.0] * 5
    # The mean includes the scored payment: 1, then (1 + 2) / 2, ...
    assert log.feature_customer_avg_amount_1d_now.tolist() == pytest.approx(
        [np.mean(range(1, k + 2)) for k in range(6)]
    )
    assert log.feature_customer_terminal_is_new.tolist() == [1, 0, 0, 0, 0, 0]
    # Sent again, a payment is not counted twice in the card's state.
    with httpx.Client(base_url=server.url) as client:
        _score(client, [burst[-1]])
    state = read_states(store.get_store(settings), [BURST_CUSTOMER])[BURST_CUSTOMER]
    assert state.ids == tuple(tx["transaction_id"] for tx in burst)


def test_two_payments_of_one_card_at_the_same_moment_are_both_counted(server, settings):
    customer, when = BURST_CUSTOMER + 1, (LIVE_START + pd.Timedelta(hours=1)).isoformat()
    pair = [
        {
            "transaction_id": 8_100_000 + k,
            "customer_id": customer,
            "terminal_id": 3,
            "tx_amount": 10.0,
            "tx_datetime": when,
        }
        for k in range(2)
    ]
    start = threading.Barrier(2)

    def send(tx: dict) -> dict:
        with httpx.Client(base_url=server.url) as client:
            start.wait()
            return _score(client, [tx])[0]

    for _ in range(3):  # three rounds of two requests sent together
        with cf.ThreadPoolExecutor(2) as pool:
            list(pool.map(send, pair))
        pair = [{**tx, "transaction_id": tx["transaction_id"] + 10} for tx in pair]
    ids = [8_100_000 + k + 10 * r for r in range(3) for k in range(2)]
    state = read_states(store.get_store(settings), [customer])[customer]
    assert sorted(state.ids) == ids  # no update lost
    log = _logged(settings, ids)
    # Each payment saw every one scored before it, at the same instant included.
    assert sorted(log.feature_customer_nb_tx_1h_now) == [1, 2, 3, 4, 5, 6]


def _live_day(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The simulator's payments of the day after the world, plus card-testing bursts: a few
    cards pay four more times within a minute of one of their payments."""
    simulated = TransactionSimulator(SimulationConfig.from_settings(settings)).generate_day(
        LIVE_DAY
    )
    simulated = simulated[schema.TRANSACTIONS.names]
    seeds = simulated.drop_duplicates("customer_id").head(5)
    bursts = pd.DataFrame(
        [
            {
                "transaction_id": 9_000_000 + 10 * j + k,
                "customer_id": row.customer_id,
                "terminal_id": row.terminal_id,
                "tx_amount": 0.5 + k,
                "tx_datetime": row.tx_datetime + pd.Timedelta(seconds=12 * (k + 1)),
            }
            for j, row in enumerate(seeds.itertuples())
            for k in range(4)
        ]
    )
    return simulated, bursts


def test_served_features_equal_the_offline_ones_on_a_day_of_live_traffic(server, settings):
    """The oracle: a whole day scored in time order (batches of consecutive payments, so a
    card sometimes has two in one request); once that day is in the lake and the features are
    rebuilt, historical retrieval gives every payment the customer features the service used.
    Then the online state of every card equals what the stream had written."""
    simulated, bursts = _live_day(settings)
    day = pd.concat([simulated, bursts]).sort_values(["tx_datetime", "transaction_id"])
    requests = [_request(tx) for _, tx in day.iterrows()]
    with httpx.Client(base_url=server.url) as client:
        for i in range(0, len(requests), MAX_BATCH):
            _score(client, requests[i : i + MAX_BATCH])
    fs = store.get_store(settings)
    customers = sorted(day.customer_id.unique().tolist())
    streamed = read_states(fs, customers)
    ids = day.transaction_id.tolist()
    served = _logged(settings, ids)

    # The day reaches the lake the batch way: the simulator's day, the bursts as a landing file.
    ingest_simulated_day(LIVE_DAY, settings)
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(bursts, schema=schema.TRANSACTIONS, preserve_index=False)
    pq.write_table(table, settings.landing_dir / "bursts.parquet")
    assert ingest_landing(settings).ingested == {"bursts.parquet": len(bursts)}
    build_features(settings)  # dbt, Spark, feast apply and a materialization

    entities = store.training_entities(day)
    offline = store.historical_features(settings, entities).set_index("transaction_id").loc[ids]
    view = fs.get_on_demand_feature_view("transaction_features")
    columns = [f.name for f in view.features]
    problems = []
    for column in columns:
        want = offline[column].to_numpy(dtype=float)
        got = served[f"feature_{column}"].to_numpy(dtype=float)
        bad = ~np.isclose(got, want, rtol=1e-9, atol=0)
        if bad.any():
            sample = pd.DataFrame(
                {"served": got[bad], "offline": want[bad]}, index=offline.index[bad]
            )
            problems.append(f"{column}: {int(bad.sum())} of {len(ids)} differ\n{sample.head()}")
    assert not problems, "\n".join(problems)
    # The day exercised what streaming is for: payments of one card seconds apart.
    assert (served.feature_customer_nb_tx_1h_now >= 5).sum() >= len(bursts) // 4

    # The batch caught up with the stream: every card's state is the one the stream wrote.
    after = read_states(store.get_store(settings), customers)
    for customer in customers:
        assert sorted(after[customer].ids) == sorted(streamed[customer].ids), customer
        assert after[customer].event_time >= streamed[customer].event_time
