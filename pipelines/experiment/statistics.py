"""The experiment's statistics: per-arm metrics, the customer bootstrap and the decision.

Pure functions of a frame of prediction-log rows joined with their labels (``analysis.py``
reads them, acts on the decision and records it): no I/O, no registry, no settings. The only
project import is ``pipelines.metrics``: the handbook's AP and CP@k, and the draw of cards.

Which rows count:

* **A/B** (``variant`` column): control = rows decided by the champion version for control
  customers; treatment = rows decided by the challenger version for treatment customers. The
  arms hold different customers: the comparison is *unpaired*.
* **shadow** (``shadow_model_version`` = the challenger): every row has both scores, the
  champion's (``fraud_probability``) and the challenger's (``shadow_probability``), for the same
  transaction: the comparison is *paired*, hence far more sensitive for the same traffic.

Per arm: average precision (AP, the decision metric, as the promotion gate), CP@k (the
handbook's card precision; in A/B ``k`` is scaled to the arm's share of customers so a 10 %
arm is not judged on a top-100 of a population ten times smaller), latency p95 of the model
(features + prediction) and the challenger's error rate (requests where it failed and the
champion stepped in).

Significance: a bootstrap over *customers* (a card's transactions are not independent; frauds
come in bursts per compromised card), seeded, of AP(treatment) - AP(champion); paired in shadow
mode (one draw of customers scores both models), unpaired in A/B (each arm drawn on its own).
The ``1 - alpha`` percentile interval decides.

Decision, in this order:

1. a guardrail fails (challenger error rate above ``max_error_rate``; its latency p95 above
   ``max_latency_ratio`` x the champion's + ``latency_slack_ms``) -> **kill**;
2. fewer than ``min_labelled`` labelled predictions or ``min_frauds`` frauds in an arm ->
   **iterate** (keep collecting);
3. the interval of the AP difference lies above 0 -> **ship**; below 0 -> **kill**;
   otherwise -> **iterate** (indistinguishable so far).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipelines.metrics import average_precision, card_draw_weights, card_precision_at_k

ExperimentDecision = Literal["ship", "iterate", "kill"]
Mode = Literal["ab", "shadow"]
CONTROL, TREATMENT = "control", "treatment"


@dataclass(frozen=True)
class AnalysisConfig:
    """Thresholds of the analysis (``analysis.config_from_settings`` fills it from settings)."""

    alpha: float = 0.05
    min_labelled: int = 200
    min_frauds: int = 10  # AP and CP@k of fewer frauds are noise
    n_bootstrap: int = 1000
    seed: int = 0
    card_k: int = 100
    max_error_rate: float = 0.01
    max_latency_ratio: float = 1.5
    latency_slack_ms: float = 2.0  # sub-millisecond p95s differ by scheduling noise alone
    min_guardrail_rows: int = 50


@dataclass(frozen=True)
class ArmStats:
    variant: str
    model_version: str
    rows: int  # predictions in the window (labelled or not)
    labelled: int
    frauds: int
    customers: int
    average_precision: float | None
    card_precision_at_k: float | None
    k: int
    latency_p95_ms: float | None
    error_rate: float | None  # the challenger's only (the champion's errors fail requests)


@dataclass(frozen=True)
class Guardrail:
    name: str
    value: float | None
    limit: float | None
    passed: bool
    note: str


@dataclass(frozen=True)
class Difference:
    metric: str
    observed: float
    ci_low: float
    ci_high: float
    p_value: float
    paired: bool
    n_bootstrap: int


@dataclass
class ExperimentResult:
    decision: ExperimentDecision
    reasons: list[str]
    mode: Mode | None
    champion_version: str
    challenger_version: str
    first_day: str | None = None
    last_day: str | None = None
    arms: dict[str, ArmStats] = field(default_factory=dict)
    difference: Difference | None = None
    guardrails: list[Guardrail] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    action: str | None = None  # what analysis.apply_result did
    record: str | None = None  # where analysis.record wrote it
    analysed_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the bootstrap ---------------------------------------------------------------------------


class _SortedScores:
    """One score column sorted once, so each bootstrap draw is a weighted cumsum (O(n)).

    Not ``pipelines.metrics.average_precision`` (which the observed and per-arm APs use): that
    one has no row weights. Feeding it the rows repeated by their bootstrap counts is the same
    metric (``test_weighted_average_precision_equals_the_protocol_metric``; with weights of 1
    the two are bitwise equal) but re-sorts every draw (~7x slower) and, because the sum here
    also holds the zero terms of score blocks a draw left out, differs in the last bit on about
    half of the draws, which moves the persisted interval bounds in their last digits.
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:

        self.order = np.argsort(-scores, kind="mergesort")
        self.y = labels[self.order].astype("float64")
        s = scores[self.order]
        # Last index of each block of equal scores: ties form one point, as in metrics.py.
        self.last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]

    def average_precision(self, weights: np.ndarray) -> float:
        """AP with row weights (bootstrap counts); weights of 1 give metrics.average_precision."""

        w = weights[self.order]
        true_pos = np.cumsum(w * self.y)[self.last]
        seen = np.cumsum(w)[self.last]
        positives = true_pos[-1]
        if positives <= 0:
            return float("nan")
        precision = np.divide(true_pos, seen, out=np.zeros_like(true_pos), where=seen > 0)
        recall_step = np.diff(np.r_[0.0, true_pos]) / positives
        return float(np.sum(recall_step * precision))


