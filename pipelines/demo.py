"""The demo: score a few real transactions on the running endpoint, and switch drift on.

``python -m pipelines demo`` picks the newest transactions of the mart (known customers and
terminals), adds a made-up customer and an unusually large amount, posts them to ``/score`` and
returns the answers. ``--drift spending`` (or ``new_fraud``, ``geo``) pins that simulator
scenario from today in ``<home>/runtime.env`` (read by every new task process); on a live day
it sends the rest of today's payments, now drifted, to ``/score`` at once (the day's traffic is
what reaches the lake), then asks Airflow to ingest today and, once the features include it,
to monitor today: the user watches monitor_drift → train_model → deploy_model in the UI and
the served version change.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import duckdb
import httpx

from pipelines.lake import utc_today
from pipelines.platform.traffic import PaymentNetwork
from pipelines.traffic import replay_day
from pipelines.transform.mart import mart_files, marts_path

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipelines.config import Settings
    from pipelines.traffic import ReplayReport


DRIFT_SWITCHES = {
    "spending": "FRAUD_DRIFT_SPENDING_FROM",
    "new_fraud": "FRAUD_DRIFT_NEW_FRAUD_FROM",
    "geo": "FRAUD_DRIFT_GEO_FROM",
}
UNKNOWN_CUSTOMER_ID = 10**9  # no simulated customer has this id


def sample_transactions(settings: Settings, count: int) -> list[dict[str, Any]]:
    """The ``count`` newest mart transactions, plus a stranger and a big spender."""

    files = mart_files(settings)
    if not files:
        raise FileNotFoundError(
            f"no mart yet ({marts_path(settings)}): wait for the first build_features run"
        )
    with duckdb.connect() as con:
        rows = con.execute(
            """select transaction_id, customer_id, terminal_id, tx_amount, tx_datetime
               from read_parquet(?, hive_partitioning = false)
               order by tx_datetime desc limit ?""",
            [files, count],
        ).fetchall()
    if not rows:
        raise ValueError(f"the mart {marts_path(settings)} is empty")
    transactions = [
        {
            "transaction_id": int(tid),
            "customer_id": int(cid),
            "terminal_id": int(term),
            "tx_amount": round(float(amount), 2),
            "tx_datetime": when.replace(tzinfo=dt.UTC).isoformat(),
        }
        for tid, cid, term, amount, when in rows
    ]
    newest = transactions[0]
    next_id = max(t["transaction_id"] for t in transactions) + 1
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    transactions.append(
        {
            **newest,
            "transaction_id": next_id,
            "customer_id": UNKNOWN_CUSTOMER_ID,
            "tx_datetime": now,
        }
    )
    transactions.append(
        {**newest, "transaction_id": next_id + 1, "tx_amount": 950.0, "tx_datetime": now}
    )
    return transactions


def score(settings: Settings, transactions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """POST them to the running scoring API; raises with the API's message on an error."""
    url = f"http://{settings.serving_host}:{settings.serving_port}/score"
    headers = settings.serving_client_headers
    response = httpx.post(url, json={"transactions": transactions}, headers=headers, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:500]}")
    return response.json()


def switch_drift_on(settings: Settings, scenario: str, day: dt.date) -> str:
    """Pin ``scenario`` from ``day`` in the runtime env file (replacing an earlier setting)."""
    variable = DRIFT_SWITCHES[scenario]
    path = settings.runtime_env_file
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if not line.startswith(f"{variable}=")]
    lines.append(f"{variable}={day.isoformat()}")
    path.write_text("\n".join(lines) + "\n")
    return f"{variable}={day.isoformat()}"


def fast_forward_today(settings: Settings, say: Callable[[str], None]) -> ReplayReport:
    """Send today's payments not scored yet to ``/score`` at once, with the payment network
    paused meanwhile (it resumes after them: it skips what the prediction log holds)."""

    network = PaymentNetwork(settings)
    paused = network.down()
    try:
        return replay_day(settings, utc_today(), speed=0, on_progress=lambda r: say(r.line()))
    finally:
        if paused:
            network.up()


def trigger(api: httpx.Client, dag_id: str, conf: dict[str, Any]) -> str:
    """Start a run as the UI's Trigger button does; returns its run id."""
    response = api.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    response.raise_for_status()
    return response.json()["dag_run_id"]


def wait_for_run(api: httpx.Client, dag_id: str, run_id: str, timeout: float = 900) -> str:
    """Poll a run until it ends; returns its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(3)
    raise TimeoutError(f"{dag_id} {run_id} still running after {timeout:.0f}s")


def wait_for_features_after(api: httpx.Client, after: str, timeout: float = 900) -> str:
    """Wait for the first build_features run started after ``after`` (the ingest run's start:
    its Asset event fires before the ingest run is marked done); returns its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.get("/dags/build_features/dagRuns", params={"order_by": "-start_date"}).json()
        newer = [r for r in runs["dag_runs"] if (r.get("start_date") or "") > after]
        ended = [r for r in newer if r["state"] in ("success", "failed")]
        if ended:
            return ended[0]["state"]
        time.sleep(3)
    raise TimeoutError(f"no build_features run ended within {timeout:.0f}s")
