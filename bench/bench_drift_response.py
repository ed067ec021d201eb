"""Benchmark: which retraining policy helps after a drift, and at what compute.

    .venv/bin/python bench/bench_drift_response.py [--scenarios spending new_fraud geo]
        [--seeds 0 1 2] [--trials 4] [--max-epochs 5] [--days 28]

For each drift scenario and simulator seed, in a fresh temporary home (one subprocess each): the
default world (5,000 customers, 10,000 terminals) from ``drift day - 56`` to ``drift day + days
+ label delay``, the drift switched on from the drift day D (2018-06-01), ingested, built by
dbt and the Spark job and registered by ``feast apply``. A first champion is trained on the day
before D, as ``make up`` would have. Then each policy plays the days D .. D + days - 1, one by
one, through the functions the DAGs call (no Airflow):

1. the day's payments are scored by the policy's champion of that day, with the features the
   service reads (Feast's point-in-time join: the state before each payment), and written to the
   policy's prediction log as the service writes it;
2. ``monitor.run_monitor`` profiles the day and decides (the real thresholds and rules);
3. the policy turns a ``retrain`` decision into a training, today or later
   (``retrain.plan_retrain`` and ``retrain.trigger_verdict``'s cooldown);
4. a training is ``train.run_training`` on the newest fully labelled split, with the real gate
   (``registry.promotion``): its model serves from the next day if promoted.

Policies: ``never``; ``first-alert`` (today's behaviour); ``label-aware`` (an input-drift
alert trains once the training window holds ``--drifted-days`` drifted days, a labelled
performance drop trains now); ``weekly`` (days D, D+7, ...); and an ``oracle``
ceiling that retrains every 7 days from D + delay on the newest labelled days, no test holdout,
always promoted. Each policy has its own registry, prediction log and monitoring state; they
share the world, its features and the Optuna studies (a second training on the same split
resumes the finished search; its final model is trained again, deterministically).

Reported per world and policy: AP and CP@100 of the daily scores over the days played (each
day scored by the model serving it, against the labels that arrive later), per week, and the
trainings run and promoted; then the median over seeds per scenario. Trainings use
``--trials`` / ``--max-epochs`` (default: the first model's budget, 4 trials of at most 5
epochs) to keep a world under an hour on 2 cores; the budget is printed with the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DRIFT_DAY = dt.date(2018, 6, 1)
HISTORY_DAYS = 56  # the first champion's split and its model-selection split, with feature warm-up
SCENARIOS = {"spending": "FRAUD_DRIFT_SPENDING_FROM", "new_fraud": "FRAUD_DRIFT_NEW_FRAUD_FROM",
             "geo": "FRAUD_DRIFT_GEO_FROM"}  # fmt: skip
POLICIES = ("never", "first-alert", "label-aware", "weekly", "oracle")
METRICS = ("average_precision", "card_precision_at_100")


def _policy_settings(world: Any, policy: str) -> Any:
    """The world's settings with this policy's registry, prediction log and monitoring state;
    the lake's raw data, marts and features are the world's (symlinked)."""
    data = world.home / "policies" / policy
    lake = data / "lake"
    lake.mkdir(parents=True, exist_ok=True)
    for part in ("raw", "marts", "features"):
        link = lake / part
        if not link.exists():
            link.symlink_to(world.lake_dir / part, target_is_directory=True)
    return world.model_copy(
        update={"data_dir": data, "mlflow_tracking_uri": f"sqlite:///{data / 'mlflow.db'}"}
    )


def _horizon(world: Any, first: dt.date, last: dt.date) -> Any:
    """The payments of ``first`` .. ``last`` with the features the service would have read
    and their final labels."""
    from pipelines.featurestore.store import historical_features, training_entities
    from pipelines.transform.mart import read_export

    mart = read_export(world, first, last)
    features = historical_features(world, training_entities(mart))
    frame = mart[
        ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount", "tx_fraud"]
    ].merge(
        features.drop(columns=["customer_id", "terminal_id", "tx_amount"], errors="ignore"),
        on="transaction_id",
        validate="1:1",
    )
    frame["tx_day"] = frame.tx_datetime.dt.date
    return frame.sort_values(["tx_datetime", "transaction_id"]).reset_index(drop=True)


class Player:
    """One policy playing the days after the drift."""

    def __init__(self, world: Any, policy: str, horizon: Any, args: argparse.Namespace) -> None:
        self.settings = _policy_settings(world, policy)
        self.policy = policy
        self.horizon = horizon
        self.args = args
        self.scores: dict[str, Any] = {}  # model version -> scores of the horizon
        self.daily: list[Any] = []
        self.trainings: list[dict] = []
        self.scheduled: dt.date | None = None
        self.alert: tuple[dt.date, tuple[str, ...]] | None = None
        self.last_trained: dt.date | None = None

    def champion(self) -> tuple[str, Any]:
        from pipelines.registry import tracking, versions
        from pipelines.training.train import score_with

        current = versions.champion(self.settings)
        version = str(current.version)
        if version not in self.scores:
            tracking.use_tracking(self.settings)
            uri = f"models:/{self.settings.model_name}/{version}"
            self.scores[version] = score_with(uri, self.horizon)
        return version, self.scores[version]

    def train(self, day: dt.date, test_end: dt.date, reason: str, *, forced: bool = False) -> None:
        from pipelines.monitoring.retrain import DriftAnswered
        from pipelines.registry import promotion
        from pipelines.training import train

        drift = None if self.alert is None else DriftAnswered(*self.alert)
        started = time.monotonic()
        outcome = train.run_training(
            self.settings,
            test_end,
            n_trials=self.args.trials,
            reason=f"bench {self.policy}: {reason}",
            drift=drift,
            register_model=not forced,
        )
        if forced:  # the first champion, and the oracle (no holdout to judge it on): served
            version = train.register(self.settings, outcome.run_id, outcome.workdir)["version"]
            decision = promotion.PromotionDecision(
                True, reason, self.settings.promotion_metric, float("nan"), version=version
            )
            promotion.apply_decision(self.settings, version, decision)
            promoted, why = True, f"{reason}: promoted without the gate"
        else:
            promoted, why = bool(outcome.gate["promote"]), outcome.gate["reason"]
        self.last_trained = day
        self.trainings.append(
            {
                "day": day.isoformat(),
                "test_end": test_end.isoformat(),
                "reason": reason,
                "promoted": promoted,
                "gate": why,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        print(f"  {self.policy} {day}: trained ({reason}) -> {why}", flush=True)

    def serve(self, day: dt.date) -> None:
        """Score the day's payments with today's champion; log them as the service does."""
        import pyarrow as pa

        from pipelines.contracts import PREDICTION_LOG_FEATURE_PREFIX
        from pipelines.lake import part_path, write_parquet_atomic
        from serving.model import action_for
        from serving.prediction_log import NULLABLE_TYPES

        version, scores = self.champion()
        rows = self.horizon.tx_day == day
        frame = self.horizon.loc[rows]
        inputs = self._inputs()
        s = self.settings
        log = frame[["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"]]
        log = log.assign(
            **{f"{PREDICTION_LOG_FEATURE_PREFIX}{c}": frame[c] for c in inputs if c != "tx_amount"},
            fraud_probability=scores[rows.to_numpy()],
            model_version=version,
            unknown_customer=False,
            unknown_terminal=False,
            request_time=frame.tx_datetime,
        )
        log["decision"] = [
            action_for(float(p), s.review_threshold, s.block_threshold)
            for p in log.fraud_probability
        ]
        table = pa.Table.from_pandas(log, preserve_index=False)
        for name, arrow_type in NULLABLE_TYPES.items():
            table = table.append_column(pa.field(name, arrow_type), pa.nulls(len(log), arrow_type))
        write_parquet_atomic(table, part_path(s.predictions_dir, day, "bench"))
        self.daily.append(frame.assign(score=scores[rows.to_numpy()]))

    def _inputs(self) -> list[str]:
        from pipelines.registry import versions

        return json.loads(versions.champion(self.settings).tags["model_inputs"])

    def play(self, day: dt.date, first: dt.date) -> None:
        from pipelines.monitoring.monitor import run_monitor
        from pipelines.monitoring.retrain import plan_retrain, trigger_verdict

        s = self.settings
        self.serve(day)
        if self.policy == "never":
            return
        delay = s.label_delay_days
        if self.policy == "weekly":
            if (day - first).days % 7 == 0:
                self.train(day, day - dt.timedelta(days=delay), "weekly")
            return
        if self.policy == "oracle":
            since = (day - first).days - delay
            if since >= 0 and since % 7 == 0:  # newest labels: days up to day - delay
                self.train(day, day + dt.timedelta(days=s.test_days), "oracle", forced=True)
            return
        decision = run_monitor(s, day, write_reports=False).decision
        if decision.action == "retrain" and self.alert is None:
            self.alert = (day, decision.drifted_columns)
        if self.scheduled is not None and self.scheduled <= day:
            self.scheduled = None
            self.train(day, day - dt.timedelta(days=delay), "scheduled by a drift alert")
            return
        if decision.action != "retrain":
            return
        recent = self.last_trained is not None and (day - self.last_trained).days < (
            s.retrain_cooldown_days
        )
        policy = "first-alert" if self.policy == "first-alert" else "label-aware"
        plan = plan_retrain(
            policy,
            day,
            decision.rules,
            delay_days=delay,
            test_days=s.test_days,
            drifted_days=self.args.drifted_days,
            scheduled=self.scheduled,
        )
        if not plan.now(day):
            if self.scheduled is None:
                print(f"  {self.policy} {day}: {plan.reason}", flush=True)
            self.scheduled = plan.on
            return
        verdict = trigger_verdict(0, int(recent), s.retrain_cooldown_days)
        if verdict.trigger:
            self.train(day, day - dt.timedelta(days=delay), plan.reason)

    def result(self) -> dict:
        import pandas as pd

        from pipelines.metrics import ranking_metrics

        scored = pd.concat(self.daily, ignore_index=True)

        def measured(frame: Any) -> dict[str, float]:
            got = ranking_metrics(frame.tx_day, frame.customer_id, frame.tx_fraud, frame.score)
            return {m: round(float(got[m]), 4) for m in METRICS}

        first = scored.tx_day.min()
        week = scored.tx_day.map(lambda d: (d - first).days // 7)
        return {
            "overall": measured(scored),
            "weeks": [measured(scored[week == w]) for w in sorted(week.unique())],
            "trainings": self.trainings,
            "trained": len(self.trainings),
            "promoted": sum(t["promoted"] for t in self.trainings),
        }


def run_world(scenario: str, seed: int, args: argparse.Namespace) -> dict:
    """One world, every policy, in this process (env set by the parent)."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    from pipelines.config import load_settings
    from pipelines.featurestore.build import build_features
    from pipelines.ingest.daily import ingest_days

    world = load_settings()
    delay = world.label_delay_days
    first, last = DRIFT_DAY, DRIFT_DAY + dt.timedelta(days=args.days - 1)
    timings: dict[str, float] = {}
    started = time.monotonic()
    # Labels of the days played, and of the oracle's last test period after them.
    ingest_days(
        world.history_start_date, last + dt.timedelta(days=2 * delay + world.test_days), world
    )
    build_features(world, materialize=False)
    horizon = _horizon(world, first, last)
    timings["world"] = round(time.monotonic() - started, 1)
    print(f"{scenario} seed {seed}: world built in {timings['world']} s", flush=True)

    results = {}
    for policy in args.policies:
        started = time.monotonic()
        player = Player(world, policy, horizon, args)
        # The champion serving on D: trained the day before, as the product would have.
        day_before = first - dt.timedelta(days=1)
        player.train(day_before, day_before - dt.timedelta(days=delay), "first", forced=True)
        player.trainings.clear()
        player.last_trained = None  # not monitor-triggered: no cooldown (as the bootstrap's)
        for day in (first + dt.timedelta(days=i) for i in range(args.days)):
            player.play(day, first)
        results[policy] = player.result()
        timings[policy] = round(time.monotonic() - started, 1)
        print(f"{scenario} seed {seed} {policy}: {results[policy]['overall']}", flush=True)
    return {
        "scenario": scenario,
        "seed": seed,
        "drift_day": DRIFT_DAY.isoformat(),
        "days": args.days,
        "frauds": int(horizon.tx_fraud.sum()),
        "payments": len(horizon),
        "policies": results,
        "timings": timings,
    }


