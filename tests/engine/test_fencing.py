"""Fencing in one process, on every store: a worker whose lease was taken over cannot commit a
block result. Two engines share a store; the second one's clock runs ahead, so it sees the first
one's lease as expired (tests/workers/ does the same with real, paused processes)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from switchback.engine import BlockContext
from switchback.model import scenario


def gated(idempotent: bool, calls: list[tuple[str, int]], gate: asyncio.Event,
          entered: asyncio.Event) -> Any:  # fmt: skip
    sc = scenario("f", request={"type": "object"})

    async def first(ctx: BlockContext) -> str:
        calls.append(("b0", ctx.attempt))
        if ctx.attempt == 1:  # the stale owner's attempt: held until the test lets it go
            entered.set()
            await gate.wait()
        return f"b0 by attempt {ctx.attempt}"

    async def second(ctx: BlockContext) -> str:
        calls.append(("b1", ctx.attempt))
        return "b1"

    sc.block("b0", idempotent=idempotent)(first)
    sc.block("b1")(second)
    return sc


async def test_stale_owner_cannot_commit_after_takeover_parks(engine_factory: Any) -> None:
    calls: list[tuple[str, int]] = []
    gate, entered = asyncio.Event(), asyncio.Event()
    a = await engine_factory(gated(False, calls, gate, entered), lease_seconds=5)
    b = await engine_factory(
        gated(False, calls, gate, entered), lease_seconds=5, clock=lambda: time.time() + 60
    )
    tx = await a.start("f", {})
    await asyncio.wait_for(entered.wait(), 10)
    assert await b.recover() == [tx.xid]  # A's lease looks expired to B: B takes over
    taken = await b.get(tx.xid)
    assert taken.owner is None and (taken.status, taken.reason) == ("suspended", "interrupted")
    assert taken.fence == 2
    gate.set()  # A's DO returns; its write "b0 done + b1 started" carries the stale fence
    await a.wait(tx.xid, timeout=10)
    final = await b.get(tx.xid)
    assert (final.status, final.reason) == ("suspended", "interrupted")
    assert [blk.status for blk in final.blocks] == ["failed", "pending"]
    assert final.blocks[0].output is None  # A's result never landed
    assert calls == [("b0", 1)]  # and b1 never started
    assert [x.action for x in final.audit] == ["start", "park_in_doubt"]


async def test_idempotent_block_is_rerun_by_the_new_owner(engine_factory: Any) -> None:
    calls: list[tuple[str, int]] = []
    gate, entered = asyncio.Event(), asyncio.Event()
    a = await engine_factory(gated(True, calls, gate, entered), lease_seconds=5)
    b = await engine_factory(
        gated(True, calls, gate, entered), lease_seconds=5, clock=lambda: time.time() + 60
    )
    tx = await a.start("f", {})
    await asyncio.wait_for(entered.wait(), 10)
    assert await b.recover() == [tx.xid]
    done = await b.wait(tx.xid, timeout=10)
    assert done.status == "completed" and done.blocks[0].output == "b0 by attempt 2"
    gate.set()
    await a.wait(tx.xid, timeout=10)
    final = await b.get(tx.xid)
    assert final.status == "completed" and final.blocks[0].output == "b0 by attempt 2"
    assert calls == [("b0", 1), ("b0", 2), ("b1", 1)]  # b1 once: A's late result was refused
    assert [x.action for x in final.audit] == ["start", "rerun_in_doubt"]
