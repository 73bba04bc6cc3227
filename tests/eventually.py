"""The one polling helper of the test suite: wait for a condition with a deadline.

Tests never sleep to let something happen; they say what they wait for and how long they are
prepared to wait. The condition's last value is returned (so ``tx = eventually(lambda: ...)``
both waits and reads), and a timeout names what was awaited and the last value seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

INTERVAL = 0.02  # between two looks; short enough not to slow tests, long enough not to spin


class NotYet(AssertionError):
    """The condition did not hold within the deadline."""


def eventually(
    cond: Callable[[], T], *, timeout: float = 10.0, what: str = "", interval: float = INTERVAL
) -> T:
    """Call ``cond`` until it returns a truthy value (returned) or ``timeout`` seconds pass
    (``NotYet``). An exception from ``cond`` counts as "not yet" until the deadline, then is
    raised as the cause."""
    deadline = time.monotonic() + timeout
    last: Any = None
    error: BaseException | None = None
    while True:
        try:
            last, error = cond(), None
            if last:
                return last
        except Exception as exc:  # not ready yet (a connection refused, a missing file, ...)
            error = exc
        if time.monotonic() >= deadline:
            raise NotYet(
                f"timed out after {timeout:g} s waiting for {what or cond!r}; last: {last!r}"
            ) from error
        time.sleep(interval)


async def eventually_async(
    cond: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    what: str = "",
    interval: float = INTERVAL,
) -> T:
    """``eventually`` for a test running on an event loop: ``cond`` may be a plain function or
    return an awaitable; the loop keeps running between two looks."""
    deadline = time.monotonic() + timeout
    last: Any = None
    error: BaseException | None = None
    while True:
        try:
            value = cond()
            if isinstance(value, Awaitable):
                value = await value
            last, error = value, None
            if last:
                return last  # type: ignore[no-any-return]
        except Exception as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise NotYet(
                f"timed out after {timeout:g} s waiting for {what or cond!r}; last: {last!r}"
            ) from error
        await asyncio.sleep(interval)
