"""Live traffic through a real ``bentoml serve`` (two workers): every scored payment updates
its card's online state before the response returns, what the service used equals what
training sees, and the payments the API scored are the live day's payments in the lake, once.

The module's world is a copy of the shared world with its own server, and the day after it is
its first live day: live traffic changes the online state of every card it touches, which the
other serving tests must not see.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings
from pipelines.featurestore import store
from pipelines.featurestore.build import build_features
from pipelines.ingest.daily import ingest_day
from pipelines.lake import partition_dir
from pipelines.traffic import day_payments, replay
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
    with settings_from_env({**env, "FRAUD_LIVE_START": LIVE_DAY.isoformat()}) as settings:
        yield settings


@pytest.fixture(scope="module")
def server(world):
    # Two workers: two processes (as two replicas would) share the card locks and the log.
    with serve({**world["env"], "FRAUD_SERVING_WORKERS": "2"}) as server:
        yield server


def _towards(settings: Settings, server) -> Settings:
    """``settings`` pointing at the module's server (what the replayer sends to)."""
    return settings.model_copy(update={"serving_port": int(server.url.rsplit(":", 1)[1])})


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
    # Sent again (a retry), a payment is not counted twice: not in the card's state, not in
    # its own features (it finds itself in the state): the same answer.
    with httpx.Client(base_url=server.url) as client:
        again = _score(client, [burst[-1]])[0]
    assert (again["fraud_probability"], again["decision"]) == (
        answers[-1]["fraud_probability"],
        answers[-1]["decision"],
    )
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
    """The simulator's payments of the first live day, plus card-testing bursts: a few cards
    pay four more times within a minute of one of their payments."""
    simulated = day_payments(settings, LIVE_DAY)
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
    """The oracle. The payment network replays the first live day (one payment per request,
    cards overlapping, bursts seconds apart), and a client sends one card's late payments as
    one request; that day reaches the lake from the scored-payment log and the features are
    rebuilt: historical retrieval gives every payment the customer features the service used.
    The rebuild leaves every card's online state as the stream wrote it; a rerun of the replay
    and of the ingest leaves each payment once in the lake."""
    simulated, bursts = _live_day(settings)
    day = pd.concat([simulated, bursts])
    report = replay(_towards(settings, server), day, LIVE_DAY, speed=0, concurrency=8)
    assert (report.sent, report.scored, report.errors) == (len(day), len(day), 0), report
    card = simulated.iloc[0]
    late = [
        {
            "transaction_id": 9_500_000 + k,
            "customer_id": int(card.customer_id),
            "terminal_id": int(card.terminal_id),
            "tx_amount": 3.0 + k,
            "tx_datetime": (LIVE_START + pd.Timedelta(hours=23, minutes=59, seconds=k)).isoformat(),
        }
        for k in range(MAX_BATCH)
    ]
    with httpx.Client(base_url=server.url) as client:
        _score(client, late)
    fs = store.get_store(settings)
    customers = sorted(set(day.customer_id.unique().tolist()))
    streamed = read_states(fs, customers)
    ids = [
        *day.sort_values(["tx_datetime", "transaction_id"]).transaction_id,
        *(t["transaction_id"] for t in late),
    ]
    served = _logged(settings, ids)

    # The live day reaches the lake the live way: what /score scored.
    ingested = ingest_day(LIVE_DAY, settings)
    assert ingested.source == "scored"
    build_features(settings)  # dbt, Spark, feast apply and a materialization

    entities = store.training_entities(
        pq.read_table(partition_dir(settings.raw_transactions_dir, LIVE_DAY)).to_pandas()
    )
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
    assert served.loc[
        [t["transaction_id"] for t in late]
    ].feature_customer_nb_tx_1h_now.is_monotonic_increasing

    # The batch caught up with the stream: every card's state is the one the stream wrote.
    after = read_states(store.get_store(settings), customers)
    for customer in customers:
        assert sorted(after[customer].ids) == sorted(streamed[customer].ids), customer
        assert after[customer].event_time >= streamed[customer].event_time

    # Exactly once: the whole day sent again, and the daily ingest run twice more.
    again = replay(_towards(settings, server), day, LIVE_DAY, speed=0)
    assert again.scored == len(day)

    def logged_twice() -> bool:  # the resent payments reached the log too
        log = pq.read_table(list(settings.predictions_dir.rglob("*.parquet"))).to_pandas()
        return log.transaction_id.isin(day.transaction_id).sum() >= 2 * len(day)

    wait_for("the resent payments in the prediction log", logged_twice, timeout=30, interval=0.5)
    for _ in range(2):
        ingest_day(LIVE_DAY, settings)
    folder = partition_dir(settings.raw_transactions_dir, LIVE_DAY)
    assert sorted(p.name for p in folder.iterdir()) == ["part-scored.parquet"]
    lake = pq.read_table(folder).to_pandas()
    assert not lake.transaction_id.duplicated().any()
    assert set(ids) <= set(lake.transaction_id)
    # Beside the day's payments, only the earlier tests' cards (none of them simulated).
    assert set(lake.transaction_id) - set(ids) <= set(range(8_000_000, 8_200_000))


def test_the_replayer_sends_a_day_and_says_what_happened(server, settings, world):
    """``python -m pipelines traffic replay`` as a user runs it: progress, then the summary;
    a second run resumes (the prediction log holds the day: nothing to send)."""
    day = LIVE_DAY + dt.timedelta(days=1)
    env = {**world["env"], "FRAUD_SERVING_PORT": server.url.rsplit(":", 1)[1]}
    command = [sys.executable, "-m", "pipelines", "traffic", "replay", "--day", day.isoformat()]
    done = subprocess.run(
        [*command, "--speed", "0"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    n = len(day_payments(settings, day))
    assert f"sent {n:,}/{n:,}, scored {n:,}, errors 0" in done.stdout
    assert "decisions: " in done.stdout and "approve" in done.stdout
    assert len(_logged(settings, day_payments(settings, day).transaction_id.tolist())) == n
    resumed = subprocess.run(
        [*command, "--speed", "0"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0 and "sent 0/0" in resumed.stdout, resumed.stdout
