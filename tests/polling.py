"""Waiting on a condition with a generous bound, never a fixed sleep followed by an assertion:
on a loaded 2-core CI machine a fixed sleep is sometimes too short."""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.02) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds (polled every
    ``interval`` seconds, and once more at the deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
