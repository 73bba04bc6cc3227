"""Blocks for the crash tests. Every call is appended (and fsynced) to an external ledger file,
so the test can check what really ran after the process was killed with -9. A block hangs while
a marker file ``hang-<phase>-<block>`` exists in the control folder, which is where the test kills
the process; a marker ``fail-<phase>-<block>`` makes it fail."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from switchback.engine import BlockContext

CONTROL = Path(os.environ.get("CRASHTEST_DIR", "."))


def _note(ctx: BlockContext, event: str) -> None:
    with open(CONTROL / "ledger", "a") as f:
        f.write(f"{ctx.xid} {ctx.phase} {ctx.block} {event}\n")
        f.flush()
        os.fsync(f.fileno())


def _step(ctx: BlockContext) -> Any:
    _note(ctx, "start")
    marker = f"{ctx.phase}-{ctx.block}"
    while (CONTROL / f"hang-{marker}").exists():
        if not (CONTROL / f"hanging-{marker}").exists():
            (CONTROL / f"hanging-{marker}").touch()
        time.sleep(0.05)  # waiting to be killed: this is the point the test crashes us at
    if (CONTROL / f"fail-{marker}").exists():
        _note(ctx, "fail")
        raise RuntimeError(f"{marker} fails while fail-{marker} exists")
    _note(ctx, "end")
    return {"block": ctx.block, "phase": ctx.phase}


do = _step
undo = _step
