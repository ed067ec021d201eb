"""Benchmark: the real scoring service over HTTP against a bare BentoML echo service.

    .venv/bin/python bench/bench_serving.py [--home DIR] [--seconds 10] [--rate 200]

Builds a small world in a temp ``FRAUD_HOME`` (simulated days, dbt, Spark features, Feast apply
+ materialize into the SQLite online store), trains a small ensemble with the project's own
model code (``pipelines.training.model``: preprocessing inside the module, MLflow pytorch
flavour, pickle serialization, the tags ``register`` writes) and makes it champion. Then it
starts ``bentoml serve serving.service:FraudScoringService`` as shipped, the same with the
write-through of streaming features off (``FRAUD_SERVING_STREAM_FEATURES=false``: its cost is
the difference) and ``bentoml serve bench.echo_service:EchoService`` (same payload schema, no
work: the framework's floor), and measures the three the same way, one new payment per request:

- sequential: one client, one request at a time;
- closed loop: ``--clients`` clients, each sending its next request when the previous one
  answered; the throughput is the maximum sustained requests/s;
- open loop: requests sent at a fixed ``--rate`` whatever the answers (latency counted from
  the scheduled send time, so a stall is not hidden by coordinated omission).

The load generator is one asyncio process with persistent keep-alive connections (aiohttp),
on the same 2 cores as the server: its CPU is part of what the figures pay for. ``--home``
keeps the world (and reuses it when it exists) for repeated runs.
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

from pipelines.platform.scoring import BentoProcess

ROOT = Path(__file__).resolve().parent.parent
FIRST_DAY = dt.date(2018, 4, 1)
N_DAYS = 30
WORLD_MARKER = "bench_world.json"


# --- the world: features in the online store, a champion in the registry -------------------


def world_env(home: Path) -> dict[str, str]:
    return {
        "FRAUD_HOME": str(home),
        "FRAUD_N_CUSTOMERS": "1000",
        "FRAUD_N_TERMINALS": "2000",
        "FRAUD_HISTORY_START": FIRST_DAY.isoformat(),
        "FRAUD_MODEL_POLL_SECONDS": "3600",  # no registry poll during the measurement
        "BENTOML_DO_NOT_TRACK": "True",
        "BENTOML_HOME": str(home / "bentoml"),
        # serving.model.load_version loads "models:/..." through MLflow's global registry URI:
        # without this the service cannot find the champion (reported; not this file's fix).
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
    }


def register_champion(settings: Any, frame: Any, inputs: list[str]) -> str:
    """Train the production model class (3 configurations x 2 seeds, a few epochs) on the
    world's features, log it as training does and make it champion; returns its version."""
    import mlflow
    import mlflow.pytorch

    from pipelines.registry import gate as registry
    from pipelines.training import tracking
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
    version = registry.register_version(settings, info.model_uri, run.info.run_id, tags)
    tracking.client(settings).set_registered_model_alias(settings.model_name, "champion", version)
    return version


