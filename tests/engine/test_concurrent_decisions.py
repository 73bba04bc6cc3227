"""Concurrent decisions on one transaction: exactly one wins per parked state, in one engine or
across two (two workers on one store); the others are refused with the reason (Busy /
DecisionRefused, HTTP 409), nothing escapes as another error, every DO/UNDO runs at most once per
accepted decision, and the audit trail has exactly one record of the decision.

The HTTP form of the same, with real server processes, is tests/workers/test_concurrent_decisions.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchback.engine import BlockContext, DecisionRefused, Engine
from switchback.model import scenario
from tests.engine.test_engine import SCHEMA, Ledger
from tests.eventually import eventually_async

N = 8


def three(ledger: Ledger, gate: asyncio.Event | None = None) -> Any:
    """b0 → b1 (not idempotent; fails on demand; waits for ``gate`` if given) → approve (wait) → b2."""
    sc = scenario("c", request=SCHEMA)
    sc.block("b0")(ledger.make("b0", "do")).undo(ledger.make("b0", "undo"))
    b1 = ledger.make("b1", "do")

    async def gated(ctx: BlockContext) -> Any:
        if gate is not None:
            await gate.wait()
        return await b1(ctx)

    sc.block("b1")(gated).undo(ledger.make("b1", "undo"))
    sc.wait("approve")
    sc.block("b2")(ledger.make("b2", "do")).undo(ledger.make("b2", "undo"))
    return sc


async def engines(engine_factory: Any, sc: Any, workers: int) -> list[Engine]:
    return [await engine_factory(sc) for _ in range(workers)]


async def race(calls: list[Any]) -> tuple[list[Any], list[BaseException]]:
    """Fire every call at once; split the outcomes into accepted and refused. Anything other
    than a DecisionRefused (a FencedOut, a store error...) fails the test."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    unexpected = [r for r in lost if not isinstance(r, DecisionRefused)]
    assert not unexpected, f"not refusals: {unexpected!r}"
    return won, lost


def actions(tx: Any, action: str) -> int:
    return sum(1 for a in tx.audit if a.action == action)


async def settled(engine: Engine, xid: str, status: str) -> Any:
    return await eventually_async(
        lambda: _status_is(engine, xid, status), timeout=15, what=f"{xid} {status}"
    )


async def _status_is(engine: Engine, xid: str, status: str) -> Any:
    tx = await engine.get(xid)
    return tx if tx.status == status and tx.owner is None else None


async def parked_at_b1(engine: Engine, ledger: Ledger) -> str:
    ledger.fail[("do", "b1")] = 1
    tx = await engine.run("c", {"name": "a"})
    assert (tx.status, tx.reason) == ("suspended", "failed")
    return tx.xid


@pytest.mark.parametrize("workers", [1, 2])
async def test_rollforward_exactly_one_wins(engine_factory: Any, workers: int) -> None:
    ledger = Ledger()
    es = await engines(engine_factory, three(ledger), workers)
    xid = await parked_at_b1(es[0], ledger)
    won, lost = await race(
        [es[i % workers].rollforward(xid, actor=f"op{i}", wait=False) for i in range(N)]
    )
    assert len(won) == 1 and len(lost) == N - 1
    tx = await settled(es[0], xid, "waiting")
    assert ledger.phases(xid).count("do:b1") == 2  # the failed try and the one rollforward
    assert actions(tx, "rollforward") == 1
    assert [b.status for b in tx.blocks] == ["done", "done", "running", "pending"]


@pytest.mark.parametrize("workers", [1, 2])
async def test_rollback_exactly_one_wins(engine_factory: Any, workers: int) -> None:
    ledger = Ledger()
    es = await engines(engine_factory, three(ledger), workers)
    xid = await parked_at_b1(es[0], ledger)
    won, lost = await race(
        [es[i % workers].rollback(xid, actor=f"op{i}", wait=False) for i in range(N)]
    )
    assert len(won) == 1 and len(lost) == N - 1
    tx = await settled(es[0], xid, "rolled_back")
    assert ledger.phases(xid) == ["do:b0", "do:b1", "undo:b1", "undo:b0"]
    assert actions(tx, "rollback") == 1