def _child(scenario: str, seed: int, args: argparse.Namespace, out: Path, log: Path) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"drift-{scenario}-{seed}-", dir=args.workdir))
    env = {
        **os.environ,
        "FRAUD_HOME": str(home),
        "FRAUD_SEED": str(seed),
        "FRAUD_HISTORY_START": (DRIFT_DAY - dt.timedelta(days=HISTORY_DAYS)).isoformat(),
        "FRAUD_LIVE_TRAFFIC": "false",
        SCENARIOS[scenario]: DRIFT_DAY.isoformat(),
        "FRAUD_MAX_EPOCHS": str(args.max_epochs),
        "FRAUD_TUNING_TRIALS": str(args.trials),
    }
    if args.customers:
        terminals = args.terminals or 2 * args.customers
        env |= {"FRAUD_N_CUSTOMERS": str(args.customers), "FRAUD_N_TERMINALS": str(terminals)}
    env.setdefault("FRAUD_TORCH_THREADS", "1")
    command = [sys.executable, __file__, "--one-world", scenario, str(seed), "--out", str(out)]
    command += _passed_on(args)
    try:
        with log.open("w") as handle:
            subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT, check=True)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return json.loads(out.read_text())


def _passed_on(args: argparse.Namespace) -> list[str]:
    return [
        "--days", str(args.days), "--trials", str(args.trials),
        "--max-epochs", str(args.max_epochs), "--drifted-days", str(args.drifted_days),
        "--policies", *args.policies,
    ]  # fmt: skip