def build_world(home: Path) -> dict[str, Any]:
    """Build (or reuse) the world under ``home``; returns request bodies to replay."""
    marker = home / WORLD_MARKER
    if marker.exists():
        return json.loads(marker.read_text())
    import pyarrow.parquet as pq

    from pipelines.config import load_settings
    from pipelines.features.build import build_features
    from pipelines.featurestore import store
    from pipelines.ingest.daily import ingest_days
    from pipelines.transform.dbt import mart_file

    settings = load_settings()
    started = time.monotonic()
    ingest_days(FIRST_DAY, FIRST_DAY + dt.timedelta(days=N_DAYS - 1), settings)
    build_features(settings)
    mart = pq.read_table(mart_file(settings)).to_pandas()
    labelled = mart[mart.tx_fraud.notna()]
    frame = store.historical_features(settings, store.training_entities(labelled)).merge(
        labelled[["transaction_id", "tx_fraud"]], on="transaction_id"
    )
    service = store.get_store(settings).get_feature_service(store.FEATURE_SERVICE)
    inputs = ["tx_amount", *(f.name for p in service.feature_view_projections for f in p.features)]
    version = register_champion(settings, frame, inputs)
    # Requests: known customers and terminals of the last week, a minute after the state.
    recent = mart[mart.tx_datetime >= mart.tx_datetime.max() - dt.timedelta(days=7)]
    rows = recent.sample(n=min(5000, len(recent)), random_state=0)
    bodies = [
        {
            "transaction_id": int(r.transaction_id),
            "customer_id": int(r.customer_id),
            "terminal_id": int(r.terminal_id),
            "tx_amount": round(float(r.tx_amount), 2),
            "tx_datetime": (r.tx_datetime + dt.timedelta(minutes=1)).isoformat(),
        }
        for r in rows.itertuples()
    ]
    world = {
        "version": version,
        "bodies": bodies,
        "transactions": len(mart),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    marker.write_text(json.dumps(world))
    return world


# --- the servers --------------------------------------------------------------------------


# --- the load generator -------------------------------------------------------------------


@dataclass
class Run:
    name: str
    latencies: list[float]  # seconds
    seconds: float
    errors: int
    server_cpu: float  # server CPU seconds spent during the run

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    def ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies), q) * 1e3)

    def cpu_ms_per_request(self) -> float:
        return self.server_cpu / max(len(self.latencies), 1) * 1e3


class Load:
    """Single-transaction POST /score requests over keep-alive connections (aiohttp).

    Every request is a new payment (its own ``transaction_id``), so a streaming service folds
    and pushes each one: a repeated id would be recognised and cost no write.
    """

    def __init__(self, server: BentoProcess, bodies: list[dict]) -> None:
        self.server = server
        self.bodies = bodies
        self.headers = {"content-type": "application/json"}
        self.errors = 0
        self._next = 0

    def payload(self) -> bytes:
        self._next += 1
        body = {**self.bodies[self._next % len(self.bodies)], "transaction_id": 10**12 + self._next}
        return json.dumps({"transactions": [body]}).encode()

    async def one(self, session: Any) -> float:
        started = time.perf_counter()
        await self.send(session)
        return time.perf_counter() - started

    async def send(self, session: Any) -> None:
        """One request; a non-200 answer or a failure (timeout: 10 s) counts as an error, its
        latency (up to the failure) still counts."""
        try:
            async with session.post(
                f"{self.server.url}/score", data=self.payload(), headers=self.headers
            ) as r:
                await r.read()
                if r.status != 200:
                    self.errors += 1
        except (TimeoutError, OSError, aiohttp.ClientError):
            self.errors += 1

    def session(self, connections: int) -> Any:
        connector = aiohttp.TCPConnector(limit=connections, force_close=False)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(10))

    async def sequential(self, n: int) -> tuple[list[float], float]:
        async with self.session(1) as session:
            started = time.perf_counter()
            latencies = [await self.one(session) for _ in range(n)]
            return latencies, time.perf_counter() - started

    async def closed_loop(self, clients: int, seconds: float) -> tuple[list[float], float]:
        """``clients`` clients, each sending its next request as soon as it has an answer."""
        latencies: list[float] = []
        async with self.session(clients) as session:
            started = time.perf_counter()
            end = started + seconds

            async def client() -> None:
                while time.perf_counter() < end:
                    latencies.append(await self.one(session))

            await asyncio.gather(*(client() for _ in range(clients)))
            return latencies, time.perf_counter() - started

    async def open_loop(self, rate: float, seconds: float) -> tuple[list[float], float]:
        """Send at ``rate`` per second on a fixed schedule; latency from the scheduled time."""
        latencies: list[float] = []
        n = int(rate * seconds)
        async with self.session(256) as session:
            started = time.perf_counter()

            async def at(due: float) -> None:
                await self.send(session)
                latencies.append(time.perf_counter() - due)

            tasks = []
            for i in range(n):
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(at(due)))
            await asyncio.gather(*tasks)
            return latencies, time.perf_counter() - started


