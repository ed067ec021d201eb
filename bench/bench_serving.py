"""Benchmark: the real scoring service over HTTP against a bare BentoML echo service.

    .venv/bin/python bench/bench_serving.py [--world product|small] [--home DIR]
                                            [--seconds 60] [--rates 100 200 400]

The default world is the product a user gets from `make up`: the default world size (5,000
customers, the last 60 days), features through dbt, Spark and Feast into the SQLite online
store, and the first model exactly as `make up` trains it (``train_model``'s steps with the
bootstrap budget, promoted by the gate). ``--world small`` is a quicker one (1,000 customers,
30 days, a small ensemble of the same model class). Then it starts ``bentoml serve
serving.service:FraudScoringService`` as shipped (default workers, admission limit, access
log), the same with the write-through of streaming features off
(``FRAUD_SERVING_STREAM_FEATURES=false``: its cost is the difference) and ``bentoml serve
bench.echo_service:EchoService`` (same payload schema, no work: the framework's floor), and
measures the three the same way, one new payment per request, dated now:

- sequential: one client, one request at a time;
- closed loop: ``--clients`` clients, each sending its next request when the previous one
  answered; the throughput is the maximum sustained requests/s;
- open loop: requests sent at a fixed rate whatever the answers (latency counted from the
  scheduled send time, so a stall is not hidden by coordinated omission); a rate past
  capacity shows the overload shedding (503 + Retry-After);
- after load: a lone client right after the heaviest load stopped.

It ends with the targets of the serving work, each MET or NOT MET. The load generator is one
asyncio process with persistent keep-alive connections (aiohttp), on the same 2 cores as the
server: its CPU is part of what the figures pay for. ``--home`` keeps the world (and reuses it
when it exists) for repeated runs.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from pipelines.contracts import CHAMPION_ALIAS
from pipelines.lake import utc_today
from pipelines.platform.scoring import BentoProcess

ROOT = Path(__file__).resolve().parent.parent
WORLD_MARKER = "bench_world.json"


# --- the worlds: features in the online store, a champion in the registry ------------------
#
# "product" (the default) is what `make up` gives a user: the default world size, the last
# FRAUD_HISTORY_DAYS days up to yesterday, and the first model as `make up` trains it
# (train_model's path with the bootstrap budget). "small" is a quicker world (1,000
# customers, 30 days of 2018, a small ensemble of the production model class).

SMALL_FIRST_DAY = dt.date(2018, 4, 1)
SMALL_DAYS = 30


def world_env(home: Path, world: str) -> dict[str, str]:
    env = {
        "FRAUD_HOME": str(home),
        "FRAUD_MODEL_POLL_SECONDS": "3600",  # no registry poll during the measurement
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_HOME": str(home / "bentoml"),
        # serving.model.load_version loads "models:/..." through MLflow's global registry URI.
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
    }
    if world == "small":
        return env | {
            "FRAUD_N_CUSTOMERS": "1000",
            "FRAUD_N_TERMINALS": "2000",
            "FRAUD_HISTORY_START": SMALL_FIRST_DAY.isoformat(),
            "FRAUD_SERVING_MAX_PAYMENT_AGE_DAYS": "36500",  # its payments are from 2018
        }
    # As `make up` pins it in var/runtime.env: today - history_days.
    from pipelines.config import Settings

    start = utc_today() - dt.timedelta(days=Settings().history_days)
    return env | {"FRAUD_HISTORY_START": start.isoformat()}


def train_small_champion(settings: Any, frame: Any, inputs: list[str]) -> str:
    """Train the production model class (3 configurations x 2 seeds, a few epochs) on the
    world's features, log it as training does and make it champion; returns its version."""
    import mlflow
    import mlflow.pytorch

    from pipelines.registry import tracking, versions
    from pipelines.training.model import (
        FraudScorer,
        HyperParams,
        Preprocessing,
        ScoringMember,
        configure_threads,
        train_network,
    )

    configure_threads(settings.torch_threads)
    raw = frame[inputs].to_numpy(np.float64)
    labels = frame["tx_fraud"].to_numpy()
    members = []
    for bins in (0, 8, 16):  # as the search's ensemble: with and without binned encodings
        pre = Preprocessing.fit(inputs, raw, labels, bins)
        x = pre.transform(raw)
        for seed in range(2):
            trained = train_network(x, labels, HyperParams(), seed=seed, max_epochs=2)
            members.append(ScoringMember(pre, trained.network))
    scorer = FraudScorer(inputs, members, threshold=0.5).eval()
    example = frame[inputs].head(5).astype("float64")
    # The project's experiment: artifacts under the home, not ./mlruns of the working directory.
    with mlflow.start_run(experiment_id=tracking.experiment_id(settings)) as run:
        info = mlflow.pytorch.log_model(
            scorer,
            name="model",
            serialization_format="pickle",
            signature=mlflow.models.infer_signature(example, scorer.score_frame(example)),
            input_example=example,
            pip_requirements=["torch", "numpy", "pandas", "mlflow"],
        )
    baseline = frame[inputs].astype("float64").median().fillna(0.0)
    tags = {
        "model_inputs": json.dumps(inputs),
        "feature_service": "fraud_model_v1",
        "metric.average_precision": "0.5",
        "input_baseline": json.dumps({c: float(v) for c, v in baseline.items()}),
        "data_window": "benchmark world",
    }
    version = versions.register_version(settings, info.model_uri, run.info.run_id, tags)
    tracking.client(settings).set_registered_model_alias(
        settings.model_name, CHAMPION_ALIAS, version
    )
    return version