@pytest.mark.parametrize("workers", [1, 2])
async def test_mark_compensated_exactly_one_wins(engine_factory: Any, workers: int) -> None:
    ledger = Ledger()
    es = await engines(engine_factory, three(ledger), workers)
    xid = await parked_at_b1(es[0], ledger)
    ledger.fail[("undo", "b1")] = 1
    tx = await es[0].rollback(xid, actor="ops")
    assert tx.status == "rollback_failed"
    won, lost = await race(
        [
            es[i % workers].mark_compensated(xid, actor=f"op{i}", reason="fixed", wait=False)
            for i in range(N)
        ]
    )
    assert len(won) == 1 and len(lost) == N - 1
    tx = await settled(es[0], xid, "rolled_back")
    assert ledger.phases(xid) == ["do:b0", "do:b1", "undo:b1", "undo:b0"]
    assert actions(tx, "compensated") == 1


@pytest.mark.parametrize("workers", [1, 2])
async def test_signal_exactly_one_wins(engine_factory: Any, workers: int) -> None:
    ledger = Ledger()
    es = await engines(engine_factory, three(ledger), workers)
    tx = await es[0].run("c", {"name": "a"})
    assert tx.status == "waiting"
    won, lost = await race(
        [
            es[i % workers].signal(tx.xid, "approve", {"n": i}, actor=f"op{i}", wait=False)
            for i in range(N)
        ]
    )
    assert len(won) == 1 and len(lost) == N - 1
    done = await settled(es[0], tx.xid, "completed")
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1", "do:b2"]
    assert actions(done, "signal") == 1
    # No refused signal was kept to satisfy a later wait.
    assert await es[0].store.pending_signal(tx.xid, "approve") is None


@pytest.mark.parametrize("workers", [1, 2])
async def test_pause_exactly_one_wins(engine_factory: Any, workers: int) -> None:
    ledger, gate = Ledger(), asyncio.Event()
    es = await engines(engine_factory, three(ledger, gate), workers)
    tx = await es[0].start("c", {"name": "a"})
    await eventually_async(lambda: ledger.phases(tx.xid) == ["do:b0"], what="b0 done")
    won, lost = await race(
        [es[i % workers].pause(tx.xid, actor=f"op{i}", wait=False) for i in range(N)]
    )
    assert len(won) == 1 and len(lost) == N - 1
    gate.set()
    paused = await settled(es[0], tx.xid, "suspended")
    assert paused.reason == "paused"
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1"]
    assert actions(paused, "pause") == 1


async def test_decisions_of_every_kind_at_once(engine_factory: Any) -> None:
    """Rollforward, rollback and (not applying) mark-compensated racing on one parked
    transaction, from two workers: one wins. b1 is held while they race, so that no later state
    (waiting, which a rollback would apply to) is reached before every decision is answered."""
    ledger, gate = Ledger(), asyncio.Event()
    gate.set()
    es = await engines(engine_factory, three(ledger, gate), 2)
    xid = await parked_at_b1(es[0], ledger)
    gate.clear()
    calls = []
    for i in range(N):
        e = es[i % 2]
        calls += [
            e.rollforward(xid, actor="a", wait=False),
            e.rollback(xid, actor="b", wait=False),
            e.mark_compensated(xid, actor="d", reason="r", wait=False),
        ]
    won, _ = await race(calls)
    gate.set()
    assert len(won) == 1
    tx = await eventually_async(
        lambda: _status_in(es[0], xid, ("waiting", "rolled_back")), timeout=15, what="settled"
    )
    assert actions(tx, "rollforward") + actions(tx, "rollback") == 1
    assert ledger.phases(xid).count("do:b1") + ledger.phases(xid).count("undo:b1") == 2


async def _status_in(engine: Engine, xid: str, statuses: tuple[str, ...]) -> Any:
    tx = await engine.get(xid)
    return tx if tx.status in statuses and tx.owner is None else None


async def test_recovery_sweep_racing_a_decision(engine_factory: Any) -> None:
    """recover() on the same engine while a rollforward is being decided does not take the
    transaction from under it (which once left it suspended/interrupted with its DO done)."""
    ledger = Ledger()
    e = (await engines(engine_factory, three(ledger), 1))[0]
    for _ in range(5):
        xid = await parked_at_b1(e, ledger)
        await asyncio.gather(e.rollforward(xid, actor="ops", wait=False), e.recover(), e.recover())
        tx = await settled(e, xid, "waiting")
        assert tx.reason is None
        assert actions(tx, "park_in_doubt") == 0
        assert ledger.phases(xid).count("do:b1") == 2