def measure(server: BentoProcess, bodies: list[dict], args: argparse.Namespace) -> list[Run]:
    load = Load(server, bodies)

    def run(name: str, coroutine: Any) -> Run:
        load.errors = 0
        cpu = server.cpu_seconds()
        latencies, seconds = asyncio.run(coroutine)
        return Run(name, latencies, seconds, load.errors, server.cpu_seconds() - cpu)

    run("warm-up", load.sequential(args.warmup))
    runs = [run("sequential", load.sequential(args.sequential))]
    runs.append(run(f"{args.clients} clients", load.closed_loop(args.clients, args.seconds)))
    for rate in args.rates:
        runs.append(run(f"open {rate:g}/s", load.open_loop(rate, args.seconds)))
    return runs


# --- report -------------------------------------------------------------------------------


def table(results: dict[str, list[Run]]) -> str:
    """Every server's runs side by side, with the ratios scoring / echo and, for the
    write-through of streaming features, scoring / scoring without it."""
    head = (
        f"{'load':<14}{'server':<11}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'req/s':>8}{'cpu ms/req':>11}{'errors':>7}"
    )
    lines = [head, "-" * len(head)]

    def ratio(label: str, a: Run, b: Run) -> str:
        return (
            f"{'':<14}{label:<11}{a.ms(50) / b.ms(50):>7.1f}x{a.ms(95) / b.ms(95):>7.1f}x"
            f"{a.ms(99) / b.ms(99):>7.1f}x{'':>8}{b.throughput / a.throughput:>7.2f}x"
            f"{a.cpu_ms_per_request() / max(b.cpu_ms_per_request(), 1e-9):>10.2f}x"
        )

    for runs in zip(*results.values(), strict=True):
        by_server = dict(zip(results, runs, strict=True))
        for label, r in by_server.items():
            lines.append(
                f"{r.name:<14}{label:<11}{r.ms(50):>8.2f}{r.ms(95):>8.2f}{r.ms(99):>8.2f}"
                f"{r.ms(100):>8.1f}{r.throughput:>8.0f}{r.cpu_ms_per_request():>11.2f}"
                f"{r.errors:>7}"
            )
        lines.append(ratio("/echo", by_server["scoring"], by_server["echo"]))
        lines.append(ratio("/no-stream", by_server["scoring"], by_server["no-stream"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="world folder (kept; reused if built)")
    parser.add_argument("--sequential", type=int, default=2000, help="sequential requests")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each timed run")
    parser.add_argument("--rates", type=float, nargs="+", default=[200.0], help="open loop")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--target-p99-ms", type=float, default=10.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    with tempfile.TemporaryDirectory() as scratch:
        home = (args.home or Path(scratch) / "world").resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.environ.update(world_env(home))
        print(f"world: {home} (building it takes ~2 min the first time)", flush=True)
        world = build_world(home)
        bodies = world["bodies"]
        print(f"  {world['transactions']:,} transactions, champion v{world['version']}")
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
                results[name] = measure(server, bodies, args)
        from serving.service import FraudScoringService

        declared = FraudScoringService.apis["score"].output_spec.media_type
        load = os.getloadavg()
        print()
        print(
            f"service settings {FraudScoringService.config}, output media type "
            f"{'declared' if declared else 'derived per response'} (echo: the same)"
        )
        print(
            f"One transaction per request, {os.cpu_count()} cores shared by server and client; "
            f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}."
        )
        print(table({k: results[k] for k in ("scoring", "no-stream", "echo")}))
        print(
            "scoring: the service as shipped (each scored payment updates its card's online "
            "state); no-stream: FRAUD_SERVING_STREAM_FEATURES=false; ratios: scoring / the other "
            "(req/s: the other / scoring); cpu = server CPU per request"
        )
        for run in results["scoring"]:
            if run.name.startswith("open"):
                met = run.ms(99) <= args.target_p99_ms and run.errors == 0
                print(
                    f"target p99 <= {args.target_p99_ms:g} ms at {run.name.split()[1]}: "
                    f"{'MET' if met else 'NOT MET'} (p99 {run.ms(99):.2f} ms, "
                    f"{run.throughput:.0f} req/s achieved, {run.errors} errors)"
                )


if __name__ == "__main__":
    main()
