"""Resource locks (like the original's lock_keys): all keys taken before the first block, held
while parked, released on completion or rollback; a second transaction waits, then fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchback.engine import BlockContext, DecisionRefused, LockTimeout, RequestInvalid
from switchback.model import scenario

SCHEMA = {
    "type": "object",
    "required": ["device"],
    "properties": {
        "device": {"type": "string"},
        "vrf": {"type": "string"},
        "fail": {"type": "boolean"},
    },
}


def locked(**kw: Any) -> Any:
    sc = scenario("cfg", request=SCHEMA, lock_keys=["device:{device}"], **kw)

    async def push(ctx: BlockContext) -> str:
        if ctx.request.get("fail"):
            raise RuntimeError("device said no")
        return ctx.request["device"]

    sc.block("push")(push).undo(lambda ctx: None)
    return sc


async def test_lock_held_while_parked_and_released_on_rollback(engine_factory: Any) -> None:
    engine = await engine_factory(locked(lock_timeout=0.05))
    parked = await engine.run("cfg", {"device": "r1", "fail": True})
    assert parked.status == "suspended"
    assert [(lk.key, lk.xid) for lk in await engine.locks()] == [("device:r1", parked.xid)]
    with pytest.raises(LockTimeout) as info:
        await engine.start("cfg", {"device": "r1"})
    assert info.value.holder == parked.xid and info.value.key == "device:r1"
    page, _ = await engine.list()
    assert [t.xid for t in page] == [parked.xid]  # the refused call created nothing
    other = await engine.run("cfg", {"device": "r2"})  # another key is free
    assert other.status == "completed"
    await engine.rollback(parked.xid, actor="x")
    assert await engine.locks() == []
    assert (await engine.run("cfg", {"device": "r1"})).status == "completed"


async def test_second_transaction_waits_for_the_lock(engine_factory: Any) -> None:
    gate = asyncio.Event()
    order: list[str] = []
    sc = scenario("slow", request=SCHEMA, lock_keys=["device:{device}"], lock_timeout=10)

    a_started = asyncio.Event()

    async def work(ctx: BlockContext) -> None:
        order.append(f"start {ctx.request['vrf']}")
        if ctx.request["vrf"] == "a":
            a_started.set()
            await gate.wait()
        order.append(f"end {ctx.request['vrf']}")

    sc.block("work")(work)
    engine = await engine_factory(sc)
    first = await engine.start("slow", {"device": "r1", "vrf": "a"})
    second = asyncio.create_task(engine.run("slow", {"device": "r1", "vrf": "b"}))
    await a_started.wait()
    # The second transaction keeps waiting for the key while the first holds it.
    done, _ = await asyncio.wait({second}, timeout=0.2)
    assert not done and order == ["start a"]
    gate.set()
    assert (await second).status == "completed"
    assert (await engine.wait(first.xid)).status == "completed"
    assert order == ["start a", "end a", "start b", "end b"]  # never both inside the key


async def test_keys_from_several_fields_no_deadlock(engine_factory: Any) -> None:
    sc = scenario("two", request=SCHEMA, lock_keys=["device:{device}", "vrf:{vrf}"], lock_timeout=5)
    sc.block("b")(lambda ctx: None)
    engine = await engine_factory(sc)
    # Opposite orders of the same keys would deadlock with one-by-one locking; all-or-nothing cannot.
    results = await asyncio.gather(
        *(engine.run("two", {"device": "r1", "vrf": "x"}) for _ in range(10)),
        *(engine.run("two", {"device": "r1", "vrf": "x"}) for _ in range(10)),
    )
    assert all(t.status == "completed" for t in results)
    assert await engine.locks() == []


async def test_lock_key_needs_its_field(engine_factory: Any) -> None:
    sc = scenario("opt", request={"type": "object"}, lock_keys=["device:{device}"])
    sc.block("b")(lambda ctx: None)
    engine = await engine_factory(sc)
    with pytest.raises(RequestInvalid) as info:
        await engine.start("opt", {})
    assert info.value.violations == [
        {"path": "/device", "message": "required by lock key 'device:{device}'"}
    ]


async def test_rollforward_with_new_request_moves_the_lock(engine_factory: Any) -> None:
    engine = await engine_factory(locked(lock_timeout=0.05))
    parked = await engine.run("cfg", {"device": "r1", "fail": True})
    holder = await engine.run("cfg", {"device": "r9", "fail": True})
    with pytest.raises(DecisionRefused, match="device:r9"):
        await engine.rollforward(parked.xid, actor="x", request={"device": "r9"})
    assert (await engine.get(parked.xid)).status == "suspended"
    done = await engine.rollforward(parked.xid, actor="x", request={"device": "r2"})
    assert done.status == "completed"
    assert [(lk.key, lk.xid) for lk in await engine.locks()] == [("device:r9", holder.xid)]
