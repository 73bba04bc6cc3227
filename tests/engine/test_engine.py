"""The engine's contract (design.md "Engine invariants"), one behaviour per test."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchback.engine import (
    BlockContext,
    Busy,
    DecisionRefused,
    IdempotencyConflict,
    RequestInvalid,
    UnknownTransaction,
)
from switchback.model import RetryPolicy, scenario

SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "n": {"type": "integer", "minimum": 0}},
}


class Ledger:
    """Records every DO/UNDO call, and fails chosen calls on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []  # (xid, phase, block)
        self.fail: dict[tuple[str, str], int] = {}  # (phase, block) -> remaining failures

    def make(self, name: str, phase: str) -> Any:
        async def fn(ctx: BlockContext) -> Any:
            self.calls.append((ctx.xid, phase, name))
            left = self.fail.get((phase, name), 0)
            if left:
                self.fail[(phase, name)] = left - 1
                raise RuntimeError(f"{phase} {name} failed on purpose")
            if phase == "do":
                return {
                    "block": name,
                    "attempt": ctx.attempt,
                    "seen": sorted(ctx.outputs),
                    "req": ctx.request,
                }
            return {
                "undid": name,
                "do_output": ctx.output,
                "do_error": (ctx.error or {}).get("type"),
            }

        return fn

    def phases(self, xid: str) -> list[str]:
        return [f"{p}:{b}" for x, p, b in self.calls if x == xid]


def linear(ledger: Ledger, n: int = 3, *, name: str = "s", **kw: Any) -> Any:
    sc = scenario(name, path=f"/{name}", request=SCHEMA, **kw)
    for i in range(n):
        h = sc.block(f"b{i}")(ledger.make(f"b{i}", "do"))
        h.undo(ledger.make(f"b{i}", "undo"))
    return sc


async def test_blocks_run_in_order_and_see_earlier_outputs(engine_factory: Any) -> None:
    ledger = Ledger()
    engine = await engine_factory(linear(ledger, 4))
    tx = await engine.run("s", {"name": "a"})
    assert tx.status == "completed"
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1", "do:b2", "do:b3"]
    assert [b.status for b in tx.blocks] == ["done"] * 4
    assert tx.blocks[3].output["seen"] == ["b0", "b1", "b2"]
    assert tx.result == tx.blocks[3].output  # default result: the last block's output
    assert [a.action for a in tx.audit] == ["start"]


async def test_invalid_request_creates_nothing(engine_factory: Any) -> None:
    engine = await engine_factory(linear(Ledger()))
    with pytest.raises(RequestInvalid) as info:
        await engine.start("s", {"n": -1})
    paths = {v["path"] for v in info.value.violations}
    assert paths == {"/", "/n"}  # missing "name" (at the root) and n < 0, both listed
    page, _ = await engine.list()
    assert page == []


