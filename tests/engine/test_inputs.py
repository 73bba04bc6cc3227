"""The platform's text and number rules (engine/inputs.py) as the engine applies them to callers
other than the HTTP gateway (the CLI, the Python API), and to what blocks produce — the same on
both stores: refused input leaves nothing behind, and no transaction becomes unreadable."""

from __future__ import annotations

from typing import Any

import pytest

from switchback.engine import BlockContext, TextInvalid
from switchback.engine.inputs import json_problems
from switchback.model import scenario
from tests.engine.test_engine import SCHEMA, Ledger, linear

BAD = ["a\x00b", "\udfff", "x\ud800"]


@pytest.mark.parametrize("bad", BAD)
async def test_a_request_with_bad_text_creates_nothing(engine_factory: Any, bad: str) -> None:
    engine = await engine_factory(linear(Ledger()))
    with pytest.raises(TextInvalid) as info:
        await engine.start("s", {"name": "a", "tags": {"k": [bad]}})
    assert [v["path"] for v in info.value.violations] == ["/tags/k/0"]
    with pytest.raises(TextInvalid):
        await engine.start("s", {"name": "a", bad: 1})
    with pytest.raises(TextInvalid, match="idempotency_key"):
        await engine.start("s", {"name": "a"}, idempotency_key=bad)
    with pytest.raises(TextInvalid, match="/x"):
        await engine.start("s", {"name": "a", "x": float("inf")})
    assert (await engine.list())[0] == []


@pytest.mark.parametrize("bad", BAD)
async def test_decisions_with_bad_text_are_refused_before_any_claim(
    engine_factory: Any, bad: str
) -> None:
    ledger = Ledger()
    ledger.fail[("do", "b1")] = 1
    engine = await engine_factory(linear(ledger))
    tx = await engine.run("s", {"name": "a"})
    for decide in (
        lambda: engine.rollforward(tx.xid, actor="x", reason=bad),
        lambda: engine.rollforward(tx.xid, actor="x", request={"name": bad}),
        lambda: engine.rollforward(tx.xid, actor="x", from_block=bad),
        lambda: engine.rollback(tx.xid, actor=bad),
        lambda: engine.mark_compensated(tx.xid, actor="x", reason=bad),
        lambda: engine.pause(tx.xid, actor="x", reason=bad),
        lambda: engine.signal(tx.xid, bad, actor="x"),
        lambda: engine.signal(tx.xid, "go", {"p": bad}, actor="x"),
        lambda: engine.get(bad),
        lambda: engine.list(scenario=bad),
    ):
        with pytest.raises(TextInvalid):
            await decide()
    stored = await engine.get(tx.xid)
    assert (stored.status, stored.owner) == ("suspended", None)
    assert [a.action for a in stored.audit] == ["start"]
    assert (await engine.rollback(tx.xid, actor="x")).status == "rolled_back"


@pytest.mark.parametrize("value", [{"v": "a\x00"}, {"v": ["\udfff"]}, {"v": float("nan")}])
async def test_a_block_returning_what_no_store_keeps_fails_clearly(
    engine_factory: Any, value: Any
) -> None:
    """Its DO ran, but its output cannot be stored: the block fails (as one returning
    something not JSON at all does), the transaction parks, readable on every store."""

    async def odd(ctx: BlockContext) -> Any:
        return value

    sc = scenario("o", request=SCHEMA)
    sc.block("odd")(odd)
    engine = await engine_factory(sc)
    tx = await engine.run("o", {"name": "a"})
    assert (tx.status, tx.reason) == ("suspended", "failed")
    assert (
        "cannot store" in tx.blocks[0].error["message"] or "JSON" in tx.blocks[0].error["message"]
    )
    stored = await engine.get(tx.xid)
    assert stored.status == "suspended" and stored.blocks[0].status == "failed"


async def test_an_error_message_with_a_nul_is_kept_readable(engine_factory: Any) -> None:
    """A device's error text with a NUL in it (PostgreSQL could not store it: the driver
    failed and the transaction was recovered as if the process had died)."""

    async def device(ctx: BlockContext) -> None:
        raise RuntimeError("device said: bad\x00state \udcff")

    sc = scenario("d", request=SCHEMA)
    sc.block("device")(device)
    engine = await engine_factory(sc)
    tx = await engine.run("d", {"name": "a"})
    assert (tx.status, tx.reason) == ("suspended", "failed")
    stored = await engine.get(tx.xid)
    assert stored.blocks[0].error["message"] == "device said: bad\ufffdstate \ufffd"
    assert not json_problems(stored.blocks[0].error)


def test_json_problems_finds_every_place_and_nothing_else() -> None:
    ok = {"a": ["text", 1, 2.5, None, True, "\U0001f600", "\\u0000 as text"], "é": "ü"}
    assert json_problems(ok) == []
    bad = {"a": ["ok", "x\x00"], "\ud800": 1, "n": float("-inf"), "deep": [{"k": "\udc00"}]}
    assert sorted(p["path"] for p in json_problems(bad)) == [
        "/a/1",
        "/deep/0/k",
        "/n",
        "/\ufffd",
    ]
