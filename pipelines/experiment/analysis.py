"""Compare the challenger with the champion on labelled outcomes: ship, iterate or kill.

Input: the prediction log (``serving/prediction_log.py``) of a window, joined with the labels
that have arrived in the raw lake (``<lake>/raw/labels/date=<tx day>/``). Which rows count:

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

Actions (``apply=True``): ship moves the ``champion`` alias to the challenger through
``pipelines.registry.promotion.apply_decision`` (one alias move; the old champion becomes
``previous_champion``, so ``rollback`` undoes it); kill removes the ``challenger`` alias (the
service stops routing to it); iterate changes nothing. Every analysis is recorded as a JSON
file under ``<home>/experiments/decisions/`` and as ``experiment_*`` tags on the challenger
version.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipelines import contracts
from pipelines.config import Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

ExperimentDecision = Literal["ship", "iterate", "kill"]
Mode = Literal["ab", "shadow"]
DEFAULT_WINDOW_DAYS = 28
CONTROL, TREATMENT = "control", "treatment"


@dataclass(frozen=True)
class AnalysisConfig:
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

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> AnalysisConfig:
        return cls(
            alpha=settings.experiment_alpha,
            min_labelled=settings.experiment_min_labelled,
            seed=settings.seed,
            **overrides,
        )


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
    action: str | None = None  # what apply did
    record: str | None = None
    analysed_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reading ---------------------------------------------------------------------------------


def experiments_dir(settings: Settings) -> Path:
    return settings.home / "experiments"


def read_labels(settings: Settings, first: dt.date, last: dt.date) -> pd.DataFrame:
    """Arrived labels of transactions of days ``first`` .. ``last`` (transaction_id, tx_fraud)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from pipelines.lake import days_between, partition_dir

    files = []
    for day in days_between(first, last):
        folder = partition_dir(settings.raw_labels_dir, day)
        if folder.is_dir():
            files += sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        return pd.DataFrame({"transaction_id": pd.Series(dtype="int64"), "tx_fraud": []})
    labels = pq.read_table(files, columns=["transaction_id", "tx_fraud"]).to_pandas()
    return labels.drop_duplicates("transaction_id", keep="last")


def labelled_log(settings: Settings, first: dt.date, last: dt.date) -> pd.DataFrame | None:
    """Prediction-log rows of ``first`` .. ``last`` with ``tx_fraud`` (NaN: not arrived)."""
    from pipelines.monitoring.data import read_prediction_log

    log_rows = read_prediction_log(settings, first, last)
    if log_rows is None:
        return None
    for column, (_, default) in contracts.PREDICTION_LOG_EXPERIMENT_COLUMNS.items():
        if column not in log_rows:  # a part written before the experiment columns existed
            log_rows[column] = default
    labels = read_labels(settings, first, last)
    frame = log_rows.merge(labels, on="transaction_id", how="left")
    frame["tx_day"] = frame["tx_datetime"].dt.date
    return frame


# --- statistics ------------------------------------------------------------------------------


