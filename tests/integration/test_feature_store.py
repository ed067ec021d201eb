"""Feast over the real Spark output: retrieval keeps every row and matches a brute-force oracle.

The chain under test: simulated lake -> dbt mart -> Spark feature tables -> ``feast apply`` ->
historical retrieval (point-in-time join as of 1 µs before each transaction + the on-demand
view), materialization, online reads and pushes.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.config import Settings
from pipelines.features.job import RECENT_EVENT_COLUMNS
from pipelines.featurestore import store
from pipelines.monitoring.data import read_transactions_day
from pipelines.transform.mart import read_export
from tests.worlds import LABEL_DELAY_DAYS, world_copy

DELAY = LABEL_DELAY_DAYS
DAY = 86_400
WINDOWS = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY}


@pytest.fixture(scope="module")
def built(shared_world, tmp_path_factory) -> Iterator[Settings]:
    """A copy of the shared world (built through dbt, Spark and feast apply): the online
    tests materialize and push into its own online store."""
    with world_copy(shared_world, tmp_path_factory.mktemp("feast")) as settings:
        yield settings


@pytest.fixture(scope="module")
def mart(built) -> pd.DataFrame:
    return read_export(built)


@pytest.fixture(scope="module")
def retrieved(built, mart) -> pd.DataFrame:
    entities = store.training_entities(mart)
    return store.historical_features(built, entities)


def test_historical_retrieval_returns_every_entity_row(mart, retrieved):
    assert len(retrieved) == len(mart)
    assert sorted(retrieved.transaction_id) == sorted(mart.transaction_id)


def _seconds(ts: pd.Series) -> np.ndarray:
    return (ts.astype("datetime64[us, UTC]").astype("int64") // 10**6).to_numpy()


def _oracle(mart: pd.DataFrame, row: pd.Series) -> dict | None:
    """Every model feature of one transaction, by brute force from the mart (None = tie)."""
    t = int(row.tx_unix_seconds)
    exact = mart.tx_datetime.astype("datetime64[us, UTC]") < row.tx_datetime
    out: dict[str, float] = {}
    cust = mart[(mart.customer_id == row.customer_id) & exact]
    cust_secs = _seconds(cust.tx_datetime)
    if len(cust) and np.sum(cust.tx_datetime == cust.tx_datetime.max()) > 1:
        return None  # two states at the same instant: the join may pick either
    prev_t = int(cust_secs.max()) if len(cust) else None
    if prev_t is not None and t - prev_t > 30 * DAY:
        prev_t = None  # beyond the view's TTL: a customer unseen for 30 days is "new"
    gap = None if prev_t is None else t - prev_t
    # Exact windows at the transaction: (t - width, t] on whole seconds, itself included.
    for name, width in {**WINDOWS, "1h": 3600}.items():
        window = cust[cust_secs > t - width] if gap is not None else cust.iloc[:0]
        nb = len(window) + 1
        out[f"customer_nb_tx_{name}_now"] = nb
        if name != "1h":
            out[f"customer_avg_amount_{name}_now"] = (window.tx_amount.sum() + row.tx_amount) / nb
    others = cust[cust_secs > t - 30 * DAY] if gap is not None else cust.iloc[:0]
    usual = others.tx_amount.mean() if len(others) else 0.0
    out["customer_amount_ratio_30d"] = row.tx_amount / usual if usual > 0 else 1.0
    out["customer_seconds_since_prev_tx"] = float(gap) if gap is not None else 30.0 * DAY
    out["customer_is_new"] = int(gap is None)
    pair = cust[cust.terminal_id == row.terminal_id]
    pair_secs = _seconds(pair.tx_datetime)
    out["customer_terminal_is_new"] = int(not np.any(t - pair_secs < 30 * DAY))
    when = row.tx_datetime
    out["tx_during_weekend"] = int(when.weekday() >= 5)
    out["tx_during_night"] = int(when.hour <= 6)

    term = mart[(mart.terminal_id == row.terminal_id) & exact]
    term_secs = _seconds(term.tx_datetime)
    if len(term) and np.sum(term.tx_datetime == term.tx_datetime.max()) > 1:
        return None
    tt = int(term_secs.max()) if len(term) and t - int(term_secs.max()) <= 38 * DAY else None
    for name, width in WINDOWS.items():
        if tt is None:
            out[f"terminal_nb_tx_{name}"] = np.nan
            out[f"terminal_risk_{name}"] = np.nan
            continue
        lo, hi = tt - width - DELAY * DAY, tt - DELAY * DAY
        window = term[(term_secs > lo) & (term_secs <= hi)]
        state_time = pd.Timestamp(tt, unit="s", tz="UTC")
        known = window[
            window.label_available_at.notna() & (window.label_available_at <= state_time)
        ]
        out[f"terminal_nb_tx_{name}"] = len(window)
        out[f"terminal_risk_{name}"] = known.tx_fraud.sum() / len(known) if len(known) else 0.0
    # The terminal's labels: those that had arrived before the transaction (rows stamped at
    # each arrival), if the newest arrived within the view's TTL.
    every = mart[mart.terminal_id == row.terminal_id]
    arrived = every[
        every.label_available_at.notna()
        & every.tx_fraud.notna()
        & (every.label_available_at.astype("datetime64[us, UTC]") < row.tx_datetime)
    ].sort_values(["label_available_at", "transaction_id"])
    if arrived.empty or row.tx_datetime - arrived.label_available_at.max() > dt.timedelta(days=38):
        out["terminal_last_label_fraud"] = np.nan
        out["terminal_last3_labels_fraud_share"] = np.nan
        out["terminal_fraud_streak_days"] = 0.0
    else:
        newest = arrived.tx_fraud.astype(float).to_numpy()
        out["terminal_last_label_fraud"] = float(newest[-1])
        out["terminal_last3_labels_fraud_share"] = float(newest[-3:].mean())
        since_genuine = np.flatnonzero(newest == 0)
        streak = arrived.iloc[since_genuine[-1] + 1 if since_genuine.size else 0 :]
        out["terminal_fraud_streak_days"] = (
            (t - int(_seconds(streak.tx_datetime).min())) / DAY if len(streak) else 0.0
        )
    return out


def test_sampled_rows_equal_the_brute_force_oracle(mart, retrieved):
    rows = retrieved.merge(mart[["transaction_id", "tx_datetime"]], on="transaction_id")
    # Late transactions have long histories: sample from the last two weeks mostly.
    sample = rows.sample(n=150, random_state=0)
    # Rows whose terminal shows a fraud among its newest labels are rare: add some on purpose.
    flagged = rows[rows.terminal_last3_labels_fraud_share > 0]
    sample = pd.concat([sample, flagged.sample(n=min(30, len(flagged)), random_state=0)])
    checked = newest_label_frauds = streaks = 0
    for _, row in sample.iterrows():
        expected = _oracle(mart, row)
        if expected is None:
            continue
        got = {k: row[k] for k in expected}
        for key, value in expected.items():
            if isinstance(value, float) and np.isnan(value):
                assert pd.isna(got[key]), (row.transaction_id, key, got[key])
            else:
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (
                    row.transaction_id,
                    key,
                    got[key],
                    value,
                )
        checked += 1
        newest_label_frauds += expected["terminal_last3_labels_fraud_share"] > 0
        streaks += expected["terminal_fraud_streak_days"] > 0
    assert checked > 100 and newest_label_frauds >= 10 and streaks >= 5


def test_the_lean_join_returns_what_feast_s_own_join_returns(built, mart, retrieved, monkeypatch):
    """The offline store joins features after picking the row (``offline.py``): every value of
    every column equals Feast's own point-in-time join of the same entity rows."""
    from feast.infra.offline_stores import ibis as feast_ibis

    from pipelines.featurestore import offline

    entities = store.training_entities(mart)
    monkeypatch.setattr(offline, "point_in_time_join", feast_ibis.point_in_time_join)
    feasts = store.historical_features(built, entities).set_index("transaction_id").sort_index()
    ours = retrieved.set_index("transaction_id").sort_index()
    assert list(ours.index) == list(feasts.index)
    assert list(ours.columns) == list(feasts.columns)
    for column in feasts.columns:
        a, b = ours[column], feasts[column]
        if a.dtype == object:  # the recent payments: same-instant ties in any order

            def payments(v: object) -> list | None:
                return None if v is None or isinstance(v, float) else sorted(v)

            assert [payments(x) for x in a] == [payments(y) for y in b], column
        else:
            pd.testing.assert_series_equal(a, b, check_exact=False, rtol=1e-12, obj=column)


