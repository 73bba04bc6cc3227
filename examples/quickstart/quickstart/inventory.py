"""Blocks of the quickstart app: an "inventory" kept as files under $QUICKSTART_DIR.

Each DO has its UNDO beside it, and each is written the way a block against a real system must
be (this is the example people copy):

* a DO owns what it creates: every file it writes names its transaction (``xid``);
* a DO never overwrites what another transaction owns: a site reserved by someone else is a
  clear error (``tokyo-1 is reserved by transaction X``), and the transaction parks with nothing
  changed; a re-run of the same transaction (after a crash, a retry) finds its own and is done;
* an UNDO touches only what carries its own xid, and "already gone" is done.

Creating a file named ``MAINTENANCE`` in the inventory folder makes ``announce`` fail, to show a
transaction parking and being rolled forward or back.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from switchback.engine import BlockContext


class Conflict(RuntimeError):
    """What the block would create belongs to another transaction: it is left as it is."""


def _root() -> Path:
    root = Path(os.environ.get("QUICKSTART_DIR", ".switchback/quickstart-inventory"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    """One writer at a time in the inventory (several transactions run at once under `serve`):
    a read-then-write of a file must not interleave with another's."""
    root = _root()
    with (root / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(path: Path, text: str) -> None:
    """Atomically: a reader sees the old file or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _owner(path: Path) -> str | None:
    """The xid a file of the inventory names (None: absent)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    if path.suffix == ".address":
        return str(json.loads(text).get("xid"))
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "xid":
            return value
    return "someone else"  # a file no transaction wrote: never ours


def _claim(path: Path, ctx: BlockContext, what: str) -> bool:
    """True if ``path`` is already this transaction's (a re-run); raise if another's."""
    owner = _owner(path)
    if owner is None:
        return False
    if owner != ctx.xid:
        raise Conflict(f"{ctx.request['site']} {what} by transaction {owner}")
    return True


def reserve(ctx: BlockContext) -> dict[str, Any]:
    with _locked() as root:
        path = root / f"{ctx.request['site']}.address"
        if not _claim(path, ctx, "is reserved"):
            _write(path, json.dumps({"prefix": ctx.request["prefix"], "xid": ctx.xid}))
    return {"prefix": ctx.request["prefix"], "file": str(path)}


def release(ctx: BlockContext) -> dict[str, Any]:
    with _locked() as root:
        path = root / f"{ctx.request['site']}.address"
        owner = _owner(path)
        if owner != ctx.xid:  # absent (never made, or already released) or another's
            return {"released": False, "note": f"not this transaction's ({owner or 'absent'})"}
        path.unlink()
    return {"released": True}


def write_config(ctx: BlockContext) -> dict[str, Any]:
    prefix = ctx.outputs["reserve_address"]["prefix"]
    with _locked() as root:
        path = root / f"{ctx.request['site']}.conf"
        _claim(path, ctx, "is configured")
        lines = [
            f"site {ctx.request['site']}",
            f"  prefix {prefix}",
            f"  owner {ctx.request.get('owner', '-')}",
            f"  xid {ctx.xid}",
        ]
        _write(path, "\n".join(lines) + "\n")
    return {"file": str(path), "lines": len(lines)}


def remove_config(ctx: BlockContext) -> dict[str, Any]:
    with _locked() as root:
        path = root / f"{ctx.request['site']}.conf"
        owner = _owner(path)
        if owner != ctx.xid:
            return {"removed": False, "note": f"not this transaction's ({owner or 'absent'})"}
        path.unlink()
    return {"removed": True}


def announce(ctx: BlockContext) -> dict[str, Any]:
    if (_root() / "MAINTENANCE").exists():
        raise RuntimeError(
            "the announcement service is in maintenance (remove the MAINTENANCE file)"
        )
    with _locked() as root:
        path = root / "announced.log"
        lines = path.read_text().splitlines() if path.exists() else []
        if not any(line.split(" ", 1)[0] == ctx.xid for line in lines):  # a re-run: done
            lines.append(f"{ctx.xid} {ctx.request['site']} {ctx.request['prefix']}")
            _write(path, "".join(f"{line}\n" for line in lines))
    return {"site": ctx.request["site"], "announced": True}


def withdraw(ctx: BlockContext) -> dict[str, Any]:
    with _locked() as root:
        path = root / "announced.log"
        lines = path.read_text().splitlines() if path.exists() else []
        keep = [line for line in lines if line.split(" ", 1)[0] != ctx.xid]
        if len(keep) != len(lines):
            _write(path, "".join(f"{line}\n" for line in keep))
    return {"withdrawn": len(lines) - len(keep)}
