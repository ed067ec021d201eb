"""The Airflow UI in a real browser (headless Debian Chromium driven by Playwright).

Logs in with the generated password, opens the ingest DAG, triggers it with a ``day`` param
through the Trigger dialog, and checks the run succeeds. Screenshots of each step are kept in
``test-artifacts/airflow-ui/``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import pytest

from pipelines.config import PROJECT_ROOT
from pipelines.lake import part_path
from tests.e2e.conftest import running_airflow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "airflow-ui"
pytestmark = [
    pytest.mark.airflow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (make install-browser installs it)",
    ),
]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    with running_airflow(tmp_path_factory.mktemp("airflow-ui"), history_days=1) as services:
        yield services


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_login_trigger_with_params_and_watch_the_run_succeed(airflow, page):
    login = airflow.login()
    page.goto(f"{airflow.base_url}/")
    page.fill("input[name=username]", login.username)
    page.fill("input[name=password]", login.password)
    page.screenshot(path=ARTIFACTS / "01-login.png")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "login" not in url)

    page.goto(f"{airflow.base_url}/dags/ingest_transactions")
    page.get_by_test_id("trigger-dag-button").click()
    # The DAG's params render as a form under "Run Parameters" (a date picker for "day").
    day_field = page.locator("#element_day")
    if not day_field.is_visible():
        page.get_by_text("Run Parameters").click()
    day = dt.date.today().isoformat()
    day_field.fill(day)
    page.screenshot(path=ARTIFACTS / "02-trigger-dialog.png")
    page.get_by_test_id("trigger-dag-submit").click()

    with airflow.client() as api:
        deadline = time.monotonic() + 240
        manual: list[dict] = []
        while time.monotonic() < deadline:
            runs = api.get("/dags/ingest_transactions/dagRuns").json()["dag_runs"]
            manual = [r for r in runs if r["run_type"] == "manual"]
            if manual and manual[-1]["state"] in ("success", "failed"):
                break
            time.sleep(2)
    assert manual, "the Trigger dialog created no run"
    run = manual[-1]
    assert run["conf"] == {"day": day}
    assert run["state"] == "success"
    path = part_path(airflow.settings.raw_transactions_dir, dt.date.fromisoformat(day), "simulated")
    assert path.exists()

    page.goto(f"{airflow.base_url}/dags/ingest_transactions/runs/{run['dag_run_id']}")
    page.get_by_text("success").first.wait_for()
    page.screenshot(path=ARTIFACTS / "03-run-succeeded.png")