def test_no_fraud_label_leaks_before_it_arrives(built, mart, retrieved):
    """A terminal's risk as of a transaction uses only labels that had arrived by then."""
    frauds = mart[mart.tx_fraud == 1]
    # Transactions on a defrauded terminal within the label delay after the fraud.
    pairs = frauds.merge(mart, on="terminal_id", suffixes=("_fraud", ""))
    soon = pairs[
        (pairs.tx_datetime > pairs.label_available_at_fraud - dt.timedelta(days=1))
        & (pairs.tx_datetime < pairs.label_available_at_fraud)
    ]
    assert len(soon) > 0
    # Each oracle call scans the mart: a sample of a few hundred proves the point.
    soon = soon.sample(n=min(300, len(soon)), random_state=0)
    got = retrieved.set_index("transaction_id").loc[soon.transaction_id]
    for (_, pair), (_, feat) in zip(soon.iterrows(), got.iterrows(), strict=True):
        expected = _oracle(mart, pd.Series({**pair, **feat}))
        if expected is not None:
            assert feat.terminal_risk_1d == pytest.approx(expected["terminal_risk_1d"])


def test_online_read_after_materialization_serves_the_latest_state(built, mart):
    latest = store.materialize_latest(built)
    assert latest is not None
    fs = store.get_store(built)
    customers = pq.read_table(built.features_dir / "customer_features").to_pandas()
    newest = customers.sort_values("event_timestamp").groupby("customer_id").tail(1)
    sample = newest.sample(n=20, random_state=1)
    online = fs.get_online_features(
        features=[f"customer_state:{c}" for c in RECENT_EVENT_COLUMNS],
        entity_rows=[{"customer_id": int(c)} for c in sample.customer_id],
    ).to_df()
    for (_, want), (_, got) in zip(sample.iterrows(), online.iterrows(), strict=True):
        for column in RECENT_EVENT_COLUMNS:
            assert list(got[column]) == list(want[column])


