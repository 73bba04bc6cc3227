"""Blocks of the quickstart app: an "inventory" kept as files under $QUICKSTART_DIR.

Each DO has its UNDO beside it. Creating a file named ``MAINTENANCE`` in the inventory folder makes
``announce`` fail, to show a transaction parking and being rolled forward or back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from switchback.engine import BlockContext


def _root() -> Path:
    root = Path(os.environ.get("QUICKSTART_DIR", ".switchback/quickstart-inventory"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def reserve(ctx: BlockContext) -> dict[str, Any]:
    path = _root() / f"{ctx.request['site']}.address"
    # Idempotent: the reservation is keyed by the transaction, so a re-run finds its own.
    path.write_text(json.dumps({"prefix": ctx.request["prefix"], "xid": ctx.xid}))
    return {"prefix": ctx.request["prefix"], "file": str(path)}


def release(ctx: BlockContext) -> None:
    (_root() / f"{ctx.request['site']}.address").unlink(missing_ok=True)


def write_config(ctx: BlockContext) -> dict[str, Any]:
    prefix = ctx.outputs["reserve_address"]["prefix"]
    path = _root() / f"{ctx.request['site']}.conf"
    path.write_text(
        f"site {ctx.request['site']}\n  prefix {prefix}\n  owner {ctx.request.get('owner', '-')}\n"
    )
    return {"file": str(path), "lines": 3}


def remove_config(ctx: BlockContext) -> None:
    (_root() / f"{ctx.request['site']}.conf").unlink(missing_ok=True)


def announce(ctx: BlockContext) -> dict[str, Any]:
    if (_root() / "MAINTENANCE").exists():
        raise RuntimeError(
            "the announcement service is in maintenance (remove the MAINTENANCE file)"
        )
    path = _root() / "announced.log"
    with path.open("a") as f:
        f.write(f"{ctx.xid} {ctx.request['site']} {ctx.request['prefix']}\n")
    return {"site": ctx.request["site"], "announced": True}


def withdraw(ctx: BlockContext) -> None:
    path = _root() / "announced.log"
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if not line.startswith(ctx.xid)]
        path.write_text("".join(f"{line}\n" for line in keep))