def train_first_model(settings: Any) -> str:
    """The first model exactly as `make up` trains it: train_model's steps with the bootstrap
    conf (trials, epoch cap, time budget), registered and promoted by the gate."""
    from pipelines.training.bootstrap import first_model_verdict

    verdict = first_model_verdict(settings, active_training_runs=0)
    if not verdict.train:
        raise RuntimeError(f"the first model cannot be trained: {verdict.reason}")
    from pipelines.training.train import run_training

    conf = verdict.conf
    outcome = run_training(
        settings.model_copy(update={"max_epochs": conf["max_epochs"]}),
        dt.date.fromisoformat(conf["test_end"]),
        n_trials=conf["trials"],
        timeout_seconds=conf["timeout_seconds"],
        reason=conf["reason"],
    )
    if outcome.gate is None or outcome.gate["alias"] != CHAMPION_ALIAS:
        raise RuntimeError(f"the first model was not promoted: {outcome.gate}")
    return outcome.version


def build_world(home: Path, world: str) -> dict[str, Any]:
    """Build (or reuse) the world under ``home``; returns request bodies to replay."""
    marker = home / WORLD_MARKER
    if marker.exists():
        return json.loads(marker.read_text())
    from pipelines.config import load_settings
    from pipelines.featurestore import store
    from pipelines.featurestore.build import build_features
    from pipelines.ingest.daily import ingest_days
    from pipelines.transform.mart import read_export

    settings = load_settings()
    started = time.monotonic()
    first = settings.history_start_date
    last = first + dt.timedelta(days=SMALL_DAYS - 1)
    if world == "product":
        last = utc_today() - dt.timedelta(days=1)
    print(f"  ingesting {first} .. {last} ({settings.n_customers:,} customers)", flush=True)
    ingest_days(first, last, settings)
    print("  features (dbt, Spark, Feast materialize)", flush=True)
    build_features(settings)
    mart = read_export(settings)
    if world == "product":
        print("  training the first model as `make up` does", flush=True)
        version = train_first_model(settings)
    else:
        labelled = mart[mart.tx_fraud.notna()]
        frame = store.historical_features(settings, store.training_entities(labelled)).merge(
            labelled[["transaction_id", "tx_fraud"]], on="transaction_id"
        )
        service = store.get_store(settings).get_feature_service(store.FEATURE_SERVICE)
        views = service.feature_view_projections
        inputs = ["tx_amount", *(f.name for p in views for f in p.features)]
        version = train_small_champion(settings, frame, inputs)
    # Requests: known customers and terminals of the last week.
    recent = mart[mart.tx_datetime >= mart.tx_datetime.max() - dt.timedelta(days=7)]
    rows = recent.sample(n=min(5000, len(recent)), random_state=0)
    bodies = [
        {
            "customer_id": int(r.customer_id),
            "terminal_id": int(r.terminal_id),
            "tx_amount": round(float(r.tx_amount), 2),
        }
        for r in rows.itertuples()
    ]
    built = {
        "world": world,
        "version": version,
        "bodies": bodies,
        "last_state": mart.tx_datetime.max().isoformat(),
        "customers": settings.n_customers,
        "transactions": len(mart),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    marker.write_text(json.dumps(built))
    return built


# --- the servers --------------------------------------------------------------------------


# --- the load generator -------------------------------------------------------------------


@dataclass
class Run:
    name: str
    latencies: list[float]  # seconds, of the answered (200) requests
    refusals: list[float]  # seconds, of the 503 refusals (overload shed)
    seconds: float
    errors: int  # any other answer, a timeout (10 s) or a connection failure
    server_cpu: float  # server CPU seconds spent during the run

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies), q) * 1e3) if self.latencies else 0

    def refused_share(self) -> float:
        total = len(self.latencies) + len(self.refusals) + self.errors
        return len(self.refusals) / max(total, 1)

    def cpu_ms_per_request(self) -> float:
        return self.server_cpu / max(len(self.latencies), 1) * 1e3


