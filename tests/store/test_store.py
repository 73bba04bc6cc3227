"""The store contract: one commit per write, fencing, claims, idempotency keys, migrations."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from switchback.store import DuplicateIdempotencyKey, FencedOut, open_store, owner_is_dead
from switchback.store.records import AuditRecord, BlockRecord, TxRecord
from switchback.store.sqlite import SCHEMA_VERSION


def new_tx(xid: str = "x1", **kw: object) -> TxRecord:
    now = time.time()
    tx = TxRecord(xid=xid, scenario="s", status="running", request={"a": 1}, created_at=now, updated_at=now,
                  owner="me", lease_until=now + 10, fence=1, **kw)  # type: ignore[arg-type]  # fmt: skip
    tx.blocks = [BlockRecord(xid=xid, index=i, name=f"b{i}") for i in range(3)]
    return tx


async def test_write_is_fenced(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.open()
    try:
        tx = new_tx()
        await store.create(tx, tx.blocks, AuditRecord("x1", 1.0, "a", "start"))
        # Another worker takes the transaction over (its lease expired): the fence moves on.
        taken = await store.claim("x1", "other", 10, now=time.time() + 60)
        assert taken is not None and taken.fence == 2 and taken.owner == "other"
        tx.blocks[0].status = "done"
        with pytest.raises(FencedOut):
            await store.write(tx, [tx.blocks[0]])
        stored = await store.load("x1")
        assert stored is not None and stored.blocks[0].status == "pending"  # nothing of it landed
        taken.blocks[0].status = "done"
        await store.write(taken, [taken.blocks[0]])
        assert (await store.load("x1")).blocks[0].status == "done"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_claim_refuses_a_live_lease(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.open()
    try:
        tx = new_tx()
        tx.owner = f"{os.uname().nodename}:{os.getpid()}:abcd"  # a live process on this host
        await store.create(tx, tx.blocks)
        assert await store.claim("x1", "someone-else", 10, now=time.time()) is None
        assert await store.claim("nope", "me", 10, now=time.time()) is None
        assert await store.heartbeat(tx.owner, 10, time.time()) == 1
    finally:
        await store.close()


def test_owner_is_dead_detects_killed_processes() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = f"{os.uname().nodename}:{proc.pid}:x"
    assert not owner_is_dead(owner)
    proc.kill()
    proc.wait()
    assert owner_is_dead(owner)
    assert not owner_is_dead(f"elsewhere:{proc.pid}:x")  # on another host only the lease counts


async def test_idempotency_key_is_unique(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.open()
    try:
        a = new_tx("a", idempotency_key="k")
        await store.create(a, a.blocks)
        b = new_tx("b", idempotency_key="k")
        with pytest.raises(DuplicateIdempotencyKey) as info:
            await store.create(b, b.blocks)
        assert info.value.existing.xid == "a"
        assert await store.load("b") is None
    finally:
        await store.close()


async def test_schema_is_versioned_and_refuses_a_newer_one(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / "switchback.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="upgrade switchback"):
        await open_store(tmp_path).open()


async def test_reopen_keeps_everything(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.open()
    tx = new_tx()
    await store.create(tx, tx.blocks, AuditRecord("x1", 1.0, "a", "start", input={"k": [1, 2]}))
    await store.close()
    again = open_store(tmp_path)
    await again.open()
    try:
        got = await again.load("x1")
        assert got is not None and got.request == {"a": 1} and len(got.blocks) == 3
        assert got.audit[0].input == {"k": [1, 2]}
    finally:
        await again.close()
