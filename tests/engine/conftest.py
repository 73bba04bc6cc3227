"""Engine fixtures: a fresh store per test (SQLite here; the PostgreSQL store joins the same
parametrisation), and small apps built with the Python builder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from switchback.engine import Engine
from switchback.model import App, Scenario
from switchback.store import Store, open_store

STORE_KINDS = ["sqlite"]


def make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "sqlite":
        return open_store(tmp_path / "data")
    raise ValueError(kind)


@pytest.fixture(params=STORE_KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    return lambda: make_store(request.param, tmp_path)


@pytest.fixture
async def engine_factory(store_factory: Callable[[], Store]) -> AsyncIterator[Callable[..., Any]]:
    """Build engines on the same store location; all are closed at the end of the test."""
    opened: list[Engine] = []

    async def make(*scenarios: Scenario, **kwargs: Any) -> Engine:
        app = App()
        for sc in scenarios:
            app.add(sc)
        engine = Engine(app, store_factory(), **kwargs)
        await engine.open()
        opened.append(engine)
        return engine

    yield make
    for e in opened:
        await e.close()
