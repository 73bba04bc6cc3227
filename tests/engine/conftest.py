"""Engine fixtures: a fresh store per test, parametrised over every store kind (SQLite in a
temporary directory, PostgreSQL in a schema of its own that is dropped afterwards), and small
apps built with the Python builder.

PostgreSQL is not optional: when it is unreachable the postgres-parametrised tests fail with the
reason (CI must run both stores). SWITCHBACK_TEST_PG overrides the server URL.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from switchback.engine import Engine
from switchback.model import App, Scenario
from switchback.store import Store, open_store

STORE_KINDS = ["sqlite", "postgres"]
PG_URL = os.environ.get("SWITCHBACK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# Per test session, so that two runs on one server (CI jobs in parallel) never share a schema.
_SESSION = secrets.token_hex(3)


def pg_schema(tmp_path: Path) -> str:
    """One schema per test (its tmp_path is unique), so tests can run in parallel."""
    return f"t_{_SESSION}_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]


def store_url(kind: str, tmp_path: Path) -> str:
    """Where a test's store lives, as given to ``open_store`` / ``--db``."""
    if kind == "sqlite":
        return str(tmp_path / "data")
    if kind == "postgres":
        return f"{PG_URL}?schema={pg_schema(tmp_path)}"
    raise ValueError(kind)


def make_store(kind: str, tmp_path: Path) -> Store:
    return open_store(store_url(kind, tmp_path))


def drop_pg_schema(tmp_path: Path) -> None:
    import psycopg

    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{pg_schema(tmp_path)}" CASCADE')
    except psycopg.OperationalError:
        pass  # unreachable: the test itself has already failed saying so


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield request.param
    if request.param == "postgres":
        drop_pg_schema(tmp_path)


@pytest.fixture
def store_factory(store_kind: str, tmp_path: Path) -> Callable[[], Store]:
    return lambda: make_store(store_kind, tmp_path)


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