class Load:
    """Single-transaction POST /score requests over keep-alive connections (aiohttp).

    Every request is a new payment (its own ``transaction_id``), so a streaming service folds
    and pushes each one: a repeated id would be recognised and cost no write.
    """

    def __init__(self, server: BentoProcess, world: dict[str, Any]) -> None:
        self.server = server
        self.bodies = world["bodies"]
        self.headers = {"content-type": "application/json"}
        self._next = 0
        # Payments happen now; in the small world (2018) as if now were a minute after its
        # last state, time running on from there.
        now = dt.datetime.now(dt.UTC)
        state = dt.datetime.fromisoformat(world["last_state"]).replace(tzinfo=dt.UTC)
        product = world["world"] == "product"
        self._shift = dt.timedelta(0) if product else state + dt.timedelta(minutes=1) - now
        self.reset()

    def reset(self) -> None:
        self.latencies: list[float] = []
        self.refusals: list[float] = []
        self.errors = 0

    def payload(self) -> bytes:
        self._next += 1
        body = {
            **self.bodies[self._next % len(self.bodies)],
            "transaction_id": 10**12 + self._next,
            "tx_datetime": (dt.datetime.now(dt.UTC) + self._shift).isoformat(),
        }
        return json.dumps({"transactions": [body]}).encode()

    async def send(self, session: Any, since: float | None = None) -> None:
        """One request, its latency from ``since`` (default: now) filed by its outcome."""
        started = time.perf_counter() if since is None else since
        status = 0
        try:
            async with session.post(
                f"{self.server.url}/score", data=self.payload(), headers=self.headers
            ) as r:
                await r.read()
                status = r.status
        except (TimeoutError, OSError, aiohttp.ClientError):
            pass
        elapsed = time.perf_counter() - started
        if status == 200:
            self.latencies.append(elapsed)
        elif status == 503:
            self.refusals.append(elapsed)
        else:
            self.errors += 1

    def session(self, connections: int) -> Any:
        connector = aiohttp.TCPConnector(limit=connections, force_close=False)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(10))

    async def sequential(self, n: int) -> float:
        async with self.session(1) as session:
            started = time.perf_counter()
            for _ in range(n):
                await self.send(session)
            return time.perf_counter() - started

    async def closed_loop(self, clients: int, seconds: float) -> float:
        """``clients`` clients, each sending its next request as soon as it has an answer."""
        async with self.session(clients) as session:
            started = time.perf_counter()
            end = started + seconds

            async def client() -> None:
                while time.perf_counter() < end:
                    await self.send(session)

            await asyncio.gather(*(client() for _ in range(clients)))
            return time.perf_counter() - started

    async def open_loop(self, rate: float, seconds: float) -> float:
        """Send at ``rate`` per second on a fixed schedule; latency from the scheduled time
        (a stall is not hidden by coordinated omission)."""
        async with self.session(1024) as session:
            started = time.perf_counter()
            tasks = []
            for i in range(int(rate * seconds)):
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(self.send(session, since=due)))
            await asyncio.gather(*tasks)
            return time.perf_counter() - started


