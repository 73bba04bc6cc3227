"""The polling helper itself: it returns the first truthy value and fails with what it waited for."""

from __future__ import annotations

import itertools

import pytest

from tests.eventually import NotYet, eventually, eventually_async


def test_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert eventually(lambda: next(counter) >= 3 and "ready", timeout=5) == "ready"


def test_times_out_naming_what_it_waited_for() -> None:
    with pytest.raises(NotYet, match="the moon"):
        eventually(lambda: 0, timeout=0.05, what="the moon")


def test_an_exception_is_not_yet_then_the_cause() -> None:
    def boom() -> bool:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(NotYet) as info:
        eventually(boom, timeout=0.05)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_async_accepts_awaitable_conditions() -> None:
    counter = itertools.count()

    async def ready() -> int:
        return next(counter) >= 2

    assert await eventually_async(ready, timeout=5) is True
