"""The suite's one way to wait: poll a probe until it answers, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(describe: str, probe: Callable[[], T], timeout: float, interval: float = 1.0) -> T:
    """Call ``probe`` every ``interval`` seconds until it returns something other than None or
    False, and return that; fail naming ``describe`` (and the last answer) after ``timeout``
    seconds.

    A probe may raise AssertionError itself to stop the wait early (a run that failed).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {describe} (last: {value!r})"
            )
        time.sleep(interval)
