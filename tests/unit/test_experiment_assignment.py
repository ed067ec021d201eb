"""Customer bucketing of the A/B test: stable, the configured split, independent per salt."""

import json
import os
import subprocess
import sys

import pytest

from pipelines.config import PROJECT_ROOT
from pipelines.experiment.assignment import CONTROL, TREATMENT, assign, bucket

CUSTOMERS = range(100_000)


def test_bucket_is_in_the_unit_interval_and_deterministic():
    values = [bucket(c, "s") for c in range(1000)]
    assert all(0 <= v < 1 for v in values)
    assert values == [bucket(c, "s") for c in range(1000)]


def test_assignment_is_stable_across_processes():
    """Python's own hash() is salted per process; ours must not be."""
    script = (
        "import json; from pipelines.experiment.assignment import assign; "
        "print(json.dumps([assign(c, 'fraud-ab-1', 0.3) for c in range(2000)]))"
    )
    runs = []
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1] == [assign(c, "fraud-ab-1", 0.3) for c in range(2000)]


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_split_matches_the_configured_share(share):
    treated = sum(assign(c, "fraud-ab-1", share) == TREATMENT for c in CUSTOMERS)
    # Binomial sd at n=100k is <= 0.0016: 0.005 is > 3 sd.
    assert abs(treated / len(CUSTOMERS) - share) < 0.005


def test_edge_shares_and_growing_the_share_only_adds_customers():
    assert {assign(c, "x", 0.0) for c in range(1000)} == {CONTROL}
    assert {assign(c, "x", 1.0) for c in range(1000)} == {TREATMENT}
    small = {c for c in CUSTOMERS if assign(c, "x", 0.1) == TREATMENT}
    large = {c for c in CUSTOMERS if assign(c, "x", 0.2) == TREATMENT}
    assert small < large


def test_a_new_salt_gives_an_independent_split():
    a = {c for c in CUSTOMERS if assign(c, "exp-a", 0.5) == TREATMENT}
    b = {c for c in CUSTOMERS if assign(c, "exp-b", 0.5) == TREATMENT}
    overlap = len(a & b) / len(CUSTOMERS)
    assert abs(overlap - 0.25) < 0.01  # independent halves overlap on a quarter
