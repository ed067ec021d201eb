"""Start, track and stop background processes by PID file.

Each service runs in its own session (process group) so that stopping it also stops the
workers it forks. A PID file records the PID and the process start time, so a recycled PID is
never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    command: list[str]
    run_dir: Path
    log_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID of our running process, or None (stale PID files are removed)."""
        try:
            record = json.loads(self.pid_file.read_text())
            proc = psutil.Process(record["pid"])
            same = abs(proc.create_time() - record["create_time"]) < 0.01
            if same and proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return record["pid"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, psutil.Error):
            pass
        self.pid_file.unlink(missing_ok=True)
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, env: dict[str, str], cwd: Path) -> int:
        """Start the process unless it already runs; returns its PID."""
        if (pid := self.pid()) is not None:
            return pid
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self.command,
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        record = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time()}
        self.pid_file.write_text(json.dumps(record))
        return proc.pid

    def stop(self, timeout: float = 20.0, pid: int | None = None) -> bool:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``; True if it ran.

        ``pid`` (what ``start`` returned) stops that process even when its PID file no longer
        vouches for it, as when a caller gives up on a process it has just started.
        """
        pid = self.pid() or (pid if pid is not None and psutil.pid_exists(pid) else None)
        if pid is None:
            return False
        try:
            group = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            group = []
        _signal_group(pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(group, timeout=timeout)
        if alive:
            _signal_group(pid, signal.SIGKILL)
            for proc in alive:  # children that left the group (own session) too
                _kill_quietly(proc)
            psutil.wait_procs(alive, timeout=5)
        self.pid_file.unlink(missing_ok=True)
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _kill_quietly(proc: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        proc.kill()


def wait_until(predicate, timeout: float, interval: float = 1.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