def bootstrap_difference(
    control: pd.DataFrame,
    treatment: pd.DataFrame,
    *,
    paired: bool,
    alpha: float,
    n_bootstrap: int,
    seed: int,
) -> Difference:
    """AP(treatment) - AP(control), with a customer-cluster bootstrap interval.

    ``paired``: the two frames are the same rows (shadow), one draw weights both; otherwise
    each arm is drawn independently (A/B). Frames: customer_id, tx_fraud, score.
    """

    rng = np.random.default_rng(seed)
    observed = average_precision(treatment["tx_fraud"], treatment["score"]) - average_precision(
        control["tx_fraud"], control["score"]
    )

    def prepared(frame: pd.DataFrame) -> tuple[_SortedScores, np.ndarray, int]:
        codes, uniques = pd.factorize(frame["customer_id"])
        y = frame["tx_fraud"].to_numpy("int64")
        return _SortedScores(y, frame["score"].to_numpy("float64")), codes, len(uniques)

    c_sorted, c_codes, c_n = prepared(control)
    t_sorted, t_codes, t_n = prepared(treatment)
    diffs = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        c_w = card_draw_weights(c_codes, c_n, rng).astype("float64")
        t_w = c_w if paired else card_draw_weights(t_codes, t_n, rng).astype("float64")
        diffs[b] = t_sorted.average_precision(t_w) - c_sorted.average_precision(c_w)
    diffs = diffs[np.isfinite(diffs)]
    low, high = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    # Two-sided bootstrap p-value: how often the resampled difference crosses zero.
    p_value = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return Difference(
        "average_precision",
        float(observed),
        float(low),
        float(high),
        float(p_value),
        paired,
        int(diffs.size),
    )


# --- the arms --------------------------------------------------------------------------------


def _p95(values: pd.Series) -> float | None:
    values = values.dropna().astype("float64")
    return float(values.quantile(0.95)) if len(values) else None


def _arm(
    variant: str,
    version: str,
    rows: pd.DataFrame,
    score_column: str,
    latency_column: str,
    k: int,
    error_rate: float | None,
) -> tuple[ArmStats, pd.DataFrame]:
    """The arm's statistics and its scored rows (tx_day, customer_id, tx_fraud, score)."""

    labelled = rows[rows["tx_fraud"].notna() & rows[score_column].notna()]
    scored = labelled.assign(
        tx_fraud=labelled["tx_fraud"].astype("int64"),
        score=labelled[score_column].astype("float64"),
    )[["tx_day", "customer_id", "tx_fraud", "score"]]
    frauds = int(scored["tx_fraud"].sum())
    ap = cp = None
    if frauds > 0:
        ap = average_precision(scored["tx_fraud"], scored["score"])
        cp = card_precision_at_k(
            scored["tx_day"].tolist(),
            scored["customer_id"].astype("int64").tolist(),
            scored["tx_fraud"].tolist(),
            scored["score"].tolist(),
            k,
        )
    stats = ArmStats(
        variant=variant,
        model_version=version,
        rows=len(rows),
        labelled=len(scored),
        frauds=frauds,
        customers=int(rows["customer_id"].nunique()),
        average_precision=ap,
        card_precision_at_k=cp,
        k=k,
        latency_p95_ms=_p95(rows[latency_column]),
        error_rate=error_rate,
    )
    return stats, scored


