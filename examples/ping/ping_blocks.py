from __future__ import annotations

import asyncio
import os
from typing import Any

from switchback.engine import BlockContext


async def pong(ctx: BlockContext) -> dict[str, Any]:
    return {"n": ctx.request.get("n")}


def _ledger(ctx: BlockContext, event: str) -> None:
    # Optional: an external record of every call, for tests ($PING_LEDGER).
    path = os.environ.get("PING_LEDGER")
    if path:
        with open(path, "a") as f:
            f.write(f"{ctx.xid} {ctx.phase} {event} {os.environ.get('SWITCHBACK_VERSION', '-')}\n")
            f.flush()
            os.fsync(f.fileno())


async def work(ctx: BlockContext) -> dict[str, Any]:
    _ledger(ctx, "start")
    await asyncio.sleep(float(ctx.request["seconds"]))
    _ledger(ctx, "end")
    return {"slept": ctx.request["seconds"], "by": os.environ.get("SWITCHBACK_VERSION")}


async def unwork(ctx: BlockContext) -> None:
    _ledger(ctx, "undo")
