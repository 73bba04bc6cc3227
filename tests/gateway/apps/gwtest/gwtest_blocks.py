"""Blocks of the gateway test app. ``charge`` fails while the file ``$GWTEST_FLAG_DIR/fail``
exists, so a test can park a transaction and then let a rollforward succeed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from switchback.engine import BlockContext


def _flag(name: str) -> Path:
    return Path(os.environ.get("GWTEST_FLAG_DIR", ".")) / name


async def reserve(ctx: BlockContext) -> dict[str, Any]:
    return {"item": ctx.request["item"], "qty": ctx.request["qty"]}


async def unreserve(ctx: BlockContext) -> dict[str, Any]:
    return {"released": ctx.output}


async def charge(ctx: BlockContext) -> dict[str, Any]:
    if _flag("fail").exists():
        raise RuntimeError("payment service unavailable (flag file present)")
    return {"charged": ctx.request["qty"] * 10, "reserved": ctx.outputs["reserve"]}


async def refund(ctx: BlockContext) -> dict[str, Any]:
    return {"refunded": True}


async def echo(ctx: BlockContext) -> dict[str, Any]:
    return {"request": ctx.request, "block": ctx.block}


async def slow(ctx: BlockContext) -> dict[str, Any]:
    # Runs until the file "release" appears: lets a test kill the process mid-block.
    _flag("started").write_text(ctx.xid)
    while not _flag("release").exists():  # noqa: ASYNC110 - another process creates it
        await asyncio.sleep(0.05)
    return {"slow": True}


async def noop(ctx: BlockContext) -> None:
    return None


async def sleepy(ctx: BlockContext) -> None:
    await asyncio.sleep(5)
