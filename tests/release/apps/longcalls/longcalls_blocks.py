"""Blocks for calls that last longer than a proxy's default timeout (tests/release/test_timeouts)."""

from __future__ import annotations

import asyncio
from typing import Any

from switchback.engine import BlockContext


async def sleep(ctx: BlockContext) -> dict[str, Any]:
    await asyncio.sleep(float(ctx.request["seconds"]))
    return {"slept": ctx.request["seconds"]}


async def refuse(ctx: BlockContext) -> None:
    raise RuntimeError("the device refuses: parked, its lock stays held")


async def noop(ctx: BlockContext) -> dict[str, Any]:
    return {"device": ctx.request["device"]}
