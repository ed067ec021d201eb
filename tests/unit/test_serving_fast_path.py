"""The serving hot path: the unwrapped model scores exactly as MLflow's pyfunc does, and the
feature batch is built from Feast's answer without pandas per-column work, same values.

The model is the production class (``pipelines.training.model.FraudScorer``) saved with the
MLflow pytorch flavour and loaded through pyfunc, as serving loads a registered version. The
Feast store is a stand-in returning a canned online response (the real store is exercised by
tests/e2e/test_serving.py, including the served-vs-offline parity test).
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from serving import features
from serving.features import TERMINAL_DEFAULTS, FeatureBatch, fetch
from serving.model import LoadedModel
from serving.schemas import Transaction

INPUTS = [
    "tx_amount",
    "customer_nb_tx_1d_now",
    "customer_avg_amount_7d_now",
    "customer_seconds_since_prev_tx",
    "customer_is_new",
    "terminal_nb_tx_30d",
    "terminal_risk_7d",
]


@pytest.fixture(scope="module")
def pyfunc_model(tmp_path_factory):
    """A two-member FraudScorer (one with binned encodings), saved and loaded via pyfunc."""
    import mlflow.pyfunc
    import mlflow.pytorch

    from pipelines.training.model import (
        FraudScorer,
        HyperParams,
        Preprocessing,
        ScoringMember,
        build_mlp,
    )

    rng = np.random.default_rng(1)
    raw = np.abs(rng.normal(size=(400, len(INPUTS)))) * [80, 3, 60, 9000, 1, 40, 0.2]
    labels = (raw[:, 0] > 150).astype(int)
    members = []
    for bins in (0, 8):
        pre = Preprocessing.fit(INPUTS, raw, labels, bins)
        members.append(ScoringMember(pre, build_mlp(pre.n_features, HyperParams(), seed=bins)))
    scorer = FraudScorer(INPUTS, members, threshold=0.5).eval()
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.pytorch.save_model(
        scorer, str(path), serialization_format="pickle", pip_requirements=["torch"]
    )
    return mlflow.pyfunc.load_model(str(path)), raw


def _loaded(predictor, raw: np.ndarray) -> LoadedModel:
    baseline = dict(zip(INPUTS, np.median(raw, axis=0).tolist(), strict=True))
    return LoadedModel(
        name="fraud-detector",
        version="7",
        alias="champion",
        inputs=INPUTS,
        feature_service="fraud_model_v1",
        predictor=predictor,
        baseline=baseline,
    )


def _pyfunc_scores(predictor, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(predictor.predict(frame[INPUTS])).reshape(len(frame), -1)[:, -1]


def test_unwrapped_model_scores_exactly_as_pyfunc(pyfunc_model):
    predictor, raw = pyfunc_model
    model = _loaded(predictor, raw)
    assert model.direct is not None  # the fast path is on for the pytorch flavour
    import torch

    assert isinstance(model.direct, torch.jit.ScriptModule)  # traced and frozen
    frame = pd.DataFrame(raw[:50], columns=INPUTS)
    frame.iloc[3, 2] = np.nan  # a missing feature: the model's own NaN handling applies
    expected = _pyfunc_scores(predictor, frame)
    np.testing.assert_array_equal(model.predict(frame), expected)
    # Columns in another order are put back in the model's order, not scored as given.
    np.testing.assert_array_equal(model.predict(frame[INPUTS[::-1]]), expected)
    np.testing.assert_array_equal(model.predict(frame.to_numpy()), expected)


def test_a_compiled_model_that_scores_differently_is_not_served(pyfunc_model, monkeypatch, caplog):
    import torch

    predictor, raw = pyfunc_model
    real_trace = torch.jit.trace

    class Skewed(torch.nn.Module):  # a compilation that changes the scores a little
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 0.999

    monkeypatch.setattr(torch.jit, "trace", lambda module, x: real_trace(Skewed(module).eval(), x))
    with caplog.at_level("WARNING", logger="serving.model"):
        model = _loaded(predictor, raw)
    assert "scores differ" in caplog.text
    assert model.direct is predictor.get_raw_model()  # the eager module, exact
    frame = pd.DataFrame(raw[:50], columns=INPUTS)
    np.testing.assert_array_equal(model.predict(frame), _pyfunc_scores(predictor, frame))


def test_explain_matches_one_occlusion_per_input(pyfunc_model):
    predictor, raw = pyfunc_model
    model = _loaded(predictor, raw)
    frame = pd.DataFrame(raw[:3], columns=INPUTS)
    base = _pyfunc_scores(predictor, frame)
    explained = model.explain(frame, top=3)
    for i, row in enumerate(explained):
        assert len(row) == 3
        for column, effect in row.items():
            occluded = frame.copy()
            occluded[column] = model.baseline[column]
            expected = base[i] - _pyfunc_scores(predictor, occluded)[i]
            assert effect == pytest.approx(round(float(expected), 6), abs=1e-6)
        magnitudes = [abs(v) for v in row.values()]
        assert magnitudes == sorted(magnitudes, reverse=True)


def test_other_flavours_keep_pyfunc():
    class StandIn:  # no loader_module: not an MLflow pytorch model
        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            return frame["tx_amount"].to_numpy() / 100

    model = LoadedModel("m", "1", "champion", ["tx_amount"], "fraud_model_v1", StandIn())
    assert model.direct is None
    assert model.predict(np.array([[50.0]])).tolist() == [0.5]


# --- features -----------------------------------------------------------------------------


class FakeStore:
    """Answers like FeatureStore.get_online_features(...).to_dict() for fixed rows, for a
    feature service of one view holding every feature of ``online`` (and the on-demand views
    ``on_demand``, each a stand-in with ``name`` and ``transform_dict``)."""

    def __init__(self, online: dict[str, list], on_demand: tuple = ()) -> None:
        self.online = online
        self.on_demand = list(on_demand)
        self.service_lookups = 0
        self.entity_rows: list = []
        self.features: list = []

    def get_feature_service(self, name: str, allow_cache: bool = False) -> object:
        self.service_lookups += 1
        view = SimpleNamespace(
            name="stored",
            name_to_use=lambda: "stored",
            features=[SimpleNamespace(name=c) for c in self.online],
        )
        odfvs = [SimpleNamespace(name=v.name) for v in self.on_demand]
        return SimpleNamespace(name=name, feature_view_projections=[view, *odfvs])

    def list_on_demand_feature_views(self, allow_cache: bool = False) -> list:
        return self.on_demand

    def get_feature_view(self, name: str, allow_registry_cache: bool = False) -> object:
        keys = ("customer_id", "terminal_id")
        return SimpleNamespace(entity_columns=[SimpleNamespace(name=k) for k in keys])

    def get_online_features(self, features: object, entity_rows: object) -> SimpleNamespace:
        self.features.append(features)
        self.entity_rows.append(entity_rows)
        return SimpleNamespace(to_dict=lambda: dict(self.online))


def _tx(i: int, amount: float) -> Transaction:
    when = dt.datetime(2018, 5, 1, 12, 0, i, tzinfo=dt.UTC)
    return Transaction(
        transaction_id=i, customer_id=10 + i, terminal_id=20 + i, tx_amount=amount, tx_datetime=when
    )


ONLINE = {
    "customer_nb_tx_1d_now": [3, 1],
    "customer_avg_amount_7d_now": [55.5, 12.0],
    "customer_seconds_since_prev_tx": [600.0, 2_592_000.0],
    "customer_is_new": [0, 1],
    "terminal_nb_tx_30d": [None, 140],  # first terminal unknown to the online store
    "terminal_risk_7d": [None, 0.25],
    "tx_amount": [99.0, 99.0],  # Feast echoes request data; the transaction's amount wins
}


def test_fetch_builds_the_inputs_in_order_with_defaults_and_flags():
    features.read_plans.clear()
    store = FakeStore(ONLINE)
    batch = fetch(store, "fraud_model_v1", INPUTS, [_tx(0, 10.0), _tx(1, 20.0)])
    assert batch.inputs.columns.tolist() == INPUTS
    assert (batch.inputs.dtypes == "float64").all()
    expected = [
        [10.0, 3, 55.5, 600.0, 0, TERMINAL_DEFAULTS["terminal_nb_tx_30d"], 0.0],
        [20.0, 1, 12.0, 2_592_000.0, 1, 140, 0.25],
    ]
    np.testing.assert_array_equal(batch.inputs.to_numpy(), np.array(expected, dtype=float))
    assert batch.unknown_terminal.tolist() == [True, False]
    assert batch.unknown_customer.tolist() == [False, True]
    assert batch.feature_age_seconds == [600.0, None]
    # One read of the service's views, keyed by their join keys only.
    assert store.entity_rows == [{"customer_id": [10, 11], "terminal_id": [20, 21]}]
    assert store.features == [[f"stored:{c}" for c in ONLINE]]


def test_on_demand_views_see_the_read_and_the_request_and_add_their_features():
    features.read_plans.clear()
    seen: list[dict] = []

    def transform_dict(inputs: dict) -> dict:
        seen.append(dict(inputs))
        return {"terminal_risk_7d": [0.5, 0.75]}

    online = {k: v for k, v in ONLINE.items() if k != "terminal_risk_7d"}
    source = SimpleNamespace(
        name_to_use=lambda: "stored", features=[SimpleNamespace(name="customer_nb_tx_1d_now")]
    )
    view = SimpleNamespace(
        name="on_demand",
        transform_dict=transform_dict,
        source_feature_view_projections={"stored": source},
    )
    batch = fetch(
        FakeStore(online, (view,)), "fraud_model_v1", INPUTS, [_tx(0, 10.0), _tx(1, 20.0)]
    )
    assert batch.inputs["terminal_risk_7d"].tolist() == [0.5, 0.75]
    # The request-time inputs beside the stored features.
    assert seen[0]["transaction_id"] == [0, 1]
    assert seen[0]["tx_amount"] == [10.0, 20.0]
    assert seen[0]["tx_unix_seconds"] == [1525176000, 1525176001]
    assert seen[0]["customer_nb_tx_1d_now"] == [3, 1]


def test_missing_non_terminal_feature_stays_nan():
    features.read_plans.clear()
    online = {**ONLINE, "customer_avg_amount_7d_now": [None, 12.0]}
    batch = fetch(FakeStore(online), "fraud_model_v1", INPUTS, [_tx(0, 10.0), _tx(1, 20.0)])
    assert np.isnan(batch.inputs["customer_avg_amount_7d_now"].iloc[0])


def test_feature_service_is_resolved_once_per_cache_period(monkeypatch):
    features.read_plans.clear()
    store = FakeStore(ONLINE)
    for _ in range(5):
        fetch(store, "fraud_model_v1", INPUTS, [_tx(0, 10.0), _tx(1, 20.0)])
    assert store.service_lookups == 1
    monkeypatch.setattr(features, "SERVICE_CACHE_SECONDS", 0.0)
    features.read_plans.clear()
    for _ in range(3):
        fetch(store, "fraud_model_v1", INPUTS, [_tx(0, 10.0), _tx(1, 20.0)])
    assert store.service_lookups == 4  # expired every time: looked up again


def test_a_service_without_a_model_input_is_an_error():
    features.read_plans.clear()
    online = {k: v for k, v in ONLINE.items() if k != "terminal_risk_7d"}
    with pytest.raises(RuntimeError, match="terminal_risk_7d"):
        fetch(FakeStore(online), "fraud_model_v1", INPUTS, [_tx(0, 10.0), _tx(1, 20.0)])


def test_records_equal_pandas_records():
    frame = pd.DataFrame([[1.5, np.nan], [2.0, 3.25]], columns=["a", "b"])
    batch = FeatureBatch(frame, np.zeros(2, bool), np.zeros(2, bool), [None, None])
    records = batch.records()
    expected = frame.to_dict("records")
    assert [r["a"] for r in records] == [r["a"] for r in expected]
    assert records[1] == expected[1] and np.isnan(records[0]["b"])
    assert all(type(v) is float for r in records for v in r.values())