def test_online_service_read_applies_the_on_demand_view(built):
    store.materialize_latest(built)
    fs = store.get_store(built)
    customers = pq.read_table(built.features_dir / "customer_features").to_pandas()
    # The most recently active customer: surely within the view's TTL.
    state = customers.sort_values("event_timestamp").iloc[-1]
    now = int(state.customer_last_tx_unix) + 600  # ten minutes after its last payment
    vector = fs.get_online_features(
        features=fs.get_feature_service(store.FEATURE_SERVICE),
        entity_rows=[
            {
                "customer_id": int(state.customer_id),
                "terminal_id": 0,
                "transaction_id": -1,  # a payment no state holds
                "tx_amount": 50.0,
                "tx_unix_seconds": now,
            }
        ],
    ).to_dict()
    # Exactly the payments of the last day as of `now`, not as of the state's own payment.
    unix = np.asarray(state.customer_recent_tx_unix)
    amounts = np.asarray(state.customer_recent_tx_amount)
    in_day = unix > now - DAY
    assert vector["customer_nb_tx_1d_now"] == [int(in_day.sum()) + 1]
    assert vector["customer_seconds_since_prev_tx"] == [600.0]
    expected_avg = (amounts[in_day].sum() + 50.0) / (in_day.sum() + 1)
    assert vector["customer_avg_amount_1d_now"][0] == pytest.approx(expected_avg, rel=1e-12)


def test_online_service_read_ages_the_terminal_fraud_streak(built):
    """Online, the streak's age is computed at the scored transaction's time from the state of
    the terminal's latest label arrival; a terminal whose latest label is genuine has none."""
    store.materialize_latest(built)
    fs = store.get_store(built)
    labels = pq.read_table(built.features_dir / "terminal_label_features").to_pandas()
    latest = labels.sort_values("event_timestamp").groupby("terminal_id").tail(1)
    # The newest of each kind: surely among the rows the online store loaded (one TTL back).
    streaking = latest.dropna(subset=["terminal_fraud_streak_start_unix"]).iloc[-1]
    clean = latest[latest.terminal_last_label_fraud == 0].iloc[-1]
    now = int(streaking.terminal_fraud_streak_start_unix) + 3 * DAY + 600
    vector = fs.get_online_features(
        features=fs.get_feature_service(store.FEATURE_SERVICE),
        entity_rows=[
            {
                "customer_id": 0,
                "terminal_id": int(terminal),
                "transaction_id": -1,  # a payment no state holds
                "tx_amount": 5.0,
                "tx_unix_seconds": now,
            }
            for terminal in (streaking.terminal_id, clean.terminal_id)
        ],
    ).to_dict()
    assert vector["terminal_last_label_fraud"] == [1.0, 0.0]
    assert vector["terminal_fraud_streak_days"] == pytest.approx([3 + 600 / DAY, 0.0])