class _SortedScores:
    """One score column sorted once, so each bootstrap draw is a weighted cumsum (O(n))."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        import numpy as np

        self.order = np.argsort(-scores, kind="mergesort")
        self.y = labels[self.order].astype("float64")
        s = scores[self.order]
        # Last index of each block of equal scores: ties form one point, as in metrics.py.
        self.last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]

    def average_precision(self, weights: np.ndarray) -> float:
        """AP with row weights (bootstrap counts); weights of 1 give metrics.average_precision."""
        import numpy as np

        w = weights[self.order]
        true_pos = np.cumsum(w * self.y)[self.last]
        seen = np.cumsum(w)[self.last]
        positives = true_pos[-1]
        if positives <= 0:
            return float("nan")
        precision = np.divide(true_pos, seen, out=np.zeros_like(true_pos), where=seen > 0)
        recall_step = np.diff(np.r_[0.0, true_pos]) / positives
        return float(np.sum(recall_step * precision))


def _customer_weights(codes: np.ndarray, n_customers: int, rng: np.random.Generator):
    """Row weights of one bootstrap draw of customers (with replacement)."""
    import numpy as np

    counts = np.bincount(rng.integers(0, n_customers, n_customers), minlength=n_customers)
    return counts[codes].astype("float64")


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
    import numpy as np
    import pandas as pd

    from pipelines.metrics import average_precision

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
        c_w = _customer_weights(c_codes, c_n, rng)
        t_w = c_w if paired else _customer_weights(t_codes, t_n, rng)
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
    from pipelines.metrics import average_precision, card_precision_at_k

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


def compare(
    frame: pd.DataFrame,
    champion_version: str,
    challenger_version: str,
    config: AnalysisConfig | None = None,
    mode: Mode | None = None,
) -> ExperimentResult:
    """The decision for ``challenger_version`` vs ``champion_version`` on ``frame``.

    ``frame``: prediction-log rows with ``tx_fraud`` (NaN where no label arrived yet) and
    ``tx_day`` (see ``labelled_log``). ``mode``: None = as the log shows.
    """
    config = config or AnalysisConfig()
    champ, chall = str(champion_version), str(challenger_version)
    mode = mode or detect_mode(frame, chall)
    result = ExperimentResult("iterate", [], mode, champ, chall, config=asdict(config))
    if mode is None:
        result.reasons.append(f"no prediction of challenger v{chall} in the window yet")
        return result
    version = frame["model_version"].astype("string")
    customers = frame["customer_id"].nunique()
    if mode == "shadow":
        rows = frame[(version == champ) & (frame["shadow_model_version"].astype("string") == chall)]
        failed = rows["challenger_failed"].fillna(False).astype(bool)
        error_rate = float(failed.mean()) if len(rows) else None
        k = config.card_k
        control, c_scored = _arm(
            CONTROL, champ, rows, "fraud_probability", "model_latency_ms", k, None
        )
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
    else:
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

    short = [
        f"{a.variant} has {a.labelled} labelled predictions and {a.frauds} frauds "
        f"(need {config.min_labelled} and {config.min_frauds})"
        for a in (control, treated)
        if a.labelled < config.min_labelled or a.frauds < config.min_frauds
    ]
    if short:
        result.reasons += ["not enough labelled outcomes yet: " + "; ".join(short)]
        return result

    diff = bootstrap_difference(
        c_scored,
        t_scored,
        paired=mode == "shadow",
        alpha=config.alpha,
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
    )
    result.difference = diff
    level = f"{1 - config.alpha:.0%}"
    summary = (
        f"AP challenger v{chall} {treated.average_precision:.4f} vs champion v{champ} "
        f"{control.average_precision:.4f}: difference {diff.observed:+.4f}, {level} interval "
        f"[{diff.ci_low:+.4f}, {diff.ci_high:+.4f}], p={diff.p_value:.3f} "
        f"({'paired' if diff.paired else 'unpaired'} customer bootstrap)"
    )
    if diff.ci_low > 0:
        result.decision = "ship"
        result.reasons.append(f"challenger is better: {summary}")
    elif diff.ci_high < 0:
        result.decision = "kill"
        result.reasons.append(f"challenger is worse: {summary}")
    else:
        result.reasons.append(f"no significant difference yet: {summary}")
    cp_c, cp_t = control.card_precision_at_k, treated.card_precision_at_k
    if cp_c is not None and cp_t is not None:
        result.reasons.append(
            f"CP@k (secondary): challenger {cp_t:.4f} (k={treated.k}) vs champion "
            f"{cp_c:.4f} (k={control.k})"
        )
    return result


# --- the registry side -----------------------------------------------------------------------


def _aliased(settings: Settings, alias: str) -> str | None:
    from pipelines.registry import versions

    found = versions.version_by_alias(settings, alias)
    return None if found is None else str(found.version)


def apply_result(settings: Settings, result: ExperimentResult) -> str:
    """Carry out the decision in the registry (see the module docstring); returns what it did."""
    from pipelines.registry import promotion, tracking

    # Act only on the versions analysed: an alias that moved meanwhile belongs to someone else.
    if (
        _aliased(settings, contracts.CHAMPION_ALIAS),
        _aliased(settings, contracts.CHALLENGER_ALIAS),
    ) != (
        result.champion_version,
        result.challenger_version,
    ):
        return "none: the aliases moved since the analysis"
    if result.decision == "ship":
        decision = promotion.PromotionDecision(
            promote=True,
            reason="experiment: " + result.reasons[0],
            metric="experiment_average_precision",
            candidate_value=result.arms[TREATMENT].average_precision,
            champion_value=result.arms[CONTROL].average_precision,
            champion_version=result.champion_version,
            version=result.challenger_version,
        )
        promotion.apply_decision(settings, result.challenger_version, decision)
        return f"promoted v{result.challenger_version} to champion"
    if result.decision == "kill":
        tracking.client(settings).delete_registered_model_alias(
            settings.model_name, contracts.CHALLENGER_ALIAS
        )
        return f"removed the challenger alias from v{result.challenger_version}"
    return "none"


def _tags(result: ExperimentResult) -> dict[str, str]:
    tags = {
        "experiment_decision": result.decision,
        "experiment_reason": " | ".join(result.reasons)[:4000],
        "experiment_mode": result.mode or "",
        "experiment_window": f"{result.first_day}..{result.last_day}",
        "experiment_champion_version": result.champion_version,
        "experiment_action": result.action or "",
        "experiment_record": result.record or "",
        "experiment_at": result.analysed_at,
    }
    for variant, arm in result.arms.items():
        if arm.average_precision is not None:
            tags[f"experiment_{variant}_average_precision"] = f"{arm.average_precision:.6f}"
        tags[f"experiment_{variant}_labelled"] = str(arm.labelled)
    if result.difference is not None:
        d = result.difference
        tags["experiment_ap_difference"] = f"{d.observed:.6f}"
        tags["experiment_ap_interval"] = f"[{d.ci_low:.6f}, {d.ci_high:.6f}]"
        tags["experiment_p_value"] = f"{d.p_value:.4f}"
    return tags


def record(settings: Settings, result: ExperimentResult) -> Path:
    """The decision as JSON under ``<home>/experiments/decisions/`` and as version tags."""
    from pipelines.lake import write_text_atomic
    from pipelines.registry import tracking

    folder = experiments_dir(settings) / "decisions"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = result.analysed_at.replace(":", "").replace("+0000", "Z")
    path = folder / f"{stamp}-v{result.challenger_version}.json"
    result.record = str(path)
    write_text_atomic(path, json.dumps(result.to_dict(), indent=2, default=str))
    client = tracking.client(settings)
    for key, value in _tags(result).items():
        client.set_model_version_tag(settings.model_name, result.challenger_version, key, value)
    return path


def analyze(
    settings: Settings,
    day: dt.date | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS,
    *,
    apply: bool = True,
    mode: Mode | None = None,
    config: AnalysisConfig | None = None,
) -> ExperimentResult | None:
    """Analyse the running experiment over the ``window_days`` days ending ``day`` (default
    today, UTC), record it and (``apply``) act on it. None when there is no challenger."""

    champion = _aliased(settings, contracts.CHAMPION_ALIAS)
    challenger = _aliased(settings, contracts.CHALLENGER_ALIAS)
    if champion is None or challenger is None:
        log.info("no experiment: champion v%s, challenger v%s", champion, challenger)
        return None
    day = day or dt.datetime.now(dt.UTC).date()
    first = day - dt.timedelta(days=window_days - 1)
    config = config or AnalysisConfig.from_settings(settings)
    frame = labelled_log(settings, first, day)
    if frame is None:
        result = ExperimentResult(
            "iterate",
            [f"the prediction log has nothing in {first}..{day}"],
            mode,
            champion,
            challenger,
            config=asdict(config),
        )
    else:
        result = compare(frame, champion, challenger, config, mode)
    result.first_day, result.last_day = first.isoformat(), day.isoformat()
    result.action = apply_result(settings, result) if apply else "none (dry run)"
    record(settings, result)
    log.info("experiment v%s vs v%s: %s (%s)", challenger, champion, result.decision, result.action)
    return result