async def test_failure_parks_with_error_and_keeps_later_blocks_pending(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b1")] = 1
    engine = await engine_factory(linear(ledger))
    tx = await engine.run("s", {"name": "a"})
    assert tx.status == "suspended" and tx.reason == "failed"
    assert [b.status for b in tx.blocks] == ["done", "failed", "pending"]
    err = tx.blocks[1].error
    assert (
        err["type"] == "RuntimeError"
        and "on purpose" in err["message"]
        and "Traceback" in err["traceback"]
    )
    assert tx.owner is None  # parked transactions are owned by nobody


async def test_retry_policy_then_success(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b0")] = 2
    sc = scenario("r", request=SCHEMA)
    sc.block("b0", retry=RetryPolicy(attempts=3, backoff=0.001))(ledger.make("b0", "do"))
    engine = await engine_factory(sc)
    tx = await engine.run("r", {"name": "a"})
    assert tx.status == "completed"
    assert tx.blocks[0].attempts == 3
    assert tx.blocks[0].output["attempt"] == 3


async def test_retry_exhausted_parks(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b0")] = 5
    sc = scenario("r", request=SCHEMA)
    sc.block("b0", retry={"attempts": 2})(ledger.make("b0", "do"))
    engine = await engine_factory(sc)
    tx = await engine.run("r", {"name": "a"})
    assert tx.status == "suspended"
    assert tx.blocks[0].attempts == 2
    assert ledger.phases(tx.xid) == ["do:b0", "do:b0"]


async def test_rollforward_from_failed_block(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b1")] = 1
    engine = await engine_factory(linear(ledger))
    tx = await engine.run("s", {"name": "a"})
    tx = await engine.rollforward(tx.xid, actor="alice", reason="peer fixed")
    assert tx.status == "completed"
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1", "do:b1", "do:b2"]
    decision = tx.audit[-1]
    assert (decision.actor, decision.action, decision.reason) == (
        "alice",
        "rollforward",
        "peer fixed",
    )
    assert decision.input["from"] == "b1"


async def test_rollforward_with_corrected_request_is_validated(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b1")] = 1
    engine = await engine_factory(linear(ledger))
    tx = await engine.run("s", {"name": "a"})
    with pytest.raises(RequestInvalid):
        await engine.rollforward(tx.xid, actor="alice", request={"name": 5})
    still = await engine.get(tx.xid)
    assert still.status == "suspended" and still.request == {"name": "a"}
    assert [a.action for a in still.audit] == ["start"]  # a refused decision leaves no record
    tx = await engine.rollforward(tx.xid, actor="alice", request={"name": "b"})
    assert tx.status == "completed"
    assert tx.blocks[2].output["req"] == {"name": "b"}
    assert tx.audit[-1].input["request"] == {"name": "b"}


async def test_rollforward_from_earlier_block(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b2")] = 1
    engine = await engine_factory(linear(ledger))
    tx = await engine.run("s", {"name": "a"})
    with pytest.raises(RequestInvalid, match="unknown block"):
        await engine.rollforward(tx.xid, actor="a", from_block="nope")
    tx = await engine.rollforward(tx.xid, actor="a", from_block="b1")
    assert tx.status == "completed"
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1", "do:b2", "do:b1", "do:b2"]


async def test_rollback_runs_undos_newest_first_including_failed_block(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b2")] = 1
    engine = await engine_factory(linear(ledger, 4))
    tx = await engine.run("s", {"name": "a"})
    tx = await engine.rollback(tx.xid, actor="bob", reason="give up")
    assert tx.status == "rolled_back"
    assert ledger.phases(tx.xid)[3:] == ["undo:b2", "undo:b1", "undo:b0"]
    assert [b.status for b in tx.blocks] == ["undone", "undone", "undone", "pending"]
    # The failed block's UNDO got its DO's error; the others their DO's output.
    assert tx.blocks[2].undo_output["do_error"] == "RuntimeError"
    assert tx.blocks[1].undo_output["do_output"]["block"] == "b1"
    assert (tx.audit[-1].actor, tx.audit[-1].action) == ("bob", "rollback")


async def test_block_without_partial_effects_skips_its_own_undo(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b1")] = 1
    sc = scenario("p", request=SCHEMA)
    sc.block("b0")(ledger.make("b0", "do")).undo(ledger.make("b0", "undo"))
    sc.block("b1", partial_effects=False)(ledger.make("b1", "do")).undo(ledger.make("b1", "undo"))
    engine = await engine_factory(sc)
    tx = await engine.run("p", {"name": "a"})
    tx = await engine.rollback(tx.xid, actor="x")
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1", "undo:b0"]
    assert [b.status for b in tx.blocks] == ["undone", "failed"]


async def test_on_failure_rollback_policy(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b1")] = 1
    engine = await engine_factory(linear(ledger, on_failure="rollback"))
    tx = await engine.run("s", {"name": "a"})
    assert tx.status == "rolled_back"
    assert ledger.phases(tx.xid) == ["do:b0", "do:b1", "undo:b1", "undo:b0"]
    assert (tx.audit[-1].actor, tx.audit[-1].action) == ("policy", "rollback")


async def test_failed_undo_parks_then_retry_then_compensate(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b2")] = 1
    ledger.fail[("undo", "b1")] = 2
    engine = await engine_factory(linear(ledger))
    tx = await engine.run("s", {"name": "a"})
    tx = await engine.rollback(tx.xid, actor="x")
    assert tx.status == "rollback_failed" and tx.reason == "undo_failed"
    assert [b.status for b in tx.blocks] == ["done", "undo_failed", "undone"]
    with pytest.raises(DecisionRefused):
        await engine.rollforward(tx.xid, actor="x")
    tx = await engine.rollback(tx.xid, actor="x", reason="retry")
    assert tx.status == "rollback_failed"
    assert tx.audit[-1].action == "retry_rollback"
    with pytest.raises(DecisionRefused, match="reason"):
        await engine.mark_compensated(tx.xid, actor="x", reason=" ")
    tx = await engine.mark_compensated(tx.xid, actor="carol", reason="deleted by hand")
    assert tx.status == "rolled_back"
    assert tx.blocks[1].note == "compensated by carol: deleted by hand"
    # b1's UNDO tried twice, b0's UNDO ran exactly once after the compensation.
    assert ledger.phases(tx.xid)[3:] == ["undo:b2", "undo:b1", "undo:b1", "undo:b0"]
    assert [a.action for a in tx.audit] == ["start", "rollback", "retry_rollback", "compensated"]


async def test_decisions_that_do_not_apply_are_refused(engine_factory: Any) -> None:
    engine = await engine_factory(linear(Ledger()))
    tx = await engine.run("s", {"name": "a"})
    for decide in (
        engine.rollforward(tx.xid, actor="x"),
        engine.rollback(tx.xid, actor="x"),
        engine.mark_compensated(tx.xid, actor="x", reason="r"),
    ):
        with pytest.raises(DecisionRefused, match="completed"):
            await decide
    with pytest.raises(UnknownTransaction):
        await engine.rollback("no-such-xid", actor="x")
    assert (await engine.get(tx.xid)).status == "completed"


async def test_decision_on_a_running_transaction_is_refused(engine_factory: Any) -> None:
    gate = asyncio.Event()

    async def slow(ctx: BlockContext) -> None:
        await gate.wait()

    sc = scenario("slow", request=SCHEMA)
    sc.block("wait_gate")(slow)
    engine = await engine_factory(sc)
    tx = await engine.start("slow", {"name": "a"})
    with pytest.raises(Busy):
        await engine.rollback(tx.xid, actor="x")
    gate.set()
    assert (await engine.wait(tx.xid)).status == "completed"


async def test_wait_block_and_durable_signal(engine_factory: Any) -> None:
    ledger = Ledger()
    sc = scenario("w", request=SCHEMA)
    sc.block("before")(ledger.make("before", "do"))
    sc.wait("approval")
    sc.block("after")(ledger.make("after", "do"))
    engine = await engine_factory(sc)
    tx = await engine.run("w", {"name": "a"})
    assert tx.status == "waiting"
    assert [b.status for b in tx.blocks] == ["done", "running", "pending"]
    with pytest.raises(DecisionRefused, match="no wait block"):
        await engine.signal(tx.xid, "other", actor="x")
    tx = await engine.signal(tx.xid, "approval", {"ok": True}, actor="dave")
    assert tx.status == "completed"
    assert tx.blocks[1].output == {"signal": "approval", "payload": {"ok": True}, "actor": "dave"}
    assert ledger.phases(tx.xid) == ["do:before", "do:after"]


async def test_signal_sent_before_the_wait_is_kept(engine_factory: Any) -> None:
    gate = asyncio.Event()

    async def first(ctx: BlockContext) -> None:
        await gate.wait()

    sc = scenario("w2", request=SCHEMA)
    sc.block("first")(first)
    sc.wait("go")
    engine = await engine_factory(sc)
    tx = await engine.start("w2", {"name": "a"})
    await engine.signal(tx.xid, "go", actor="early")
    gate.set()
    tx = await engine.wait(tx.xid)
    assert tx.status == "completed"
    assert tx.blocks[1].output["actor"] == "early"


async def test_rollback_of_a_waiting_transaction(engine_factory: Any) -> None:
    ledger = Ledger()
    sc = scenario("w3", request=SCHEMA)
    sc.block("b0")(ledger.make("b0", "do")).undo(ledger.make("b0", "undo"))
    sc.wait("approval")
    engine = await engine_factory(sc)
    tx = await engine.run("w3", {"name": "a"})
    tx = await engine.rollback(tx.xid, actor="reviewer", reason="rejected")
    assert tx.status == "rolled_back"
    assert ledger.phases(tx.xid) == ["do:b0", "undo:b0"]
    assert tx.blocks[1].status == "pending"


async def test_block_timeout_parks(engine_factory: Any) -> None:
    async def hang(ctx: BlockContext) -> None:
        await asyncio.Event().wait()

    sc = scenario("t", request=SCHEMA)
    sc.block("hang", timeout=0.05)(hang)
    engine = await engine_factory(sc)
    tx = await engine.run("t", {"name": "a"})
    assert tx.status == "suspended"
    assert tx.blocks[0].error["type"] == "TimeoutError"


async def test_transaction_timeout_parks_with_reason(engine_factory: Any) -> None:
    async def hang(ctx: BlockContext) -> None:
        await asyncio.Event().wait()

    sc = scenario("tt", request=SCHEMA, timeout=0.05)
    sc.block("hang")(hang)
    engine = await engine_factory(sc)
    tx = await engine.run("tt", {"name": "a"})
    assert (tx.status, tx.reason) == ("suspended", "timeout")
    assert tx.blocks[0].error["type"] == "TransactionTimeout"


async def test_output_must_be_json(engine_factory: Any) -> None:
    sc = scenario("j", request=SCHEMA)
    sc.block("bad")(lambda ctx: {"when": object()})
    engine = await engine_factory(sc)
    tx = await engine.run("j", {"name": "a"})
    assert tx.status == "suspended"
    assert "JSON" in tx.blocks[0].error["message"]


async def test_sync_blocks_run_in_threads(engine_factory: Any) -> None:
    import threading

    main = threading.get_ident()
    sc = scenario("sync", request=SCHEMA)
    sc.block("where")(lambda ctx: threading.get_ident() != main)
    engine = await engine_factory(sc)
    tx = await engine.run("sync", {"name": "a"})
    assert tx.result is True


async def test_idempotency_key(engine_factory: Any) -> None:
    ledger = Ledger()
    engine = await engine_factory(linear(ledger))
    a = await engine.run("s", {"name": "a"}, idempotency_key="k1")
    b = await engine.run("s", {"name": "a"}, idempotency_key="k1")
    assert a.xid == b.xid
    assert len(ledger.phases(a.xid)) == 3  # ran once
    with pytest.raises(IdempotencyConflict):
        await engine.start("s", {"name": "other"}, idempotency_key="k1")


async def test_idempotency_key_is_the_callers_and_names_one_scenario(engine_factory: Any) -> None:
    """The same key and body sent to another scenario is a conflict that says so — never the
    first scenario's transaction; another caller's same key is another call."""
    ledger = Ledger()
    engine = await engine_factory(linear(ledger, name="s1"), linear(ledger, name="s2"))
    a = await engine.run("s1", {"name": "a"}, idempotency_key="k1", actor="alice")
    with pytest.raises(IdempotencyConflict, match="scenario 's1'") as info:
        await engine.start("s2", {"name": "a"}, idempotency_key="k1", actor="alice")
    assert (info.value.xid, info.value.scenario) == (a.xid, "s1")
    bob = await engine.run("s2", {"name": "a"}, idempotency_key="k1", actor="bob")
    assert bob.xid != a.xid and bob.scenario == "s2" and bob.status == "completed"
    again = await engine.run("s2", {"name": "a"}, idempotency_key="k1", actor="bob")
    assert again.xid == bob.xid
    page, _ = await engine.list()
    assert sorted(t.xid for t in page) == sorted([a.xid, bob.xid])


async def test_plan_is_a_dry_run(engine_factory: Any) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b1")] = 1
    engine = await engine_factory(linear(ledger))
    tx = await engine.run("s", {"name": "a"})
    before = len(ledger.calls)
    plan = await engine.plan(tx.xid)
    assert [s["block"] for s in plan["rollforward"]] == ["b1", "b2"]
    assert [s["block"] for s in plan["rollback"]] == ["b1", "b0"]
    assert plan["rollback"][1]["do_output"]["block"] == "b0"
    assert len(ledger.calls) == before
    assert (await engine.get(tx.xid)).status == "suspended"


async def test_list_filters_and_pages(engine_factory: Any) -> None:
    ledger = Ledger()
    engine = await engine_factory(linear(ledger, 1))
    xids = [(await engine.run("s", {"name": str(i)})).xid for i in range(5)]
    page, cursor = await engine.list(limit=2)
    assert [t.xid for t in page] == xids[::-1][:2] and cursor
    page2, _ = await engine.list(limit=10, cursor=cursor)
    assert [t.xid for t in page2] == xids[::-1][2:]
    assert (await engine.list(status="suspended"))[0] == []
