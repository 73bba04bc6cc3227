"""A store failure under a running transaction (not a block failure): the driver gives the
transaction back as stored — never its own record, which is ahead of the store — as soon as the
store works again, and recovery then applies the in-doubt rules."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from switchback.engine import BlockContext, Engine
from switchback.model import App, scenario
from switchback.store.sqlite import SQLiteStore
from tests.engine.test_engine import SCHEMA


async def until(cond: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        if loop.time() > deadline:
            raise AssertionError(f"not {what} within {timeout} s")
        await asyncio.sleep(0.02)


async def test_driver_store_failure_hands_the_transaction_back(tmp_path: Path) -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def b0(ctx: BlockContext) -> dict[str, int]:
        calls.append("b0")
        started.set()
        await gate.wait()
        return {"b0": 1}

    async def b1(ctx: BlockContext) -> dict[str, int]:
        calls.append("b1")
        return {"b1": 1}

    sc = scenario("s", request=SCHEMA)
    sc.block("b0", idempotent=True)(b0)
    sc.block("b1")(b1)
    app = App()
    app.add(sc)
    store = SQLiteStore(tmp_path / "switchback.db")
    store.BUSY_LIMIT = 0.05  # a write waits this long for the lock, then fails
    engine = Engine(app, store, lease_seconds=0.3)
    await engine.open()
    other = sqlite3.connect(tmp_path / "switchback.db", isolation_level=None)
    try:
        tx = await engine.start("s", {"name": "a"})
        await started.wait()
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock...
        gate.set()  # ... when b0's result is written: that write and the hand-back fail
        await until(lambda: _done(engine, tx.xid), "driver stopped")
        assert tx.xid in engine._to_release
        other.execute("ROLLBACK")

        async def handed_back() -> bool:
            stored = await engine.get(tx.xid)
            return stored.owner is None

        await until(handed_back, "handed back by the heartbeat")
        stored = await engine.get(tx.xid)
        # As stored: b0 still running (its result never landed), b1 never started.
        assert (stored.status, stored.cursor) == ("running", 0)
        assert [b.status for b in stored.blocks] == ["running", "pending"]
        # Recovery: b0 is idempotent, so it runs again, then b1.
        assert await engine.recover() == [tx.xid]
        final = await engine.wait(tx.xid)
        assert final.status == "completed"
        assert calls == ["b0", "b0", "b1"]
    finally:
        other.close()
        await engine.close()


async def _done(engine: Engine, xid: str) -> bool:
    return not engine.is_running_here(xid)