Arms = tuple[ArmStats, ArmStats, "pd.DataFrame", "pd.DataFrame"]  # control, treatment, scored


def _shadow_arms(frame: pd.DataFrame, champ: str, chall: str, config: AnalysisConfig) -> Arms:
    """Both scores of the same transactions: the champion's decided, the challenger's logged."""
    version = frame["model_version"].astype("string")
    rows = frame[(version == champ) & (frame["shadow_model_version"].astype("string") == chall)]
    failed = rows["challenger_failed"].fillna(False).astype(bool)
    error_rate = float(failed.mean()) if len(rows) else None
    k = config.card_k
    control, c_scored = _arm(CONTROL, champ, rows, "fraud_probability", "model_latency_ms", k, None)
    treated, t_scored = _arm(
        TREATMENT,
        chall,
        rows[~failed],
        "shadow_probability",
        "shadow_latency_ms",
        k,
        error_rate,
    )
    # Paired: the same transactions, scored by both (rows the challenger missed drop out).
    c_scored = c_scored.loc[c_scored.index.intersection(t_scored.index)]
    t_scored = t_scored.loc[c_scored.index]
    return control, treated, c_scored, t_scored


def _ab_arms(frame: pd.DataFrame, champ: str, chall: str, config: AnalysisConfig) -> Arms:
    """Each variant's customers as decided by its model; CP@k's k scaled to the arm's share."""
    version = frame["model_version"].astype("string")
    customers = frame["customer_id"].nunique()
    variant = frame["variant"]
    control_rows = frame[(variant == CONTROL) & (version == champ)]
    treated_rows = frame[(variant == TREATMENT) & (version == chall)]
    fallbacks = frame[(variant == TREATMENT) & frame["challenger_failed"].fillna(False)]
    attempted = len(treated_rows) + len(fallbacks)
    error_rate = len(fallbacks) / attempted if attempted else None

    def scaled_k(rows: pd.DataFrame) -> int:
        return max(1, round(config.card_k * rows["customer_id"].nunique() / customers))

    control, c_scored = _arm(
        CONTROL,
        champ,
        control_rows,
        "fraud_probability",
        "model_latency_ms",
        scaled_k(control_rows),
        None,
    )
    treated, t_scored = _arm(
        TREATMENT,
        chall,
        treated_rows,
        "fraud_probability",
        "model_latency_ms",
        scaled_k(treated_rows),
        error_rate,
    )
    return control, treated, c_scored, t_scored


def detect_mode(frame: pd.DataFrame, challenger_version: str) -> Mode | None:
    """The mode the log shows for this challenger (the service's setting may have changed)."""
    shadowed = int((frame["shadow_model_version"].astype("string") == challenger_version).sum())
    # Treatment rows served by this challenger, or by the champion where it failed.
    served = (frame["model_version"].astype("string") == challenger_version) | frame[
        "challenger_failed"
    ].fillna(False).astype(bool)
    treated = int(((frame["variant"] == TREATMENT) & served).sum())
    if shadowed == 0 and treated == 0:
        return None
    return "shadow" if shadowed >= treated else "ab"


# --- the decision ----------------------------------------------------------------------------


def _guardrails(
    champion: ArmStats, challenger: ArmStats, config: AnalysisConfig
) -> list[Guardrail]:
    out = []
    rate = challenger.error_rate
    if rate is None or challenger.rows + round(rate * challenger.rows) < config.min_guardrail_rows:
        out.append(Guardrail("error_rate", rate, config.max_error_rate, True, "too few rows"))
    else:
        passed = rate <= config.max_error_rate
        note = f"challenger failed on {rate:.2%} of its requests"
        out.append(Guardrail("error_rate", rate, config.max_error_rate, passed, note))
    c, t = champion.latency_p95_ms, challenger.latency_p95_ms
    if c is None or t is None or min(champion.rows, challenger.rows) < config.min_guardrail_rows:
        out.append(Guardrail("latency_p95_ms", t, None, True, "not measured"))
    else:
        limit = c * config.max_latency_ratio + config.latency_slack_ms
        note = f"challenger p95 {t:.2f} ms vs champion {c:.2f} ms (limit {limit:.2f} ms)"
        out.append(Guardrail("latency_p95_ms", t, limit, t <= limit, note))
    return out


