"""Property-based: random scenarios, random failures at random blocks, random decisions.

Invariants (design.md): blocks run in order; every completed DO is kept (completed) or undone
exactly once, newest first (rolled back); no UNDO of a block whose DO never started; one audit
record per decision.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchback.engine import BlockContext, DecisionRefused, Engine
from switchback.model import App, scenario
from switchback.store import open_store
from tests.engine.conftest import store_url

DECISIONS = ("rollforward", "rollback", "compensated")


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 5))
    blocks = [
        {
            "has_undo": draw(st.booleans()),
            "partial_effects": draw(st.booleans()),
            "retries": draw(st.integers(1, 2)),
        }
        for _ in range(n)
    ]
    # How many times each DO / UNDO fails before it succeeds.
    fails = {(phase, i): draw(st.integers(0, 3)) for i in range(n) for phase in ("do", "undo")}
    decisions = draw(st.lists(st.sampled_from(DECISIONS), max_size=8))
    on_failure = draw(st.sampled_from(["suspend", "rollback"]))
    return {"blocks": blocks, "fails": fails, "decisions": decisions, "on_failure": on_failure}


async def run_case(case: dict[str, Any], pg_url: str | None) -> None:
    calls: list[tuple[str, int, str]] = []  # (phase, block index, "ok" | "fail")
    fails = dict(case["fails"])

    def make(phase: str, i: int) -> Any:
        async def fn(ctx: BlockContext) -> Any:
            if fails[(phase, i)] > 0:
                fails[(phase, i)] -= 1
                calls.append((phase, i, "fail"))
                raise RuntimeError("injected")
            calls.append((phase, i, "ok"))
            return i

        return fn

    sc = scenario("p", request={"type": "object"}, on_failure=case["on_failure"])
    for i, b in enumerate(case["blocks"]):
        h = sc.block(
            f"b{i}", retry={"attempts": b["retries"]}, partial_effects=b["partial_effects"]
        )(make("do", i))
        if b["has_undo"]:
            h.undo(make("undo", i))
    app = App()
    app.add(sc)
    with tempfile.TemporaryDirectory() as tmp:
        # PostgreSQL: one schema for all examples of the test (xids are unique anyway).
        store = open_store(pg_url) if pg_url else open_store(tmp, synchronous="OFF")
        async with Engine(app, store) as engine:
            tx = await engine.run("p", {})
            accepted = 0
            for d in case["decisions"]:
                try:
                    if d == "rollforward":
                        tx = await engine.rollforward(tx.xid, actor="t")
                    elif d == "rollback":
                        tx = await engine.rollback(tx.xid, actor="t")
                    else:
                        tx = await engine.mark_compensated(tx.xid, actor="t", reason="by hand")
                    accepted += 1
                except DecisionRefused:
                    pass
                tx = await engine.get(tx.xid)
            check(case, tx, calls, accepted)


def check(case: dict[str, Any], tx: Any, calls: list[tuple[str, int, str]], accepted: int) -> None:
    assert tx.status in ("completed", "suspended", "rolled_back", "rollback_failed")
    do_seq = [(i, r) for p, i, r in calls if p == "do"]
    # Forward order: each DO follows a failure of the same block (retry / rollforward) or a
    # success of the block just before it.
    for k, (i, _) in enumerate(do_seq):
        if k == 0:
            assert i == 0
        else:
            prev_i, prev_r = do_seq[k - 1]
            assert (prev_i == i and prev_r == "fail") or (prev_i == i - 1 and prev_r == "ok"), (
                do_seq
            )
    phases = [p for p, _, _ in calls]
    if "undo" in phases:  # rollback is final: no DO after the first UNDO
        assert "do" not in phases[phases.index("undo") :]
    do_ok = Counter(i for p, i, r in calls if p == "do" and r == "ok")
    do_started = {i for p, i, _ in calls if p == "do"}
    undo_ok = [i for p, i, r in calls if p == "undo" and r == "ok"]
    assert {i for p, i, _ in calls if p == "undo"} <= do_started  # never UNDO what never started
    assert undo_ok == sorted(set(undo_ok), reverse=True)  # each at most once, newest first
    if tx.status == "completed":
        assert all(b.status == "done" for b in tx.blocks)
        assert not undo_ok
    if tx.status == "rolled_back":
        for i, (b, spec) in enumerate(zip(tx.blocks, case["blocks"], strict=True)):
            if do_ok[i]:
                assert b.status == "undone", (i, b)  # every completed DO was undone
            compensated = (b.note or "").startswith("compensated")
            if b.status == "undone" and spec["has_undo"] and not compensated:
                assert undo_ok.count(i) == 1, (i, calls)
            elif b.status == "failed":
                assert not spec["partial_effects"] and undo_ok.count(i) == 0
            else:
                assert undo_ok.count(i) == 0
    # One audit record per accepted decision, plus the start and any policy rollback.
    assert len([a for a in tx.audit if a.actor == "t"]) == accepted
    assert tx.audit[0].action == "start"
    assert all(a.actor in ("t", "api", "policy") for a in tx.audit)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_random_failures_and_decisions_keep_the_invariants(
    case: dict[str, Any], store_kind: str, tmp_path: Path
) -> None:
    pg_url = store_url(store_kind, tmp_path) if store_kind == "postgres" else None
    asyncio.run(run_case(case, pg_url))
