"""ManagedProcess stops everything it started, including workers that left its process group."""

from __future__ import annotations

import os
import sys

import psutil

from pipelines.platform.process import ManagedProcess
from tests.waiting import wait_for

# A supervisor that forks a worker into a session of its own (as BentoML's workers are), writes
# the worker's PID, then either waits or exits at once (leaving the worker orphaned to init).
SUPERVISOR = """
import subprocess, sys, time
worker = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
)
open(sys.argv[1], "w").write(str(worker.pid))
if sys.argv[2] == "wait":
    time.sleep(600)
"""


def _worker_pid(path) -> int:
    text = wait_for(
        "the supervisor to start its worker",
        lambda: (path.read_text() or None) if path.exists() else None,
        30,
        interval=0.05,
    )
    return int(text)


def _managed(tmp_path, mode: str) -> tuple[ManagedProcess, int]:
    pid_path = tmp_path / "worker.pid"
    proc = ManagedProcess(
        name="supervisor",
        command=[sys.executable, "-c", SUPERVISOR, str(pid_path), mode],
        run_dir=tmp_path / "run",
        log_dir=tmp_path / "log",
    )
    proc.start(dict(os.environ), cwd=tmp_path)
    return proc, _worker_pid(pid_path)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_worker_in_its_own_session_is_stopped_with_its_supervisor(tmp_path):
    proc, worker = _managed(tmp_path, "wait")
    assert os.getpgid(worker) != os.getpgid(proc.pid())  # out of reach of the group signal
    assert proc.stop(timeout=5)
    assert _gone(worker)
    assert not proc.pid_file.exists()


def test_an_orphaned_worker_is_stopped_though_its_supervisor_is_gone(tmp_path):
    proc, worker = _managed(tmp_path, "exit")
    # The supervisor exited; its PID file no longer vouches.
    wait_for("the supervisor to exit", lambda: proc.pid() is None, 30, interval=0.05)
    assert not _gone(worker)
    assert proc.stop(timeout=5)
    assert _gone(worker)


def test_stopping_what_is_not_running_is_a_no_op(tmp_path):
    proc = ManagedProcess("idle", ["true"], tmp_path / "run", tmp_path / "log")
    assert proc.stop() is False


def test_a_restart_first_stops_what_the_dead_run_left_behind(tmp_path):
    proc, worker = _managed(tmp_path, "exit")
    wait_for("the supervisor to exit", lambda: proc.pid() is None, 30, interval=0.05)
    proc.start(dict(os.environ), cwd=tmp_path)
    try:
        assert _gone(worker)
    finally:
        proc.stop(timeout=5)
