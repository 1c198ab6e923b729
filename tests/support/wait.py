"""The one way the tests wait for something to become true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """`wait_until` gave up: the check never became truthy in time."""


def wait_until(
    check: Callable[[], T], timeout: float = 20.0, what: str = "condition", interval: float = 0.02
) -> T:
    """Poll `check()` until it returns something truthy and return that; fail after `timeout` seconds.

    The check runs at least once, and once more after the deadline, so a slow last poll still counts.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what} (last: {value!r})")
        time.sleep(interval)