def measure(server: BentoProcess, world: dict[str, Any], args: argparse.Namespace) -> list[Run]:
    load = Load(server, world)

    def run(name: str, coroutine: Any) -> Run:
        load.reset()
        cpu = server.cpu_seconds()
        seconds = asyncio.run(coroutine)
        cpu = server.cpu_seconds() - cpu
        return Run(name, load.latencies, load.refusals, seconds, load.errors, cpu)

    run("warm-up", load.sequential(args.warmup))
    runs = [run("sequential", load.sequential(args.sequential))]
    runs.append(run(f"{args.clients} clients", load.closed_loop(args.clients, args.seconds)))
    for rate in args.rates:
        runs.append(run(f"open {rate:g}/s", load.open_loop(rate, args.seconds)))
    # What a lone client meets right after the heaviest load stopped.
    runs.append(run("after load", load.sequential(20)))
    return runs


# --- report -------------------------------------------------------------------------------


def table(results: dict[str, list[Run]]) -> str:
    """Every server's runs side by side, with the ratios scoring / echo and, for the
    write-through of streaming features, scoring / scoring without it."""
    head = (
        f"{'load':<14}{'server':<11}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'req/s':>8}{'cpu ms/req':>11}{'refused':>8}{'errors':>7}"
    )
    lines = [head, "-" * len(head)]

    def ratio(label: str, a: Run, b: Run) -> str:
        def x(p: float, q: float) -> str:
            return f"{p / q:>7.1f}x" if q else f"{'-':>8}"

        return (
            f"{'':<14}{label:<11}{x(a.ms(50), b.ms(50))}{x(a.ms(95), b.ms(95))}"
            f"{x(a.ms(99), b.ms(99))}{'':>8}{x(b.throughput, a.throughput)}"
            f"{x(a.cpu_ms_per_request(), b.cpu_ms_per_request()):>11}"
        )

    for runs in zip(*results.values(), strict=True):
        by_server = dict(zip(results, runs, strict=True))
        for label, r in by_server.items():
            lines.append(
                f"{r.name:<14}{label:<11}{r.ms(50):>8.2f}{r.ms(95):>8.2f}{r.ms(99):>8.2f}"
                f"{r.ms(100):>8.1f}{r.throughput:>8.0f}{r.cpu_ms_per_request():>11.2f}"
                f"{r.refused_share():>7.0%}{r.errors:>7}"
            )
        lines.append(ratio("/echo", by_server["scoring"], by_server["echo"]))
        lines.append(ratio("/no-stream", by_server["scoring"], by_server["no-stream"]))
    return "\n".join(lines)


