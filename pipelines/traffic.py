"""The payment network: the simulator's payments sent to ``/score`` at their simulated times.

    python -m pipelines traffic replay [--day D] [--speed N] [--follow]

A running system needs real traffic: the prediction log, prediction-drift monitoring, the A/B
and shadow analysis and ``score_batch`` all read what ``/score`` saw, and from the first live
day on the raw lake holds exactly the payments the API scored (``pipelines/ingest/scored.py``).
The replayer sends each payment of a day in its own request, at ``origin + (t - day start) /
speed`` (``--speed 0``: as fast as the service answers); payments already due when it starts
(the part of a day that has passed) go out at once. A card's payments are sent one after the
other, in time order (the next only once the previous one is answered), so the card's
streamed state sees them in order; payments of different cards overlap, up to ``concurrency``
in flight. A payment the prediction log already holds is not sent again (a restarted replayer
resumes). Labels are not sent: they arrive through the chargeback feed, the daily ingest.

``--follow`` (what ``make up`` runs when ``FRAUD_LIVE_TRAFFIC`` is on) replays today in real
time from the first live day on, then the next day, and so on; it waits for the API to be ready
(a champion exists) before it sends anything. It rereads the settings every minute: a drift
scenario switched on (``python -m pipelines demo --drift …``) shapes the payments still to come.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pandas as pd
import pyarrow.parquet as pq

from pipelines.config import Settings, load_settings
from pipelines.ingest import schema
from pipelines.lake import day_files
from pipelines.simulate import SimulationConfig, TransactionSimulator

log = logging.getLogger(__name__)
DAY = dt.timedelta(days=1)


@dataclass
class ReplayReport:
    """What a replay sent and what came back."""

    day: dt.date
    due: int = 0  # payments of the day to send (those already scored left out)
    sent: int = 0
    scored: int = 0
    errors: int = 0
    refused: int = 0  # 503 answers (overloaded) that were retried after their Retry-After
    latencies_ms: list[float] = field(default_factory=list)
    decisions: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]

    def line(self) -> str:
        p50, p99 = self.percentile(50), self.percentile(99)
        latency = "" if p50 is None else f", p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        refused = f", refused and retried {self.refused:,}" if self.refused else ""
        return (
            f"{self.day}: sent {self.sent:,}/{self.due:,}, scored {self.scored:,}, "
            f"errors {self.errors:,}{refused}{latency}"
        )

    def summary(self) -> str:
        decisions = ", ".join(f"{k} {v:,}" for k, v in sorted(self.decisions.items()))
        errors = "".join(f"\n  error: {e}" for e in self.error_samples)
        return f"{self.line()}; decisions: {decisions or 'none'}{errors}"


def day_payments(settings: Settings, day: dt.date) -> pd.DataFrame:
    """The simulator's payments of ``day`` in time order (what the payment network carries)."""
    frame = TransactionSimulator(SimulationConfig.from_settings(settings)).generate_day(day)
    return frame[schema.TRANSACTIONS.names].sort_values(["tx_datetime", "transaction_id"])


def scored_ids(settings: Settings, day: dt.date) -> set[int]:
    """Transaction ids of ``day`` the prediction log already holds."""
    return {
        i
        for f in day_files(settings.predictions_dir, day)
        for i in pq.read_table(f, columns=["transaction_id"]).column(0).to_pylist()
    }


def request(payment: pd.Series | tuple) -> dict:
    """The ``/score`` body of one payment."""
    p = payment._asdict() if hasattr(payment, "_asdict") else dict(payment)
    return {
        "transactions": [
            {
                "transaction_id": int(p["transaction_id"]),
                "customer_id": int(p["customer_id"]),
                "terminal_id": int(p["terminal_id"]),
                "tx_amount": float(p["tx_amount"]),
                "tx_datetime": pd.Timestamp(p["tx_datetime"]).isoformat(),
            }
        ]
    }


MAX_RETRIES = 5  # of a payment the service refused with 503


def scoring_url(settings: Settings) -> str:
    return f"http://{settings.serving_host}:{settings.serving_port}"


async def _send_all(
    payments: pd.DataFrame,
    report: ReplayReport,
    client: httpx.AsyncClient,
    due_at: Callable[[pd.Timestamp], float],
    concurrency: int,
    on_progress: Callable[[ReplayReport], None] | None,
    progress_seconds: float,
) -> None:
    slots = asyncio.Semaphore(concurrency)
    previous: dict[int, asyncio.Task] = {}  # each card's latest payment in flight
    last_progress = time.monotonic()

    async def send(body: dict, before: asyncio.Task | None) -> None:
        try:
            if before is not None:
                await asyncio.shield(before)  # the card's earlier payment answered first
            started = time.perf_counter()
            response = await client.post("/score", json=body)
            for _ in range(MAX_RETRIES):
                if response.status_code != 503:
                    break
                # Overloaded (or no model yet): the service says when to come back.
                report.refused += 1
                await asyncio.sleep(float(response.headers.get("retry-after", 1)))
                response = await client.post("/score", json=body)
            elapsed = (time.perf_counter() - started) * 1e3
            if response.status_code == 200:
                report.scored += 1
                report.latencies_ms.append(elapsed)
                report.decisions[response.json()[0]["decision"]] += 1
            else:
                _error(report, f"HTTP {response.status_code}: {response.text[:200]}")
        except httpx.HTTPError as exc:
            _error(report, f"{type(exc).__name__}: {exc}")
        finally:
            slots.release()

    tasks = []
    for payment in payments.itertuples(index=False):
        delay = due_at(payment.tx_datetime) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        card = int(payment.customer_id)
        task = asyncio.create_task(send(request(payment), previous.get(card)))
        previous[card] = task
        tasks.append(task)
        report.sent += 1
        if on_progress is not None and time.monotonic() - last_progress >= progress_seconds:
            last_progress = time.monotonic()
            on_progress(report)
    await asyncio.gather(*tasks)


