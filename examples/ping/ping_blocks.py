from __future__ import annotations

from typing import Any

from switchback.engine import BlockContext


async def pong(ctx: BlockContext) -> dict[str, Any]:
    return {"n": ctx.request.get("n")}
