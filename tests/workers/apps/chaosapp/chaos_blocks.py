"""Blocks for the chaos test. Every DO and UNDO appends its start and its end (or failure) to an
external ledger, one ``write`` on an O_APPEND file per line, so lines from several processes never
mix and survive a ``kill -9`` of the writer. Failures are random (probabilities from the env)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

from switchback.engine import BlockContext

LEDGER = Path(os.environ.get("CHAOS_DIR", ".")) / "ledger"
DO_FAIL = float(os.environ.get("CHAOS_DO_FAIL", "0.05"))
UNDO_FAIL = float(os.environ.get("CHAOS_UNDO_FAIL", "0.05"))


def _note(ctx: BlockContext, event: str) -> None:
    # CLOCK_MONOTONIC is system-wide on Linux: comparable between the worker processes.
    line = (
        f"{time.monotonic_ns()} {os.getpid()} {ctx.xid} {ctx.phase} {ctx.block} {event} "
        f"{ctx.request['device']}\n"
    )
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def step(ctx: BlockContext) -> dict[str, str]:
    _note(ctx, "start")
    await asyncio.sleep(random.uniform(0, 0.03))  # some work, so kills land inside blocks too
    if random.random() < (DO_FAIL if ctx.phase == "do" else UNDO_FAIL):
        _note(ctx, "fail")
        raise RuntimeError(f"random {ctx.phase} failure of {ctx.block}")
    _note(ctx, "end")
    return {"block": ctx.block}
