"""Benchmark: what a short Airflow task costs with and without the preloading executor.

    .venv/bin/python bench/bench_task_start.py [--repeat 3]

The task is the body of ``deploy_model``'s ``champion_version``: look up the ``champion`` alias
in the embedded (SQLite) MLflow registry. Measured from process start to exit:
- cold: a fresh interpreter, as a task of the plain LocalExecutor imports everything itself;
- preloaded: a process forked from a parent that ran ``pipelines.platform.executor.preload``,
  as a task forked from a ``PreloadedLocalExecutor`` worker.
The parent's one-off preload time is printed too (the scheduler pays it once at its start).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TASK = (
    "from pipelines.config import get_settings\n"
    "from pipelines.registry.versions import champion\n"
    "champion(get_settings())\n"
)


def cold(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", TASK], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def forked() -> float:
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            exec(TASK, {})
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["FRAUD_HOME"] = home
        env = dict(os.environ)
        cold(env)  # creates the store: every measured run reads an existing one
        cold_times = [cold(env) for _ in range(args.repeat)]

        from pipelines.platform.executor import PRELOADED_MODULES, preload

        started = time.perf_counter()
        failed = preload()
        preload_seconds = time.perf_counter() - started
        forked_times = [forked() for _ in range(args.repeat)]

    c, f = statistics.median(cold_times), statistics.median(forked_times)
    print(f"preload in the parent: {preload_seconds:.1f} s for {len(PRELOADED_MODULES)} modules")
    if failed:
        print(f"  not preloaded: {failed}")
    print(f"{'task':<34}{'median s':>10}  runs")
    for name, median, times in (
        ("cold (fresh interpreter)", c, cold_times),
        ("forked from a preloaded parent", f, forked_times),
    ):
        print(f"{name:<34}{median:>10.2f}  {', '.join(f'{t:.2f}' for t in times)}")
    print(f"ratio cold / preloaded: {c / f:.1f}x")


if __name__ == "__main__":
    main()