def test_serving_s_read_plan_answers_what_feast_answers_for_the_service(built):
    """Serving reads the service's views in one call and applies the on-demand views itself
    (``serving.features.online_features``): every feature Feast's own read of the service
    gives, equal, for known and unknown customers and terminals, and the streamed states
    read in the same call equal ``read_states``."""
    from serving.features import online_features, read_plans
    from serving.stream import STATE_REFS, read_states

    store.materialize_latest(built)
    fs = store.get_store(built)
    customers = pq.read_table(built.features_dir / "customer_features").to_pandas()
    terminals = pq.read_table(built.features_dir / "terminal_label_features").to_pandas()
    newest = customers.sort_values("event_timestamp").tail(30)
    now = int(newest.customer_last_tx_unix.max()) + 600
    customer_ids = [*map(int, newest.customer_id), 10**9]  # the last one unknown
    terminal_ids = [*map(int, terminals.terminal_id.tail(30)), 10**9]
    rows = {
        "customer_id": customer_ids,
        "terminal_id": terminal_ids,
        "transaction_id": list(range(-1, -32, -1)),
        "tx_amount": [float(5 + 7 * i) for i in range(31)],
        "tx_unix_seconds": [now - 3_000 * i for i in range(31)],
    }
    feast_s = fs.get_online_features(
        features=fs.get_feature_service(store.FEATURE_SERVICE), entity_rows=rows
    ).to_dict()
    plan = read_plans.get(fs, store.FEATURE_SERVICE, tuple(STATE_REFS))
    ours, response = online_features(fs, plan, rows)
    assert feast_s.keys() <= ours.keys()
    assert {k: ours[k] for k in feast_s} == feast_s
    assert ours["customer_is_new"][-1] == 1 and feast_s["terminal_nb_tx_30d"][-1] is None
    from serving.stream import states_in

    assert states_in(response, customer_ids, ours) == read_states(fs, customer_ids)


def test_a_pushed_state_is_readable_online(built):
    fs = store.get_store(built)
    pushed_at = pd.Timestamp("2030-01-01 12:00", tz="UTC")
    row = {
        "customer_id": 987_654,
        "event_timestamp": pushed_at,
        "customer_recent_tx_id": [1, 2, 3],
        "customer_recent_tx_unix": [int(pushed_at.timestamp()) - s for s in (7200, 60, 0)],
        "customer_recent_tx_amount": [10.0, 12.5, 15.0],
    }
    fs.push("customer_state_push", pd.DataFrame([row]))
    online = fs.get_online_features(
        features=fs.get_feature_service(store.FEATURE_SERVICE),
        entity_rows=[
            {
                "customer_id": 987_654,
                "terminal_id": 0,
                "transaction_id": -1,  # a payment no state holds
                "tx_amount": 20.0,
                "tx_unix_seconds": int(pushed_at.timestamp()) + 1,
            }
        ],
    ).to_dict()
    assert online["customer_nb_tx_1h_now"] == [3]  # the two of the last hour and itself
    assert online["customer_nb_tx_1d_now"] == [4]
    assert online["customer_avg_amount_1d_now"] == [pytest.approx((10 + 12.5 + 15 + 20) / 4)]