def report(worlds: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Days played: {args.days} from {DRIFT_DAY}; trainings: {args.trials} trials, at most "
        f"{args.max_epochs} epochs; label-aware waits for {args.drifted_days} drifted training "
        "day(s).",
        "",
        "| scenario | seed | " + " | ".join(args.policies) + " |",
        "|---|---|" + "---|" * len(args.policies),
    ]

    def cell(result: dict) -> str:
        o = result["overall"]
        return (
            f"AP {o['average_precision']:.3f}, CP@100 {o['card_precision_at_100']:.3f}, "
            f"{result['trained']} trained / {result['promoted']} promoted"
        )

    for w in worlds:
        cells = [cell(w["policies"][p]) for p in args.policies]
        lines.append(f"| {w['scenario']} | {w['seed']} | " + " | ".join(cells) + " |")
    for scenario in dict.fromkeys(w["scenario"] for w in worlds):
        mine = [w for w in worlds if w["scenario"] == scenario]
        medians = []
        for p in args.policies:
            ap = statistics.median(w["policies"][p]["overall"]["average_precision"] for w in mine)
            cp = statistics.median(
                w["policies"][p]["overall"]["card_precision_at_100"] for w in mine
            )
            trained = statistics.median(w["policies"][p]["trained"] for w in mine)
            medians.append(f"**AP {ap:.3f}, CP@100 {cp:.3f}, {trained:g} trained**")
        lines.append(f"| {scenario} | median | " + " | ".join(medians) + " |")
    return "\n".join(lines)


