"""The experiment analysis end to end on its real inputs and outputs: a prediction log written
by the service's log writer, labels in the dbt mart, the MLflow registry (SQLite) whose aliases
a decision moves, the JSON record and the CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from pipelines import contracts
from pipelines.experiment.analysis import analyze
from pipelines.experiment.cli import experiment_app
from pipelines.experiment.statistics import AnalysisConfig
from pipelines.registry import promotion, tracking, versions
from serving.prediction_log import PredictionLog
from tests.mart_export import write_mart
from tests.unit.test_experiment_analysis import simulate

CONFIG = AnalysisConfig(n_bootstrap=300)
LAST_DAY = dt.date(2024, 5, 10)


def _versions(settings, n: int) -> list[str]:
    return [
        versions.register_version(settings, f"file:///nowhere/model-{i}", None, {"i": i})
        for i in range(n)
    ]


def _aliases(settings) -> dict[str, str]:
    model = tracking.client(settings).get_registered_model(settings.model_name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def _write_experiment(settings, frame: pd.DataFrame, versions: dict[str, str]) -> None:
    """The frame as the service logs it (through its log writer) plus its labels in the mart."""
    frame = frame.copy()
    frame["model_version"] = frame["model_version"].map(versions)
    frame["shadow_model_version"] = frame["shadow_model_version"].map(versions)
    seconds = pd.to_timedelta(frame["transaction_id"] % 86_000, unit="s")
    frame["tx_datetime"] = pd.to_datetime(frame["tx_day"]).dt.tz_localize("UTC") + seconds
    frame["request_time"] = frame["tx_datetime"]
    frame["terminal_id"] = 1
    frame["tx_amount"] = 10.0
    frame["decision"] = "approve"
    frame["unknown_customer"] = frame["unknown_terminal"] = False
    prediction_log = PredictionLog(settings.predictions_dir, flush_seconds=3600)
    rows = frame.drop(columns=["tx_fraud", "tx_day"]).to_dict("records")
    for row in rows:
        row["tx_datetime"] = row["tx_datetime"].to_pydatetime()
        row["request_time"] = row["request_time"].to_pydatetime()
    prediction_log.append(rows)
    prediction_log.close()
    # The labels as the mart holds them once they have arrived (what read_labels reads).
    mart_rows = pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"].astype("int64"),
            "tx_datetime": frame["tx_datetime"],
            "customer_id": frame["customer_id"].astype("int64"),
            "tx_fraud": frame["tx_fraud"].astype("Int64"),
        }
    )
    write_mart(settings, pa.Table.from_pandas(mart_rows, preserve_index=False))


def test_ship_promotes_the_challenger_records_it_and_can_be_rolled_back(settings):
    old, new = _versions(settings, 2)
    client = tracking.client(settings)
    client.set_registered_model_alias(settings.model_name, contracts.CHAMPION_ALIAS, old)
    client.set_registered_model_alias(settings.model_name, contracts.CHALLENGER_ALIAS, new)
    frame = simulate("shadow", 1.0, 2.0, n_customers=1500)
    _write_experiment(settings, frame, {"1": old, "2": new})

    # A dry run from the CLI decides without touching the registry.
    out = CliRunner().invoke(
        experiment_app,
        ["analyze", "--day", LAST_DAY.isoformat(), "--window-days", "10", "--dry-run", "--json"],
    )
    assert out.exit_code == 0, out.output
    dry = json.loads(out.output)
    assert dry["decision"] == "ship" and dry["mode"] == "shadow"
    assert dry["arms"]["control"]["labelled"] == len(frame)  # every label arrived and joined
    assert _aliases(settings) == {"champion": old, "challenger": new}

    result = analyze(settings, LAST_DAY, 10, config=CONFIG)
    assert result.decision == "ship", result.reasons
    assert _aliases(settings) == {"champion": new, "previous_champion": old}
    recorded = json.loads(Path(result.record).read_text())
    assert recorded["decision"] == "ship" and recorded["action"].startswith("promoted")
    tags = client.get_model_version(settings.model_name, new).tags
    assert tags["experiment_decision"] == "ship" and tags["gate_decision"] == "champion"
    assert float(tags["experiment_ap_difference"]) > 0
    # One alias move: the gate's rollback undoes it.
    assert promotion.rollback(settings, "experiment regret") == (new, old)
    # Without a challenger there is nothing to analyse.
    assert analyze(settings, LAST_DAY, 10, config=CONFIG) is None


def test_kill_removes_the_challenger_alias(settings):
    old, new = _versions(settings, 2)
    client = tracking.client(settings)
    client.set_registered_model_alias(settings.model_name, contracts.CHAMPION_ALIAS, old)
    client.set_registered_model_alias(settings.model_name, contracts.CHALLENGER_ALIAS, new)
    _write_experiment(settings, simulate("ab", 2.0, 1.0), {"1": old, "2": new})
    result = analyze(settings, LAST_DAY, 10, config=CONFIG)
    assert result.decision == "kill" and result.mode == "ab", result.reasons
    assert _aliases(settings) == {"champion": old}
    tags = client.get_model_version(settings.model_name, new).tags
    assert tags["experiment_decision"] == "kill"
    assert "experiment_treatment_average_precision" in tags


@pytest.mark.parametrize("window_days", [1])
def test_a_window_without_labels_is_iterate_and_changes_nothing(settings, window_days):
    old, new = _versions(settings, 2)
    client = tracking.client(settings)
    client.set_registered_model_alias(settings.model_name, contracts.CHAMPION_ALIAS, old)
    client.set_registered_model_alias(settings.model_name, contracts.CHALLENGER_ALIAS, new)
    result = analyze(settings, LAST_DAY + dt.timedelta(days=30), window_days, config=CONFIG)
    assert result.decision == "iterate" and "nothing" in result.reasons[0]
    assert _aliases(settings) == {"champion": old, "challenger": new}
