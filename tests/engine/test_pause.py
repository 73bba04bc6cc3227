"""Pause: a running transaction parks at its next block boundary (the running block finishes,
the next does not start), a waiting one at once; rollforward goes on, rollback undoes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchback.engine import BlockContext, DecisionRefused
from switchback.model import scenario
from tests.engine.test_engine import SCHEMA, Ledger


async def pause_requested(engine: Any, xid: str, timeout: float = 10.0) -> None:
    """Until the engine driving ``xid`` holds a pause request for it (polled, with a deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while xid not in engine._pauses:
        if loop.time() > deadline:
            raise AssertionError(f"no pause request for {xid} within {timeout} s")
        await asyncio.sleep(0.005)


def gated(ledger: Ledger, gate: asyncio.Event, started: asyncio.Event) -> Any:
    """Block b1 waits for ``gate`` (after telling ``started``), so a test can act while it runs."""
    do = ledger.make("b1", "do")

    async def fn(ctx: BlockContext) -> Any:
        started.set()
        await gate.wait()
        return await do(ctx)

    return fn


def three(ledger: Ledger, gate: asyncio.Event, started: asyncio.Event, name: str = "p") -> Any:
    sc = scenario(name, request=SCHEMA)
    sc.block("b0")(ledger.make("b0", "do")).undo(ledger.make("b0", "undo"))
    sc.block("b1")(gated(ledger, gate, started)).undo(ledger.make("b1", "undo"))
    sc.block("b2")(ledger.make("b2", "do")).undo(ledger.make("b2", "undo"))
    return sc


async def test_pause_parks_at_the_next_boundary_then_rollforward(engine_factory: Any) -> None:
    ledger, gate, started = Ledger(), asyncio.Event(), asyncio.Event()
    engine = await engine_factory(three(ledger, gate, started))
    tx = await engine.start("p", {"name": "a"})
    await started.wait()
    pausing = asyncio.ensure_future(engine.pause(tx.xid, actor="ops", reason="maintenance"))
    await pause_requested(engine, tx.xid)  # the request is in before the running block ends
    gate.set()
    tx = await pausing
    assert (tx.status, tx.reason) == ("suspended", "paused")
    assert [b.status for b in tx.blocks] == ["done", "done", "pending"]
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1"]  # b2 never started
    stored = await engine.get(tx.xid)
    assert [a.action for a in stored.audit] == ["start", "pause"]
    assert stored.audit[1].actor == "ops" and stored.audit[1].reason == "maintenance"
    with pytest.raises(DecisionRefused, match="running or waiting"):
        await engine.pause(tx.xid, actor="ops")  # already parked
    tx = await engine.rollforward(tx.xid, actor="ops")
    assert tx.status == "completed"
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1", "do:b2"]  # each DO once


async def test_paused_transaction_rolls_back(engine_factory: Any) -> None:
    ledger, gate, started = Ledger(), asyncio.Event(), asyncio.Event()
    engine = await engine_factory(three(ledger, gate, started))
    tx = await engine.start("p", {"name": "a"})
    await started.wait()
    pausing = asyncio.ensure_future(engine.pause(tx.xid, actor="ops"))
    await pause_requested(engine, tx.xid)
    gate.set()
    assert (await pausing).reason == "paused"
    tx = await engine.rollback(tx.xid, actor="ops")
    assert tx.status == "rolled_back"
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1", "undo:b1", "undo:b0"]


async def test_pause_of_a_waiting_transaction_holds_it_past_its_signal(
    engine_factory: Any,
) -> None:
    ledger = Ledger()
    sc = scenario("w", request=SCHEMA)
    sc.block("before")(ledger.make("before", "do"))
    sc.wait("approval")
    sc.block("after")(ledger.make("after", "do"))
    engine = await engine_factory(sc)
    tx = await engine.run("w", {"name": "a"})
    assert tx.status == "waiting"
    tx = await engine.pause(tx.xid, actor="ops")
    assert (tx.status, tx.reason) == ("suspended", "paused")
    assert tx.blocks[1].status == "pending"
    # A signal now is kept, but does not resume a paused transaction.
    tx = await engine.signal(tx.xid, "approval", {"ok": 1}, actor="dave")
    assert tx.status == "suspended"
    tx = await engine.rollforward(tx.xid, actor="ops")
    assert tx.status == "completed"  # the kept signal is consumed by the wait
    assert tx.blocks[1].output["actor"] == "dave"
    assert ledger.phases(tx.xid) == ["do:before", "do:after"]


async def test_pause_request_is_spent_when_the_transaction_stops_anyway(
    engine_factory: Any,
) -> None:
    """A pause that finds the last block running ends with the transaction completed; the
    request does not linger to pause a later run."""
    ledger, gate, started = Ledger(), asyncio.Event(), asyncio.Event()
    sc = scenario("last", request=SCHEMA)
    sc.block("b0")(ledger.make("b0", "do"))
    sc.block("b1")(gated(ledger, gate, started))
    engine = await engine_factory(sc)
    tx = await engine.start("last", {"name": "a"})
    await started.wait()
    pausing = asyncio.ensure_future(engine.pause(tx.xid, actor="ops"))
    await pause_requested(engine, tx.xid)
    gate.set()
    assert (await pausing).status == "completed"
    assert await engine.store.pending_signal(tx.xid, "__pause__") is None


async def test_pause_through_another_worker(engine_factory: Any) -> None:
    """Worker B asks to pause a transaction worker A drives: A's heartbeat sees the request
    and A parks it at the next boundary."""
    ledger, gate, started = Ledger(), asyncio.Event(), asyncio.Event()
    sc = three(ledger, gate, started)
    a = await engine_factory(sc, lease_seconds=0.3)  # heartbeat every 0.1 s
    b = await engine_factory(sc, lease_seconds=0.3)
    tx = await a.start("p", {"name": "a"})
    await started.wait()
    seen = await b.pause(tx.xid, actor="ops")  # A holds it: B records the request only
    assert seen.status == "running"
    await pause_requested(a, tx.xid)  # A's heartbeat picks the request up
    gate.set()
    tx = await a.wait(tx.xid)
    assert (tx.status, tx.reason) == ("suspended", "paused")
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1"]