def _error(report: ReplayReport, message: str) -> None:
    report.errors += 1
    if len(report.error_samples) < 3:
        report.error_samples.append(message)


def replay(
    settings: Settings,
    payments: pd.DataFrame,
    day: dt.date,
    speed: float = 1.0,
    origin: dt.datetime | None = None,
    concurrency: int = 8,
    on_progress: Callable[[ReplayReport], None] | None = None,
    progress_seconds: float = 5.0,
) -> ReplayReport:
    """Send ``payments`` (the columns of the raw lake's transactions) to the scoring API, one
    per request; returns what happened.

    The payment at ``t`` leaves ``(t - origin) / speed`` seconds after the start (at once if
    ``t <= origin`` or ``speed == 0``); ``origin`` defaults to ``day``'s midnight, so
    ``speed=3600`` replays a day in 24 seconds.
    """
    if speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")
    payments = payments.sort_values(["tx_datetime", "transaction_id"])
    origin_ts = pd.Timestamp(origin or dt.datetime.combine(day, dt.time(), dt.UTC))
    start = time.monotonic()

    def due_at(t: pd.Timestamp) -> float:
        ahead = (t - origin_ts).total_seconds()
        return start if speed == 0 or ahead <= 0 else start + ahead / speed

    report = ReplayReport(day, due=len(payments))
    timeout = httpx.Timeout(30.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def main() -> None:
        async with httpx.AsyncClient(
            base_url=scoring_url(settings),
            headers=settings.serving_client_headers,
            timeout=timeout,
            limits=limits,
        ) as client:
            await _send_all(
                payments, report, client, due_at, concurrency, on_progress, progress_seconds
            )

    asyncio.run(main())
    return report


def replay_day(
    settings: Settings,
    day: dt.date,
    speed: float = 1.0,
    origin: dt.datetime | None = None,
    concurrency: int = 8,
    on_progress: Callable[[ReplayReport], None] | None = None,
    until: dt.datetime | None = None,
    skip: set[int] | None = None,
    progress_seconds: float = 5.0,
) -> ReplayReport:
    """Send the simulator's payments of ``day`` to the scoring API (``replay``), except those
    after ``until`` and those in ``skip`` (default: the ids the prediction log holds for the
    day: a rerun resumes); the ids sent are added to ``skip``."""
    payments = day_payments(settings, day)
    skip = scored_ids(settings, day) if skip is None else skip
    payments = payments[~payments.transaction_id.isin(skip)]
    if until is not None:
        payments = payments[payments.tx_datetime <= pd.Timestamp(until)]
    report = replay(
        settings, payments, day, speed, origin, concurrency, on_progress, progress_seconds
    )
    skip.update(payments.transaction_id.tolist())
    return report


def wait_until_ready(settings: Settings, say: Callable[[str], None], poll: float = 10.0) -> None:
    """Block until the scoring API answers ``/readyz`` with 200 (a champion is loaded)."""
    url = f"{scoring_url(settings)}/readyz"
    said = False
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not said:
            say(f"waiting for the scoring API to be ready at {url} (it needs a champion model)")
            said = True
        time.sleep(poll)


def follow(
    say: Callable[[str], None],
    chunk_seconds: float = 60.0,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Replay the live days as they happen, from the first live day on, until ``stop()``.

    Sends in chunks of ``chunk_seconds``, rereading the settings before each chunk (a drift
    scenario switched on applies to the payments still to come).
    """
    settings = load_settings()
    wait_until_ready(settings, say)
    today = dt.datetime.now(dt.UTC).date()
    day = max(today, settings.live_start or today)
    sent = scored_ids(settings, day)  # a restarted replayer resumes
    say(f"replaying the payments of {day} at their times ({len(sent):,} scored before)")
    report = ReplayReport(day)
    while not stop():
        settings = load_settings()
        now = dt.datetime.now(dt.UTC)
        chunk_end = now + dt.timedelta(seconds=chunk_seconds)
        day_end = dt.datetime.combine(day, dt.time(), dt.UTC) + DAY
        part = replay_day(
            settings,
            day,
            speed=1.0,
            origin=now,
            until=min(chunk_end, day_end),
            skip=sent,
            # A catch-up (the part of the day already past) can take minutes: say how it goes.
            on_progress=lambda r: say(f"sending: {r.line()}"),
            progress_seconds=30.0,
        )
        _merge(report, part)
        if part.sent:
            say(report.line())
        if chunk_end >= day_end:
            say(f"day {day} done: {report.summary()}")
            day += DAY
            sent, report = scored_ids(settings, day), ReplayReport(day)
        time.sleep(max(0.0, (chunk_end - dt.datetime.now(dt.UTC)).total_seconds()))


def _merge(total: ReplayReport, part: ReplayReport) -> None:
    total.due += part.due
    total.sent += part.sent
    total.scored += part.scored
    total.errors += part.errors
    total.latencies_ms += part.latencies_ms
    total.decisions.update(part.decisions)
    total.error_samples = (total.error_samples + part.error_samples)[:3]