def _too_few_labels(control: ArmStats, treated: ArmStats, config: AnalysisConfig) -> list[str]:
    """Why an arm cannot be judged yet (empty: both can)."""
    return [
        f"{a.variant} has {a.labelled} labelled predictions and {a.frauds} frauds "
        f"(need {config.min_labelled} and {config.min_frauds})"
        for a in (control, treated)
        if a.labelled < config.min_labelled or a.frauds < config.min_frauds
    ]


def _verdict(
    diff: Difference, control: ArmStats, treated: ArmStats, alpha: float
) -> tuple[ExperimentDecision, list[str]]:
    """Ship / kill / iterate from the interval of the AP difference, and the reasons."""
    level = f"{1 - alpha:.0%}"
    summary = (
        f"AP challenger v{treated.model_version} {treated.average_precision:.4f} vs champion "
        f"v{control.model_version} {control.average_precision:.4f}: difference "
        f"{diff.observed:+.4f}, {level} interval [{diff.ci_low:+.4f}, {diff.ci_high:+.4f}], "
        f"p={diff.p_value:.3f} ({'paired' if diff.paired else 'unpaired'} customer bootstrap)"
    )
    decision: ExperimentDecision
    if diff.ci_low > 0:
        decision, reasons = "ship", [f"challenger is better: {summary}"]
    elif diff.ci_high < 0:
        decision, reasons = "kill", [f"challenger is worse: {summary}"]
    else:
        decision, reasons = "iterate", [f"no significant difference yet: {summary}"]
    cp_c, cp_t = control.card_precision_at_k, treated.card_precision_at_k
    if cp_c is not None and cp_t is not None:
        reasons.append(
            f"CP@k (secondary): challenger {cp_t:.4f} (k={treated.k}) vs champion "
            f"{cp_c:.4f} (k={control.k})"
        )
    return decision, reasons


def compare(
    frame: pd.DataFrame,
    champion_version: str,
    challenger_version: str,
    config: AnalysisConfig | None = None,
    mode: Mode | None = None,
) -> ExperimentResult:
    """The decision for ``challenger_version`` vs ``champion_version`` on ``frame``.

    ``frame``: prediction-log rows with ``tx_fraud`` (NaN where no label arrived yet) and
    ``tx_day`` (see ``analysis.labelled_log``). ``mode``: None = as the log shows.
    """
    config = config or AnalysisConfig()
    champ, chall = str(champion_version), str(challenger_version)
    mode = mode or detect_mode(frame, chall)
    result = ExperimentResult("iterate", [], mode, champ, chall, config=asdict(config))
    if mode is None:
        result.reasons.append(f"no prediction of challenger v{chall} in the window yet")
        return result
    arms = _shadow_arms if mode == "shadow" else _ab_arms
    control, treated, c_scored, t_scored = arms(frame, champ, chall, config)
    result.arms = {CONTROL: control, TREATMENT: treated}
    days = frame["tx_day"].dropna()
    if len(days):
        result.first_day, result.last_day = str(days.min()), str(days.max())

    result.guardrails = _guardrails(control, treated, config)
    broken = [g for g in result.guardrails if not g.passed]
    if broken:
        result.decision = "kill"
        result.reasons += [f"guardrail {g.name} failed: {g.note}" for g in broken]
        return result

    short = _too_few_labels(control, treated, config)
    if short:
        result.reasons += ["not enough labelled outcomes yet: " + "; ".join(short)]
        return result

    result.difference = bootstrap_difference(
        c_scored,
        t_scored,
        paired=mode == "shadow",
        alpha=config.alpha,
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
    )
    result.decision, reasons = _verdict(result.difference, control, treated, config.alpha)
    result.reasons += reasons
    return result
