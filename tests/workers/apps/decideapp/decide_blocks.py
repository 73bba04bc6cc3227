"""Blocks for the concurrent-decisions test. Every DO and UNDO appends one line to an external
ledger (one ``write`` on an O_APPEND file, so lines from several processes never mix): the test
counts from it how often each effect ran. Flag files named after the request's ``id`` make a
block fail or hold, so each test case drives its own transaction into the state it needs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from switchback.engine import BlockContext

DIR = Path(os.environ.get("DECIDE_DIR", "."))


def _note(ctx: BlockContext, event: str) -> None:
    line = f"{ctx.xid} {ctx.phase} {ctx.block} {event}\n"
    fd = os.open(DIR / "ledger", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _flag(ctx: BlockContext, name: str) -> Path:
    return DIR / f"{ctx.request['id']}.{name}"


async def step(ctx: BlockContext) -> dict[str, str]:
    _note(ctx, "ran")
    return {"block": ctx.block}


async def flaky(ctx: BlockContext) -> dict[str, str]:
    """b1's DO: holds while ``<id>.hold`` exists, fails while ``<id>.fail-do`` exists."""
    _note(ctx, "ran")
    while _flag(ctx, "hold").exists():  # noqa: ASYNC110 - the test removes it
        await asyncio.sleep(0.02)
    if _flag(ctx, "fail-do").exists():
        raise RuntimeError("b1 failed on purpose")
    return {"block": ctx.block}


async def flaky_undo(ctx: BlockContext) -> dict[str, str]:
    """b1's UNDO: fails while ``<id>.fail-undo`` exists."""
    _note(ctx, "ran")
    if _flag(ctx, "fail-undo").exists():
        raise RuntimeError("b1's undo failed on purpose")
    return {"block": ctx.block}
