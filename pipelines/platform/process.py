"""Start, track and stop background processes by PID file.

Each service runs in its own session (process group) so that stopping it also stops the
workers it forks. A PID file records the PID and the process start time, so a recycled PID is
never mistaken for ours. It also records a token put in the service's environment, which every
descendant inherits: a worker that moved to a session of its own, or that was forked while
its supervisor was being stopped and so was orphaned, still carries it and is stopped too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

# The environment variable that marks every process a ManagedProcess started.
PROCESS_TOKEN_VAR = "FRAUD_PLATFORM_PROCESS_TOKEN"


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

    def _record(self) -> dict:
        try:
            return json.loads(self.pid_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def pid(self) -> int | None:
        """The PID of our running process, or None.

        A stale PID file is removed, unless descendants of that process still run: ``stop``
        needs its token to find them.
        """
        record = self._record()
        try:
            proc = psutil.Process(record["pid"])
            same = abs(proc.create_time() - record["create_time"]) < 0.01
            if same and proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return record["pid"]
        except (KeyError, psutil.Error):
            pass
        if not marked_processes(record.get("token")):
            self.pid_file.unlink(missing_ok=True)
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, env: dict[str, str], cwd: Path) -> int:
        """Start the process unless it already runs; returns its PID.

        Descendants left over from an earlier run whose leader died are stopped first.
        """
        if (pid := self.pid()) is not None:
            return pid
        if self.pid_file.exists():
            self.stop()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        token = f"{self.name}-{uuid.uuid4().hex}"
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                self.command,
                env={**env, PROCESS_TOKEN_VAR: token},
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        record = {
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "token": token,
        }
        self.pid_file.write_text(json.dumps(record))
        return proc.pid

    def stop(self, timeout: float = 20.0, pid: int | None = None) -> bool:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``; True if it ran.

        Descendants that left the group, or were orphaned while the group stopped, are found by
        the token in their environment and stopped as well. ``pid`` (what ``start`` returned)
        stops that process even when its PID file no longer vouches for it, as when a caller
        gives up on a process it has just started.
        """
        token = self._record().get("token")
        pid = self.pid() or (pid if pid is not None and psutil.pid_exists(pid) else None)
        strays = marked_processes(token)
        if pid is None and not strays:
            self.pid_file.unlink(missing_ok=True)
            return False
        group = list(strays)
        if pid is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                leader = psutil.Process(pid)
                group += [leader, *leader.children(recursive=True)]
            _signal_group(pid, signal.SIGTERM)
        for proc in strays:
            _signal_quietly(proc, signal.SIGTERM)
        _, alive = psutil.wait_procs(set(group), timeout=timeout)
        if pid is not None and alive:
            _signal_group(pid, signal.SIGKILL)
        # Whatever is still alive, and whatever was forked while the group was stopping.
        leftovers = set(alive) | set(marked_processes(token))
        for proc in leftovers:
            _signal_quietly(proc, signal.SIGKILL)
        psutil.wait_procs(leftovers, timeout=5)
        self.pid_file.unlink(missing_ok=True)
        return True


def marked_processes(token: str | None) -> list[psutil.Process]:
    """The live processes whose environment carries ``token`` in ``PROCESS_TOKEN_VAR``."""
    if not token:
        return []
    found = []
    caller = psutil.Process()
    mine = {caller.pid, *(p.pid for p in caller.parents())}  # never the caller's own line
    for proc in psutil.process_iter():
        if proc.pid in mine:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(PROCESS_TOKEN_VAR) == token:
                found.append(proc)
    return found


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _signal_quietly(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


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
