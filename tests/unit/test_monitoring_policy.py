"""PSI, the column severities, the decision policy and the retrain dedup rules."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from pipelines.monitoring import retrain
from pipelines.monitoring.drift import (
    ColumnDrift,
    QualityIssue,
    categorical_shares,
    compare_profiles,
    numeric_bin_shares,
    psi,
    quality_issues,
)
from pipelines.monitoring.policy import (
    MonitorDecision,
    decide,
    judge_columns,
    performance_severity,
    psi_band,
)
from pipelines.monitoring.profiles import profile_frame
from pipelines.monitoring.scores import DriftScores, PerformanceCheck, alert_key

DAY = dt.date(2018, 5, 20)


def column(
    name: str = "tx_amount",
    *,
    psi_value: float = 0.0,
    shift: float = 0.0,
    p: float = 0.5,
    rows: int = 600,
    policy: bool = True,
    kind: str = "transactions",
) -> ColumnDrift:
    drift = ColumnDrift(
        kind=kind,
        column=name,
        column_kind="numeric",
        test="ks",
        p_value=p,
        statistic=shift,
        psi=psi_value,
        shift=shift,
        hellinger=None,
        rows=rows,
        reference_rows=4000,
        policy=policy,
    )
    return judge_columns([drift])[0]


# --- PSI ----------------------------------------------------------------------------------


def test_psi_of_identical_shares_is_zero():
    assert psi([0.1] * 10, [0.1] * 10) == 0.0


def test_psi_matches_the_textbook_formula():
    expected = np.array([0.25, 0.25, 0.25, 0.25])
    actual = np.array([0.10, 0.20, 0.30, 0.40])
    by_hand = sum((a - e) * math.log(a / e) for a, e in zip(actual, expected, strict=True))
    assert psi(expected, actual) == pytest.approx(by_hand)
    assert psi(expected, actual) == pytest.approx(0.2282, abs=1e-4)


def test_psi_is_symmetric_and_finite_with_empty_bins():
    e, a = [0.5, 0.5, 0.0], [0.4, 0.4, 0.2]
    assert psi(e, a) == pytest.approx(psi(a, e))
    assert math.isfinite(psi(e, a))
    assert psi(e, a) > 0.2  # a new bin holding 20 % is a large change


def test_psi_refuses_different_binnings():
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1.0])


@pytest.mark.parametrize(
    ("value", "band"),
    [(0.0, "none"), (0.099, "none"), (0.1, "warning"), (0.2, "warning"), (0.21, "critical")],
)
def test_psi_bands(value, band):
    assert psi_band(value) == band


def test_psi_from_profiles_agrees_with_psi_on_the_raw_data():
    rng = np.random.default_rng(1)
    reference = rng.lognormal(3.5, 0.6, 800)
    target = rng.lognormal(3.8, 0.6, 800)
    ref_shares, target_shares = numeric_bin_shares(
        profile_frame(pd.DataFrame({"x": target})).get_column("x"),
        profile_frame(pd.DataFrame({"x": reference})).get_column("x"),
    )
    # Below the KLL sketch's capacity (1024) the sketch is exact: same bins, same shares.
    edges = np.unique(np.quantile(reference, np.arange(1, 10) / 10, method="inverted_cdf"))
    bins = np.r_[-np.inf, edges, np.inf]
    raw_ref = np.histogram(reference, bins)[0] / len(reference)
    raw_target = np.histogram(target, bins)[0] / len(target)
    assert ref_shares == pytest.approx(raw_ref, abs=0.01)
    assert psi(ref_shares, target_shares) == pytest.approx(psi(raw_ref, raw_target), rel=0.1)
    assert psi(ref_shares, target_shares) > 0.2


def test_categorical_shares_cover_new_and_vanished_values():
    ref = profile_frame(pd.DataFrame({"d": ["approve"] * 90 + ["review"] * 10}))
    target = profile_frame(pd.DataFrame({"d": ["approve"] * 70 + ["block"] * 30}))
    r, t = categorical_shares(target.get_column("d"), ref.get_column("d"))
    assert r.sum() == pytest.approx(1.0) and t.sum() == pytest.approx(1.0)
    assert psi(r, t) > 0.2


def test_compare_profiles_flags_a_shift_and_not_noise():
    rng = np.random.default_rng(2)
    reference = profile_frame(
        pd.DataFrame({"amount": rng.normal(50, 15, 3000), "night": rng.random(3000) < 0.18})
    )
    same = profile_frame(
        pd.DataFrame({"amount": rng.normal(50, 15, 600), "night": rng.random(600) < 0.18})
    )
    moved = profile_frame(
        pd.DataFrame({"amount": rng.normal(65, 15, 600), "night": rng.random(600) < 0.40})
    )
    assert {c.severity for c in compare_profiles("transactions", moved, reference)} == {None}
    calm = {c.column: c for c in judge_columns(compare_profiles("transactions", same, reference))}
    hot = {c.column: c for c in judge_columns(compare_profiles("transactions", moved, reference))}
    assert {c.severity for c in calm.values()} == {"none"}
    assert hot["amount"].severity == "critical" and hot["amount"].test == "ks"
    assert hot["night"].column_kind == "categorical" and hot["night"].test == "chi-square"
    assert hot["night"].severity == "critical"
    assert hot["night"].shift == pytest.approx(0.22, abs=0.05)  # the rate moved ~0.18 -> ~0.40


def test_quality_issues_see_schema_changes_and_missing_values():
    reference = profile_frame(pd.DataFrame({"a": [1.0, 2.0, 3.0] * 50, "b": [1, 2, 3] * 50}))
    target = profile_frame(pd.DataFrame({"a": [1.0, None, None] * 50, "c": ["x", "y", "z"] * 50}))
    issues = {
        (q.column, q.issue)
        for q in quality_issues("transactions", target, reference, missing_rate_rise=0.02)
    }
    assert issues == {("b", "missing_column"), ("c", "new_column"), ("a", "missing_values")}


# --- column severity ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("psi_value", "shift", "p", "rows", "severity"),
    [
        (0.35, 0.09, 1e-9, 600, "critical"),  # large and real
        (0.35, 0.09, 0.02, 600, "none"),  # large but could be noise at this size
        (0.15, 0.03, 1e-5, 600, "warning"),  # PSI warning band, real
        (0.06, 0.094, 2.9e-4, 600, "warning"),  # small PSI, but 9 % of the mass moved
        (0.005, 0.007, 6e-5, 600, "none"),  # certain but negligible (large-sample noise)
        (0.5, 0.3, 1e-12, 50, "none"),  # too few rows to judge
    ],
)
def test_column_severity(psi_value, shift, p, rows, severity):
    assert column(psi_value=psi_value, shift=shift, p=p, rows=rows).severity == severity


# --- decide -------------------------------------------------------------------------------


def test_no_alert_continues():
    decision = decide(DriftScores(DAY, columns=[column(), column("tx_hour")]))
    assert decision.action == "continue" and decision.drifted_columns == ()


def test_a_critical_policy_column_retrains():
    scores = DriftScores(
        DAY,
        columns=[
            column(),
            column("customer_terminal_is_new", psi_value=1.2, shift=0.25, p=0.0),
        ],
    )
    decision = decide(scores)
    assert decision.action == "retrain"
    assert decision.drifted_columns == ("customer_terminal_is_new",)
    assert "critical-column" in decision.rules


def test_a_critical_column_outside_the_policy_does_not_retrain():
    weekend = column("tx_during_weekend", psi_value=7.4, shift=0.7, p=0.0, policy=False)
    assert decide(DriftScores(DAY, columns=[weekend])).action == "continue"


def test_one_warning_warns_and_the_same_warning_next_day_retrains():
    ratio = column("customer_amount_ratio_30d", psi_value=0.08, shift=0.094, p=2.9e-4)
    assert ratio.severity == "warning"
    first = decide(DriftScores(DAY, columns=[ratio]))
    assert first.action == "warn" and first.drifted_columns == ("customer_amount_ratio_30d",)
    yesterday = frozenset({alert_key("transactions", "customer_amount_ratio_30d")})
    second = decide(DriftScores(DAY, columns=[ratio], previous_alerts=yesterday))
    assert second.action == "retrain" and second.rules == ("persistent-warning",)
    # A warning on another column yesterday is no persistence.
    other = frozenset({alert_key("transactions", "tx_amount")})
    assert decide(DriftScores(DAY, columns=[ratio], previous_alerts=other)).action == "warn"


def test_data_quality_warns_but_never_retrains():
    issue = QualityIssue("transactions", "tx_amount", "missing_values", 0.3, 0.0, "30 % missing")
    decision = decide(DriftScores(DAY, columns=[column()], quality=[issue]))
    assert decision.action == "warn" and decision.rules == ("data-quality",)


def _performance(metric: str, current: float, champion: float) -> PerformanceCheck:
    degradation = (champion - current) / champion
    return PerformanceCheck(
        metric,
        current,
        champion,
        degradation,
        DAY - dt.timedelta(days=13),
        DAY - dt.timedelta(days=7),
        4000,
        60,
        severity=performance_severity(metric, degradation),
    )


def test_performance_degradation_of_the_promotion_metric_retrains():
    ok = _performance("average_precision", 0.60, 0.62)  # 3 % worse: within tolerance
    assert decide(DriftScores(DAY, performance=[ok])).action == "continue"
    bad = _performance("average_precision", 0.55, 0.62)  # 11 % worse
    decision = decide(DriftScores(DAY, performance=[bad]))
    assert decision.action == "retrain" and decision.rules == ("performance",)
    auc = _performance("roc_auc", 0.80, 0.90)  # not the promotion metric: warn
    assert decide(DriftScores(DAY, performance=[auc])).action == "warn"


def test_scores_and_decisions_survive_json():
    import json

    scores = DriftScores(
        DAY,
        columns=[column("tx_amount", psi_value=0.3, shift=0.1, p=1e-6)],
        quality=[QualityIssue("predictions", "x", "missing_column", None, None, "gone")],
        performance=[_performance("roc_auc", 0.8, 0.9)],
        previous_alerts=frozenset({"transactions/tx_hour"}),
        notes=["n"],
    )
    again = DriftScores.from_dict(json.loads(json.dumps(scores.to_dict())))
    assert again == scores
    decision = decide(scores)
    assert MonitorDecision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision


# --- retrain dedup ------------------------------------------------------------------------


def test_run_id_is_one_per_monitored_interval():
    assert retrain.retrain_run_id(DAY) == retrain.retrain_run_id(DAY)  # a rerun: same id
    assert retrain.retrain_run_id(DAY) != retrain.retrain_run_id(DAY + dt.timedelta(days=1))


def test_cooldown_covers_today_and_the_previous_days():
    now = dt.datetime(2018, 5, 21, 14, 30, tzinfo=dt.UTC)
    assert retrain.trigger_logical_date(now) == dt.datetime(2018, 5, 21, tzinfo=dt.UTC)
    assert retrain.cooldown_logical_dates(now, 3) == [
        dt.datetime(2018, 5, d, tzinfo=dt.UTC) for d in (21, 20, 19)
    ]
    with pytest.raises(ValueError):
        retrain.cooldown_logical_dates(now, 0)


def test_trigger_verdict():
    assert retrain.trigger_verdict(0, 0, 7).trigger
    assert not retrain.trigger_verdict(1, 0, 7).trigger  # queued or running
    assert not retrain.trigger_verdict(0, 1, 7).trigger  # within the cooldown
    # Before the first champion, bootstrap training owns the first model.
    assert not retrain.trigger_verdict(
        0, 0, 7, champion_exists=False, bootstrap_training=True
    ).trigger
    assert retrain.trigger_verdict(0, 0, 7, champion_exists=False, bootstrap_training=False).trigger
    assert retrain.trigger_verdict(0, 0, 7, champion_exists=True, bootstrap_training=True).trigger


class Ledger:
    """What the retrain task sees of train_model runs: run id -> logical date."""

    def __init__(self) -> None:
        self.runs: dict[str, dt.datetime] = {}

    def retrain(self, day: dt.date, now: dt.datetime, cooldown_days: int = 7) -> bool:
        recent = [
            d for d in self.runs.values() if d in retrain.cooldown_logical_dates(now, cooldown_days)
        ]
        if not retrain.trigger_verdict(0, len(recent), cooldown_days).trigger:
            return False
        run_id = retrain.retrain_run_id(day)
        if run_id in self.runs:  # Airflow refuses an existing run id: skipped
            return False
        self.runs[run_id] = retrain.trigger_logical_date(now)
        return True


def test_a_storm_of_retrain_decisions_triggers_once():
    ledger = Ledger()
    now = dt.datetime(2018, 6, 1, 9, tzinfo=dt.UTC)
    # A backfill: ten drifted days monitored within minutes, then every one rerun.
    days = [DAY + dt.timedelta(days=i) for i in range(10)]
    started = [ledger.retrain(d, now + dt.timedelta(minutes=i)) for i, d in enumerate(days * 2)]
    assert started.count(True) == 1


def test_daily_retrain_decisions_train_once_per_cooldown():
    ledger = Ledger()
    started = []
    for i in range(15):  # drift every day; the monitor runs each morning
        day = DAY + dt.timedelta(days=i)
        now = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1), dt.UTC)
        if ledger.retrain(day, now):
            started.append(day)
    assert started == [DAY, DAY + dt.timedelta(days=7), DAY + dt.timedelta(days=14)]
    # A rerun of a triggered interval after its cooldown still never trains twice.
    assert not ledger.retrain(DAY, dt.datetime(2018, 7, 1, tzinfo=dt.UTC))


def test_retrain_conf_carries_reason_columns_and_window():
    conf = retrain.retrain_conf(DAY, ["critical drift: x", "y"], ["x"], 7)
    assert conf["reason"].startswith("drift 2018-05-20: critical drift: x (+1 more)")
    assert conf["drifted_columns"] == ["x"]
    assert conf["window"]["labelled_until"] == "2018-05-13"


def test_the_drift_a_training_answers_comes_from_the_monitors_conf_only():
    conf = retrain.retrain_conf(DAY, ["critical drift: x"], ["x", "y"], 7)
    assert retrain.drift_of_conf(conf) == retrain.DriftAnswered(DAY, ("x", "y"))
    # A manual or bootstrap run answers no drift.
    assert retrain.drift_of_conf({"reason": "manual", "test_end": "2018-05-20"}) is None
    assert retrain.drift_of_conf(None) is None


@pytest.mark.parametrize(
    ("alert", "drifted"),
    [
        (dt.date(2018, 5, 14), 0),  # after the training window: nothing of the drift learned
        (dt.date(2018, 5, 13), 1),  # its last day
        (dt.date(2018, 5, 10), 4),
        (dt.date(2018, 4, 1), 7),  # before it: every training day is drifted
    ],
)
def test_drift_lineage_counts_the_training_days_from_the_alert_on(alert, drifted):
    from pipelines.contracts import DRIFTED_TRAINING_DAYS_TAG, WINDOW_CONTAINS_DRIFT_TAG
    from pipelines.protocol import SplitWindows
    from pipelines.training.train import drift_lineage_tags

    windows = SplitWindows.starting(
        dt.date(2018, 5, 7), train_days=7, delay_days=7, test_days=7
    )  # training 05-07..05-13
    tags = drift_lineage_tags(retrain.DriftAnswered(alert, ("tx_amount",)), windows)
    assert tags[DRIFTED_TRAINING_DAYS_TAG] == str(drifted)
    assert tags[WINDOW_CONTAINS_DRIFT_TAG] == ("true" if drifted else "false")
    assert drift_lineage_tags(None, windows) == {}


PLAN = {"delay_days": 7, "test_days": 7, "drifted_days": 3}


def test_label_aware_schedules_an_input_drift_for_when_its_labels_cover_a_training_window():
    from pipelines.protocol import SplitWindows

    plan = retrain.plan_retrain("label-aware", DAY, ("critical-column",), **PLAN)
    assert not plan.now(DAY) and plan.on == DAY + dt.timedelta(days=2 + 14 + 7)
    # On that day the protocol's split (test period ending on the newest labelled day) trains
    # on exactly 3 days from the alert on; a day earlier, on 2.
    for on, drifted in ((plan.on, 3), (plan.on - dt.timedelta(days=1), 2)):
        split = SplitWindows.ending(
            on - dt.timedelta(days=7), train_days=7, delay_days=7, test_days=7
        )
        assert (split.train_end - DAY).days + 1 == drifted
    assert plan.now(plan.on)


def test_label_aware_retrains_now_on_a_labelled_performance_drop():
    plan = retrain.plan_retrain("label-aware", DAY, ("critical-column", "performance"), **PLAN)
    assert plan.now(DAY) and "performance" in plan.reason


def test_an_alert_storm_keeps_the_one_scheduled_retrain():
    first = retrain.plan_retrain("label-aware", DAY, ("critical-column",), **PLAN)
    later = [
        retrain.plan_retrain(
            "label-aware",
            DAY + dt.timedelta(days=i),
            ("persistent-warning",),
            **PLAN,
            scheduled=first.on,
        )
        for i in range(1, 10)
    ]
    assert {p.on for p in later} == {first.on}


def test_first_alert_retrains_on_the_day_of_any_alert():
    assert retrain.plan_retrain("first-alert", DAY, ("critical-column",), **PLAN).now(DAY)