def test_a_materialization_never_puts_a_streamed_state_back_in_time(built):
    """The stream's state is newer than the batch row of the same customer: materializing the
    batch again leaves the streamed state (both online stores skip a write that is not newer).
    """
    store.materialize_latest(built)
    fs = store.get_store(built)
    customers = pq.read_table(built.features_dir / "customer_features").to_pandas()
    state = customers.sort_values("event_timestamp").iloc[-1]
    customer = int(state.customer_id)
    streamed = {
        "customer_id": customer,
        "event_timestamp": state.event_timestamp + pd.Timedelta(minutes=5),
        "customer_recent_tx_id": [*state.customer_recent_tx_id, 10**12],
        "customer_recent_tx_unix": [*state.customer_recent_tx_unix, state.customer_last_tx_unix],
        "customer_recent_tx_amount": [*state.customer_recent_tx_amount, 1.0],
    }
    fs.push("customer_state_push", pd.DataFrame([streamed]))
    # The last day of batch rows again, this customer's older batch state among them.
    fs.materialize(
        start_date=state.event_timestamp - pd.Timedelta(days=1),
        end_date=state.event_timestamp + pd.Timedelta(microseconds=1),
    )
    online = fs.get_online_features(
        features=[f"customer_state:{c}" for c in RECENT_EVENT_COLUMNS],
        entity_rows=[{"customer_id": customer}],
    ).to_dict()
    assert online["customer_recent_tx_id"] == [streamed["customer_recent_tx_id"]]


def test_payments_at_the_same_instant_are_all_folded_into_the_state(built):
    """Three payments of one card at one instant, pushed one after the other: each push is
    stamped a second after the stored state, so the store (to the second) skips none."""
    from serving.schemas import Transaction
    from serving.stream import push_payments, read_states

    fs = store.get_store(built)
    when = dt.datetime(2026, 2, 1, 9, 30, tzinfo=dt.UTC)
    customer = 987_655
    for k in range(3):
        tx = Transaction(
            transaction_id=70 + k,
            customer_id=customer,
            terminal_id=1,
            tx_amount=5.0,
            tx_datetime=when,
        )
        assert push_payments(fs, [tx]) == 1
    state = read_states(fs, [customer])[customer]
    assert state.ids == (70, 71, 72)
    assert state.event_time == when + dt.timedelta(seconds=2)


def test_monitoring_context_columns_are_the_request_time_features(built, retrieved):
    """Monitoring recomputes a few customer windows from the mart in DuckDB (it runs before
    Spark and Feast); they must be the on-demand view's, which the model is trained and served
    on, transaction for transaction."""
    same = {
        "tx_amount": "tx_amount",
        "tx_during_night": "tx_during_night",
        "tx_during_weekend": "tx_during_weekend",
        "customer_nb_tx_1h": "customer_nb_tx_1h_now",
        "customer_nb_tx_1d": "customer_nb_tx_1d_now",
        "customer_amount_ratio_30d": "customer_amount_ratio_30d",
        "customer_terminal_is_new": "customer_terminal_is_new",
    }
    days = sorted({ts.date() for ts in retrieved.event_timestamp})
    checked = new_pairs = bursts = 0
    for day in (days[3], days[len(days) // 2], days[-1]):
        context = read_transactions_day(built, day)
        served = retrieved.set_index("transaction_id").loc[context.transaction_id]
        for column, feature in same.items():
            np.testing.assert_allclose(
                context[column].to_numpy("float64"),
                served[feature].to_numpy("float64"),
                rtol=1e-12,
                err_msg=f"{day} {column}",
            )
        checked += len(context)
        new_pairs += int(context.customer_terminal_is_new.sum())
        bursts += int((context.customer_nb_tx_1h > 1).sum())
    assert checked > 500 and new_pairs > 0 and bursts > 0


def test_feast_apply_runs_only_when_the_definitions_change(built, tmp_path, monkeypatch):
    """The world's copy applied its definitions: the daily build's apply is skipped until a
    definition file, the rendered config or the registry changes."""
    registry = built.feast_dir / "registry.db"
    assert store.apply(built) is False
    assert store.apply(built, force=True) is True
    # Another copy of the definitions, one file edited: that is a change.
    repo = tmp_path / "feature_repo"
    shutil.copytree(store.FEATURE_REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    before = store.definitions_fingerprint(built)
    monkeypatch.setattr(store, "FEATURE_REPO", repo)
    assert store.definitions_fingerprint(built) == before
    views = repo / "feature_views.py"
    views.write_text(views.read_text() + "\n# an edit\n")
    assert store.definitions_fingerprint(built) != before
    monkeypatch.undo()
    # A registry that is gone is applied again, whatever the marker says.
    registry.unlink()
    assert store.apply(built) is True and registry.exists()
    assert store.get_store(built).get_feature_service(store.FEATURE_SERVICE) is not None