def targets(runs: list[Run], echo: list[Run], args: argparse.Namespace) -> list[str]:
    """The issue's targets, each MET or NOT MET with the figure it was judged on."""
    by_name = {r.name: r for r in runs}
    floor = {r.name: r for r in echo}
    out = []

    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    target = args.target_p99_ms
    open_200 = by_name.get("open 200/s")
    if open_200 is not None:
        ok = open_200.ms(99) <= target and open_200.errors == 0 and not open_200.refusals
        out.append(
            f"p99 <= {target:g} ms at 200 req/s, 0 errors: {verdict(ok)} (p99 "
            f"{open_200.ms(99):.2f} ms, {open_200.throughput:.0f} req/s answered, "
            f"{len(open_200.refusals)} refused, {open_200.errors} errors)"
        )
    closed = by_name[f"{args.clients} clients"]
    ok = closed.throughput >= 500 and closed.ms(99) <= 25
    out.append(
        f">= 500 req/s with p99 <= 25 ms ({args.clients} clients): {verdict(ok)} "
        f"({closed.throughput:.0f} req/s, p99 {closed.ms(99):.2f} ms)"
    )
    cpu, echo_cpu = closed.cpu_ms_per_request(), floor[closed.name].cpu_ms_per_request()
    out.append(
        f"server CPU per request <= 2x the echo floor's: {verdict(cpu <= 2 * echo_cpu)} "
        f"({cpu:.2f} ms vs {echo_cpu:.2f} ms, {cpu / echo_cpu:.1f}x)"
    )
    overloaded = [r for r in runs if r.name.startswith("open") and r.refusals]
    for r in overloaded:
        slowest = max(r.refusals) * 1e3
        ok = r.ms(99) <= 3 * target and r.errors == 0
        out.append(
            f"overload at {r.name.split()[1]}: accepted p99 <= {3 * target:g} ms and no error: "
            f"{verdict(ok)} (accepted p99 {r.ms(99):.2f} ms, {r.refused_share():.0%} refused, "
            f"slowest refusal {slowest:.1f} ms, {r.errors} errors)"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--world",
        choices=["product", "small"],
        default="product",
        help="product: what `make up` gives (default size, the first model as trained by "
        "train_model); small: 1,000 customers and a small ensemble",
    )
    parser.add_argument("--home", type=Path, help="world folder (kept; reused if built)")
    parser.add_argument("--build-only", action="store_true", help="build the world, no load")
    parser.add_argument("--sequential", type=int, default=2000, help="sequential requests")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each timed run")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[100.0, 200.0, 400.0], help="open loop"
    )
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--target-p99-ms", type=float, default=10.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    with tempfile.TemporaryDirectory() as scratch:
        home = (args.home or Path(scratch) / "world").resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.environ.update(world_env(home, args.world))
        print(f"{args.world} world: {home} (built the first time: ~15 min product, ~2 min small)")
        world = build_world(home, args.world)
        print(
            f"  {world['customers']:,} customers, {world['transactions']:,} transactions, "
            f"champion v{world['version']}",
            flush=True,
        )
        if args.build_only:
            return
        results = {}
        scoring = "serving.service:FraudScoringService"
        for name, target, extra in (
            ("echo", "bench.echo_service:EchoService", {}),
            ("no-stream", scoring, {"FRAUD_SERVING_STREAM_FEATURES": "false"}),
            ("scoring", scoring, {}),
        ):
            env = {**os.environ, **extra}
            # An echo service has no model to refuse: "refusing" is only in the scoring log.
            with BentoProcess(target, env, home, cwd=ROOT, timeout=240, fatal="refusing") as server:
                print(f"measuring {name} ({target}) …", flush=True)
                results[name] = measure(server, world, args)
        from pipelines.config import get_settings
        from serving.service import FraudScoringService

        s = get_settings()
        load = os.getloadavg()
        print()
        print(
            f"{args.world} world; service {FraudScoringService.config}; max in flight per "
            f"worker {s.serving_max_inflight}, max queue {s.serving_max_queue_ms:g} ms"
        )
        print(
            f"One transaction per request, {os.cpu_count()} cores shared by server and client; "
            f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}."
        )
        print(table({k: results[k] for k in ("scoring", "no-stream", "echo")}))
        print(
            "scoring: the service as shipped (each scored payment updates its card's online "
            "state); no-stream: FRAUD_SERVING_STREAM_FEATURES=false; ratios: scoring / the other "
            "(req/s: the other / scoring); latencies and req/s of answered requests; refused: "
            "share of 503 (overload shed); cpu = server CPU per answered request"
        )
        for line in targets(results["scoring"], results["echo"], args):
            print("target " + line)


if __name__ == "__main__":
    main()
