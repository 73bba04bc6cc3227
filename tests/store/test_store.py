"""The store contract: one commit per write, fencing, claims, idempotency keys, migrations."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from switchback.store import (
    DuplicateIdempotencyKey,
    FencedOut,
    LockHeld,
    Store,
    StoreError,
    open_store,
    owner_is_dead,
)
from switchback.store.records import AuditRecord, BlockRecord, SignalRecord, TxRecord
from switchback.store.sqlite import SCHEMA_VERSION
from tests.engine.conftest import PG_URL, pg_schema


def new_tx(xid: str = "x1", **kw: object) -> TxRecord:
    now = time.time()
    tx = TxRecord(xid=xid, scenario="s", status="running", request={"a": 1}, created_at=now, updated_at=now,
                  owner="me", lease_until=now + 10, fence=1, **kw)  # type: ignore[arg-type]  # fmt: skip
    tx.blocks = [BlockRecord(xid=xid, index=i, name=f"b{i}") for i in range(3)]
    return tx


async def test_write_is_fenced(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
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


async def test_claim_refuses_a_live_lease(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
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


async def test_a_claim_is_exclusive_even_for_its_owner(store_factory: Callable[[], Store]) -> None:
    """Two decisions of one process must not both hold a transaction: a claim never hands it
    to whoever holds it, its own owner included (until the lease runs out)."""
    store = store_factory()
    await store.open()
    try:
        tx = new_tx()
        tx.owner = tx.lease_until = None
        await store.create(tx, tx.blocks)
        now = time.time()
        first = await store.claim("x1", "me", 10, now)
        assert first is not None and first.owner == "me"
        assert await store.claim("x1", "me", 10, now) is None
        again = await store.claim("x1", "me", 10, now + 11)  # the lease ran out
        assert again is not None and again.fence == first.fence + 1
    finally:
        await store.close()


async def test_add_signal_applies_only_where_it_can_be_consumed(
    store_factory: Callable[[], Store],
) -> None:
    import asyncio

    from switchback.store import SignalRefused

    stores = [store_factory() for _ in range(3)]
    for s in stores:
        await s.open()
    store = stores[0]
    try:
        tx = new_tx()
        tx.status, tx.cursor = "waiting", 1
        await store.create(tx, tx.blocks)
        now = time.time()

        def add(s: Store, name: str = "go", **kw: Any) -> Any:
            sig = SignalRecord(xid="x1", name=name, payload=None, at=now, actor="me")
            return s.add_signal(sig, AuditRecord("x1", now, "me", "signal"), **kw)

        with pytest.raises(SignalRefused) as info:
            await add(store, statuses=["running"])
        assert (info.value.status, info.value.pending) == ("waiting", None)
        with pytest.raises(SignalRefused):
            await add(store, statuses=["waiting"], max_cursor=0)  # past the last wait for it
        with pytest.raises(SignalRefused) as info:
            await store.add_signal(
                SignalRecord(xid="nope", name="go", payload=None, at=now, actor="me"),
                AuditRecord("nope", now, "me", "signal"),
            )
        assert info.value.status is None  # no such transaction
        # Concurrent adds of one name from three "processes": exactly one is stored.
        got = await asyncio.gather(
            *(add(s, statuses=["waiting"], max_cursor=1) for s in stores for _ in range(3)),
            return_exceptions=True,
        )
        stored = [g for g in got if isinstance(g, int)]
        refused = [g for g in got if isinstance(g, SignalRefused)]
        assert len(stored) == 1 and len(refused) == 8
        assert all(r.pending is not None and r.pending.id == stored[0] for r in refused)
        await add(store, name="other")  # another name is independent
        loaded = await store.load("x1")
        assert loaded is not None
        assert [a.action for a in loaded.audit] == ["signal", "signal"]  # nothing refused landed
        await store.write(loaded, consume_signal=stored[0])
        await add(store, statuses=["waiting"])  # consumed: the name is free again
    finally:
        for s in stores:
            await s.close()


def test_owner_is_dead_detects_killed_processes() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owner = f"{os.uname().nodename}:{proc.pid}:x"
    assert not owner_is_dead(owner)
    proc.kill()
    proc.wait()
    assert owner_is_dead(owner)
    assert not owner_is_dead(f"elsewhere:{proc.pid}:x")  # on another host only the lease counts


async def test_idempotency_key_is_unique(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    await store.open()
    try:
        a = new_tx("a", idempotency_key="k", idempotency_scope="me")
        await store.create(a, a.blocks)
        b = new_tx("b", idempotency_key="k", idempotency_scope="me")
        with pytest.raises(DuplicateIdempotencyKey) as info:
            await store.create(b, b.blocks)
        assert info.value.existing.xid == "a"
        assert await store.load("b") is None
    finally:
        await store.close()


async def test_sqlite_schema_is_versioned_and_refuses_a_newer_one(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.open()
    await store.close()
    db = sqlite3.connect(tmp_path / "switchback.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="upgrade switchback"):
        await open_store(tmp_path).open()


async def test_reopen_keeps_everything(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    await store.open()
    tx = new_tx()
    await store.create(tx, tx.blocks, AuditRecord("x1", 1.0, "a", "start", input={"k": [1, 2]}))
    await store.close()
    again = store_factory()
    await again.open()
    try:
        got = await again.load("x1")
        assert got is not None and got.request == {"a": 1} and len(got.blocks) == 3
        assert got.audit[0].input == {"k": [1, 2]}
    finally:
        await again.close()


async def test_locks_all_or_nothing_and_released_when_final(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    await store.open()
    try:
        a = new_tx("a")
        await store.create(a, a.blocks, locks=["k1", "k2"])
        b = new_tx("b")
        with pytest.raises(LockHeld) as info:
            await store.create(b, b.blocks, locks=["k0", "k2"])
        assert (info.value.key, info.value.holder) == ("k2", "a")
        assert await store.load("b") is None
        assert [(lk.key, lk.xid) for lk in await store.list_locks()] == [("k1", "a"), ("k2", "a")]
        # A new lock set (rollforward with a corrected request): k2 is kept, k1 dropped, k3 taken.
        await store.write(a, locks=["k2", "k3"])
        assert [(lk.key, lk.xid) for lk in await store.list_locks()] == [("k2", "a"), ("k3", "a")]
        c = new_tx("c")
        await store.create(c, c.blocks, locks=["k9"])
        a.blocks[0].status = "done"
        with pytest.raises(LockHeld):  # refused as a whole: the block change does not land
            await store.write(a, [a.blocks[0]], locks=["k2", "k9"])
        assert (await store.load("a")).blocks[0].status == "pending"  # type: ignore[union-attr]
        a.status = "completed"
        await store.write(a)
        assert [(lk.key, lk.xid) for lk in await store.list_locks()] == [("k9", "c")]
        await store.create(b, b.blocks, locks=["k0", "k2"])  # free again
    finally:
        await store.close()


async def test_list_newest_first_with_cursor_orphans_signals_meta(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    await store.open()
    try:
        now = time.time()
        for i in range(5):
            tx = new_tx(f"x{i}")
            tx.status = "running" if i % 2 else "suspended"
            tx.owner = None if i == 1 else "elsewhere:1:x"
            tx.lease_until = now - 1 if i == 3 else now + 60
            await store.create(tx, tx.blocks)
        page, cursor = await store.list(limit=2)
        assert [t.xid for t in page] == ["x4", "x3"] and cursor
        page, cursor = await store.list(limit=2, cursor=cursor)
        assert [t.xid for t in page] == ["x2", "x1"]
        page, cursor = await store.list(limit=2, cursor=cursor)
        assert [t.xid for t in page] == ["x0"] and cursor is None
        assert [t.xid for t in (await store.list(status="running"))[0]] == ["x3", "x1"]
        # A cursor past the 64-bit range (the CLI passes what it is given) means "from the top".
        assert len((await store.list(cursor=str(2**70)))[0]) == 5
        assert await store.orphans(now, ["running"]) == ["x1", "x3"]
        sig = SignalRecord(xid="x0", name="go", payload={"p": 1}, at=now, actor="me")
        sid = await store.add_signal(sig, AuditRecord("x0", now, "me", "signal"))
        pending = await store.pending_signal("x0", "go")
        assert pending is not None and pending.id == sid and pending.payload == {"p": 1}
        x0 = await store.load("x0")
        assert x0 is not None
        await store.write(x0, consume_signal=sid)
        assert await store.pending_signal("x0", "go") is None
        assert await store.get_meta("app_dir") is None
        await store.set_meta("app_dir", "/a")
        await store.set_meta("app_dir", {"b": [1]})
        assert await store.get_meta("app_dir") == {"b": [1]}
    finally:
        await store.close()


async def test_waiting_lists_unowned_waits_with_their_start_and_pending_signals(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    await store.open()
    try:
        now = time.time()
        for i in range(4):
            tx = new_tx(f"w{i}")
            tx.status = "waiting" if i < 3 else "running"
            tx.cursor = 1
            tx.blocks[1].started_at = now - 10 * i
            tx.owner = "elsewhere:1:x" if i == 2 else None  # w2 has a live owner
            await store.create(tx, tx.blocks)
        sig = SignalRecord(xid="w1", name="approve", payload=None, at=now, actor="me")
        await store.add_signal(sig, AuditRecord("w1", now, "me", "signal"))
        rows = await store.waiting(now)
        assert [(r.xid, r.cursor, r.signalled) for r in rows] == [("w0", 1, False), ("w1", 1, True)]
        assert rows[1].started_at == pytest.approx(now - 10)
        assert rows[0].scenario == "s"
    finally:
        await store.close()


async def test_concurrent_claims_exactly_one_wins(store_factory: Callable[[], Store]) -> None:
    """Several stores (as in several worker processes) race to take over an expired lease."""
    import asyncio

    stores = [store_factory() for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        tx = new_tx()
        tx.owner = "elsewhere:1:x"
        tx.lease_until = time.time() - 1
        await stores[0].create(tx, tx.blocks)
        now = time.time()
        got = await asyncio.gather(
            *(s.claim("x1", f"w{i}", 10, now) for i, s in enumerate(stores) for _ in range(3))
        )
        winners = [t.owner for t in got if t is not None]
        assert len(winners) == 1  # one claim, not one owner claiming it thrice
        stored = await stores[0].load("x1")
        assert stored is not None and stored.owner in winners
    finally:
        for s in stores:
            await s.close()


async def test_concurrent_creates_on_one_lock_key(store_factory: Callable[[], Store]) -> None:
    import asyncio

    stores = [store_factory() for _ in range(3)]
    for s in stores:
        await s.open()
    try:

        async def attempt(i: int) -> bool:
            tx = new_tx(f"c{i}")
            try:
                await stores[i % 3].create(tx, tx.blocks, locks=["shared", f"own{i}"])
                return True
            except LockHeld:
                return False

        results = await asyncio.gather(*(attempt(i) for i in range(12)))
        assert results.count(True) == 1
        winner = f"c{results.index(True)}"
        assert {lk.xid for lk in await stores[0].list_locks()} == {winner}
        assert [t.xid for t in (await stores[0].list(limit=100))[0]] == [winner]
    finally:
        for s in stores:
            await s.close()


def _make_v2_store(kind: str, tmp_path: Path) -> None:
    """A store as switchback with schema version 2 left it: one transaction started with an
    idempotency key by alice (global keys then)."""
    from switchback.store import postgres, sqlite

    rows = [
        "INSERT INTO transactions (xid, seq, scenario, status, request, created_at, updated_at, "
        "idempotency_key, request_hash) VALUES ('old1', 1, 's', 'completed', '{}', 1, 1, 'k', 'h')",
        "INSERT INTO blocks (xid, idx, name, status) VALUES ('old1', 0, 'b0', 'done')",
        "INSERT INTO audit (xid, at, actor, action) VALUES ('old1', 1, 'alice', 'start')",
    ]
    if kind == "sqlite":
        (tmp_path / "data").mkdir()
        db = sqlite3.connect(tmp_path / "data" / "switchback.db", isolation_level=None)
        for migration in sqlite.MIGRATIONS[:2]:
            db.executescript(migration)
        db.execute("PRAGMA user_version=2")
        for sql in rows:
            db.execute(sql)
        db.close()
        return
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        schema = pg_schema(tmp_path)
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (2)")
        for migration in postgres.MIGRATIONS[:2]:
            for stmt in migration.split(";"):
                if stmt.strip():
                    conn.execute(stmt)  # type: ignore[arg-type]
        conn.execute(rows[0].replace("(xid, seq, ", "(xid, ").replace("'old1', 1, ", "'old1', "))
        for sql in rows[1:]:
            conn.execute(sql)  # type: ignore[arg-type]


async def test_migration_scopes_existing_idempotency_keys(
    store_kind: str, store_factory: Callable[[], Store], tmp_path: Path
) -> None:
    """Version 3: keys are unique per caller. A database of version 2 migrates in place, each
    key getting the actor who started its transaction."""
    _make_v2_store(store_kind, tmp_path)
    store = store_factory()
    await store.open()
    try:
        old = await store.load("old1")
        assert old is not None and old.status == "completed" and len(old.blocks) == 1
        assert (old.idempotency_key, old.idempotency_scope) == ("k", "alice")
        found = await store.find_by_idempotency_key("alice", "k")
        assert found is not None and found.xid == "old1"
        assert await store.find_by_idempotency_key("bob", "k") is None
        bobs = new_tx("new1", idempotency_key="k", idempotency_scope="bob")
        await store.create(bobs, bobs.blocks)  # the same key, another caller
        again = new_tx("new2", idempotency_key="k", idempotency_scope="alice")
        with pytest.raises(DuplicateIdempotencyKey) as info:
            await store.create(again, again.blocks)
        assert info.value.existing.xid == "old1"
    finally:
        await store.close()
    if store_kind == "sqlite":
        db = sqlite3.connect(tmp_path / "data" / "switchback.db")
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        db.close()


async def test_postgres_schema_is_versioned_and_refuses_a_newer_one(tmp_path: Path) -> None:
    import psycopg

    from switchback.store import postgres

    schema = pg_schema(tmp_path)
    url = f"{PG_URL}?schema={schema}"
    try:
        store = open_store(url)
        await store.open()
        await store.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            row = conn.execute(f"SELECT version FROM {schema}.schema_version").fetchone()
            assert row == (postgres.SCHEMA_VERSION,)
            conn.execute(f"UPDATE {schema}.schema_version SET version = version + 1")
        with pytest.raises(StoreError, match="upgrade switchback"):
            await open_store(url).open()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_postgres_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    import asyncio

    import psycopg

    url = f"{PG_URL}?schema={pg_schema(tmp_path)}"
    stores = [open_store(url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        tx = new_tx()
        await stores[0].create(tx, tx.blocks)
        assert (await stores[3].load("x1")) is not None
    finally:
        for s in stores:
            await s.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {pg_schema(tmp_path)} CASCADE")


async def test_postgres_unreachable_fails_clearly() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:1/test?schema=nowhere")
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL at"):
        await store.open()


def test_postgres_url_options() -> None:
    from switchback.store.postgres import PostgresStore, parse_url

    conninfo, schema, pool = parse_url(
        "postgresql://u@h:5/db?schema=abc&pool_size=3&sslmode=disable"
    )
    assert (conninfo, schema, pool) == ("postgresql://u@h:5/db?sslmode=disable", "abc", 3)
    assert isinstance(open_store("postgres://u@h/db"), PostgresStore)
    with pytest.raises(ValueError, match="identifier"):
        parse_url("postgresql://h/db?schema=a;drop")


async def test_postgres_pool_bounds_connections_and_survives_lost_ones(tmp_path: Path) -> None:
    import asyncio

    import psycopg

    from switchback.store.postgres import PostgresStore

    store = PostgresStore(f"{PG_URL}?schema={pg_schema(tmp_path)}&pool_size=2")
    await store.open()
    try:
        txs = [new_tx(f"p{i}") for i in range(30)]
        await asyncio.gather(*(store.create(t, t.blocks) for t in txs))
        loaded = await asyncio.gather(*(store.load(t.xid) for t in txs))
        assert all(t is not None for t in loaded)
        assert store.pool._size <= 2
        # A waiter that gives up (cancelled) does not leak a connection.
        waiters = [asyncio.ensure_future(store.load("p0")) for _ in range(10)]
        await asyncio.sleep(0)
        for w in waiters[5:]:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        assert store.pool._size == len(store.pool._idle) <= 2
        # The server drops our connections (restart, failover): the operation that finds its
        # connection dead fails, the connection is discarded, and the next ones reconnect.
        pids = [c.info.backend_pid for c in store.pool._idle]
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            deadline = time.monotonic() + 10
            while conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, "backends did not go away"
                await asyncio.sleep(0.01)  # polling interval
        for _ in range(len(pids)):
            with pytest.raises(psycopg.OperationalError):
                await store.load("p0")
        assert (await store.load("p0")) is not None
    finally:
        await store.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {pg_schema(tmp_path)} CASCADE")


# -- SQLite: group commit on the loop thread, fsync and checkpoints off it -------------------


async def test_sqlite_batch_with_a_refused_write_keeps_the_others(tmp_path: Path) -> None:
    """The optimistic batch (no savepoints) falls back to one savepoint per write when one write
    in the batch is refused: the refused one changes nothing, the others all land."""
    import asyncio

    store = open_store(tmp_path)
    await store.open()
    try:
        txs = [new_tx(f"x{i}") for i in range(6)]
        for tx in txs:
            await store.create(tx, tx.blocks)
        stale = await store.claim("x3", "other", 10, now=time.time() + 60)
        assert stale is not None
        for tx in txs:
            tx.status = "completed"
        # Submitted in one turn of the loop: one batch, x3's write carries a stale fence.
        results = await asyncio.gather(*(store.write(tx) for tx in txs), return_exceptions=True)
        assert [isinstance(r, FencedOut) for r in results] == [i == 3 for i in range(6)]
        for i in range(6):
            stored = await store.load(f"x{i}")
            assert stored is not None
            assert stored.status == ("running" if i == 3 else "completed")
    finally:
        await store.close()


async def test_sqlite_write_lock_held_elsewhere_does_not_block_the_loop(tmp_path: Path) -> None:
    """Another process (a local `switchback tx` command) holding the write lock makes writes
    wait, not the event loop: they are retried from the loop and land once the lock is free."""
    import asyncio

    store = open_store(tmp_path)
    await store.open()
    other = sqlite3.connect(tmp_path / "switchback.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        tx = new_tx()
        pending = asyncio.ensure_future(store.create(tx, tx.blocks))
        ticks = 0
        while ticks < 20:  # the loop keeps turning while the write waits for the lock
            await asyncio.sleep(0.001)
            ticks += 1
        assert not pending.done()
        other.execute("COMMIT")
        await asyncio.wait_for(pending, 5)
        assert (await store.load("x1")) is not None
    finally:
        other.close()
        await store.close()


async def test_sqlite_write_lock_held_too_long_fails_the_write_clearly(tmp_path: Path) -> None:
    import asyncio

    from switchback.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "switchback.db")
    store.BUSY_LIMIT = 0.05
    await store.open()
    other = sqlite3.connect(tmp_path / "switchback.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        tx = new_tx()
        with pytest.raises(StoreError, match="stayed locked by another process"):
            await asyncio.wait_for(store.create(tx, tx.blocks), 5)
        other.execute("ROLLBACK")
        await store.create(tx, tx.blocks)  # the lock gone, writes go through again
        assert (await store.load("x1")) is not None
    finally:
        other.close()
        await store.close()


async def test_sqlite_wal_is_checkpointed_off_the_loop_and_rewound(tmp_path: Path) -> None:
    """The loop's connection never checkpoints; the checkpoint thread keeps the WAL from
    growing without bound under constant writes (it rewinds it past RESTART_FRAMES)."""
    import asyncio

    from switchback.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "switchback.db")
    store.CHECKPOINT_EVERY = 0.005
    store.RESTART_FRAMES = 64
    await store.open()
    wal = tmp_path / "switchback.db-wal"
    try:
        frames_written = 0
        for round_ in range(80):
            txs = [new_tx(f"r{round_}-{i}") for i in range(20)]
            await asyncio.gather(*(store.create(tx, tx.blocks) for tx in txs))
            frames_written += 20  # at least one frame per create
        page = 4096
        # Without checkpoints the WAL holds every frame written; with them, a few rounds' worth.
        assert wal.stat().st_size < frames_written * page / 2, wal.stat().st_size
        assert len((await store.list(limit=2000))[0]) == 1600
    finally:
        await store.close()