def main() -> None:
    from pipelines.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--days", type=int, default=28, help="days played after the drift")
    parser.add_argument("--trials", type=int, default=4, help="Optuna trials per training")
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument(
        "--drifted-days",
        type=int,
        default=Settings.model_fields["retrain_drifted_days"].default,
        help="label-aware: drifted training days to wait for (default: %(default)s, the product's)",
    )
    parser.add_argument(
        "--customers", type=int, help="a smaller world (extra row, not the product)"
    )
    parser.add_argument("--terminals", type=int, help="with --customers (default: twice as many)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the worlds are built")
    parser.add_argument("--keep", action="store_true", help="keep each world's home")
    parser.add_argument("--json", type=Path, default=RESULTS / "drift_response.json")
    parser.add_argument("--one-world", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_world:
        scenario, seed = args.one_world
        args.out.write_text(json.dumps(run_world(scenario, int(seed), args), indent=1))
        return

    args.json.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(args.json.read_text()) if args.json.exists() else []
    worlds = [w for w in done if w["scenario"] in args.scenarios and w["seed"] in args.seeds]
    have = {(w["scenario"], w["seed"]) for w in worlds}
    for scenario in args.scenarios:
        for seed in args.seeds:
            if (scenario, seed) in have:
                print(f"{scenario} seed {seed}: kept from {args.json}")
                continue
            out = args.json.with_name(f"drift_{scenario}_{seed}.json")
            log = args.json.with_name(f"drift_{scenario}_{seed}.log")
            print(f"{scenario} seed {seed}: building and playing (log {log})", flush=True)
            worlds.append(_child(scenario, seed, args, out, log))
            args.json.write_text(json.dumps(worlds, indent=1))  # resumable
    print(report(worlds, args))


if __name__ == "__main__":
    main()
