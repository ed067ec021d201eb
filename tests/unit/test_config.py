import datetime as dt

from pipelines.config import load_settings
from pipelines.lake import utc_today
from pipelines.platform.runtime import initialise


def test_defaults_are_the_handbook_world(monkeypatch, tmp_path):
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))
    for var in ("FRAUD_N_CUSTOMERS", "FRAUD_N_TERMINALS", "FRAUD_HISTORY_START", "FRAUD_SEED"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert (s.n_customers, s.n_terminals, s.terminal_radius, s.label_delay_days) == (
        5_000,
        10_000,
        5.0,
        7,
    )
    assert s.data_dir == tmp_path.resolve() / "data"
    assert s.raw_transactions_dir == tmp_path.resolve() / "data/lake/raw/transactions"
    assert s.drift_spending_from is None and s.drift_geo_from is None


def test_environment_overrides_every_kind_of_value(make_settings, tmp_path):
    s = make_settings(seed=7, n_customers=42, drift_geo_from="2018-05-01", data_dir=tmp_path / "x")
    assert s.seed == 7 and s.n_customers == 42
    assert s.drift_geo_from == dt.date(2018, 5, 1)
    assert s.data_dir == tmp_path / "x"


def test_first_start_pins_history_start_once(make_settings, monkeypatch):
    s = make_settings(history_days=10)
    monkeypatch.delenv("FRAUD_HISTORY_START")
    s = load_settings()
    assert s.history_start is None
    pinned = initialise(s)
    assert pinned.history_start == utc_today() - dt.timedelta(days=10)
    # A second start keeps the pin even if the window setting changes.
    monkeypatch.setenv("FRAUD_HISTORY_DAYS", "3")
    again = initialise(load_settings())
    assert again.history_start == pinned.history_start
    assert pinned.runtime_env_file.read_text().count("FRAUD_HISTORY_START") == 1


def test_first_start_pins_today_as_the_first_live_day_once(make_settings, monkeypatch):
    s = make_settings()
    monkeypatch.delenv("FRAUD_LIVE_START", raising=False)
    pinned = initialise(load_settings())
    today = utc_today()
    assert pinned.live_start == today
    assert pinned.is_live(today) and not pinned.is_live(today - dt.timedelta(days=1))
    initialise(load_settings())
    assert s.runtime_env_file.read_text().count("FRAUD_LIVE_START") == 1


def test_without_live_traffic_every_day_is_simulated(make_settings, monkeypatch):
    make_settings(live_traffic=False)
    monkeypatch.delenv("FRAUD_LIVE_START", raising=False)
    settings = initialise(load_settings())
    assert settings.live_start is None
    assert not settings.is_live(utc_today() + dt.timedelta(days=365))


def test_first_start_creates_the_embedded_tracking_store(settings):
    from pipelines.registry import tracking

    assert not settings.mlflow_dir.exists()
    initialise(settings)
    # Schema and experiment exist before any service opens the store (no creation race).
    experiment = tracking.client(settings).get_experiment_by_name(settings.mlflow_experiment)
    assert experiment is not None
    assert experiment.artifact_location == (settings.mlflow_dir / "artifacts").as_uri()


def test_the_configuration_reference_is_generated_from_the_settings_and_current():
    from pipelines.config import REFERENCE_DOC, Settings, settings_reference

    reference = settings_reference()
    assert all(f"`FRAUD_{name.upper()}`" in reference for name in Settings.model_fields)
    assert all(field.description for field in Settings.model_fields.values())
    # Out of date: run `python -m pipelines.config` to regenerate it.
    assert reference in REFERENCE_DOC.read_text()
