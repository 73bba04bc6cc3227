"""The embedded default store: one SQLite file in WAL mode.

All access goes through one dedicated thread that owns the connection. SQLite allows one writer
at a time anyway, and this keeps the event loop free while a commit waits for fsync.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from switchback.store.base import (
    DuplicateIdempotencyKey,
    FencedOut,
    LockHeld,
    Store,
    list_query,
    owner_is_dead,
)
from switchback.store.records import (
    FINAL,
    AuditRecord,
    BlockRecord,
    LockRecord,
    SignalRecord,
    TxRecord,
)

T = TypeVar("T")

SCHEMA_VERSION = 2

# Each entry migrates from version i to i+1. New versions append here; never edit old entries.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE transactions (
        xid TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        scenario TEXT NOT NULL,
        status TEXT NOT NULL,
        request TEXT,
        cursor INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        error TEXT,
        result TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        deadline REAL,
        idempotency_key TEXT UNIQUE,
        request_hash TEXT,
        owner TEXT,
        lease_until REAL,
        fence INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tx_status ON transactions (status, seq);
    CREATE INDEX tx_scenario ON transactions (scenario, seq);
    CREATE INDEX tx_owner ON transactions (owner);
    CREATE TABLE blocks (
        xid TEXT NOT NULL REFERENCES transactions (xid),
        idx INTEGER NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        output TEXT,
        error TEXT,
        started_at REAL,
        ended_at REAL,
        undo_attempts INTEGER NOT NULL DEFAULT 0,
        undo_output TEXT,
        undo_error TEXT,
        note TEXT,
        PRIMARY KEY (xid, idx)
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        xid TEXT NOT NULL,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT,
        input TEXT
    );
    CREATE INDEX audit_xid ON audit (xid, id);
    CREATE TABLE signals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        xid TEXT NOT NULL,
        name TEXT NOT NULL,
        payload TEXT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        consumed INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX signals_xid ON signals (xid, name, consumed, id);
    """,
    """
    CREATE TABLE locks (
        key TEXT PRIMARY KEY,
        xid TEXT NOT NULL,
        acquired_at REAL NOT NULL
    );
    CREATE INDEX locks_xid ON locks (xid);
    """,
]


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_TX_COLS = (
    "xid, scenario, status, request, cursor, reason, error, result, created_at, updated_at, "
    "deadline, idempotency_key, request_hash, owner, lease_until, fence"
)
_BLOCK_COLS = (
    "xid, idx, name, status, attempts, output, error, started_at, ended_at, undo_attempts, "
    "undo_output, undo_error, note"
)


def _tx_from_row(r: sqlite3.Row | tuple[Any, ...]) -> TxRecord:
    return TxRecord(
        xid=r[0], scenario=r[1], status=r[2], request=_load(r[3]), cursor=r[4], reason=r[5],
        error=_load(r[6]), result=_load(r[7]), created_at=r[8], updated_at=r[9], deadline=r[10],
        idempotency_key=r[11], request_hash=r[12], owner=r[13], lease_until=r[14], fence=r[15],
    )  # fmt: skip


def _block_params(b: BlockRecord) -> tuple[Any, ...]:
    return (
        b.xid, b.index, b.name, b.status, b.attempts, _dump(b.output), _dump(b.error),
        b.started_at, b.ended_at, b.undo_attempts, _dump(b.undo_output), _dump(b.undo_error), b.note,
    )  # fmt: skip


def _block_update_params(b: BlockRecord) -> tuple[Any, ...]:
    return (
        b.status, b.attempts, _dump(b.output), _dump(b.error), b.started_at, b.ended_at,
        b.undo_attempts, _dump(b.undo_output), _dump(b.undo_error), b.note, b.xid, b.index,
    )  # fmt: skip


_BLOCK_UPDATE = (
    "UPDATE blocks SET status=?, attempts=?, output=?, error=?, started_at=?, ended_at=?, "
    "undo_attempts=?, undo_output=?, undo_error=?, note=? WHERE xid=? AND idx=?"
)


class _Op:
    __slots__ = ("fn", "future", "loop", "write")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], loop: asyncio.AbstractEventLoop, write: bool
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.write = write


def _resolve(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _resolve_all(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in items:
        _resolve(future, result, exc)


class SQLiteStore(Store):
    """Group commit: writes that queue up while a commit is in flight are committed together in
    the next one (each inside its own SAVEPOINT, so one refused write does not undo the others).
    Every write is still durable before its caller continues; concurrent transactions just share
    the fsync. Hand-written because no SQLite library for asyncio does group commit."""

    MAX_BATCH = 256

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be OFF, NORMAL, FULL or EXTRA")
        self.synchronous = synchronous.upper()
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._pending = 0  # ops handed to the worker and not finished (loop thread only)
        self._conn_lock = threading.Lock()  # the connection: loop thread (inline) or worker
        self._alone: Callable[[], bool] = lambda: False

    def set_load_hint(self, alone: Callable[[], bool]) -> None:
        self._alone = alone

    # -- plumbing ------------------------------------------------------------------------------

    def _submit(self, fn: Callable[[sqlite3.Connection], T], write: bool) -> asyncio.Future[T]:
        if self._thread is None:
            raise RuntimeError("store is not open")
        op = _Op(fn, asyncio.get_running_loop(), write)
        # Idle store and (for a write) no other transaction moving in this process: run on the
        # loop thread. That saves the two thread hops (~50 µs) that dominate one transaction at
        # a time; with several in flight, writes go to the worker thread and share commits.
        inline = self._pending == 0 and (not write or self._alone())
        if inline and self._conn_lock.acquire(blocking=False):
            try:
                if write:
                    self._commit(self._db, [op], inline=True)  # type: ignore[arg-type]
                else:
                    result, exc = self._call(op, self._db)  # type: ignore[arg-type]
                    _resolve(op.future, result, exc)
            finally:
                self._conn_lock.release()
            return op.future
        self._pending += 1
        op.future.add_done_callback(self._done)
        self._queue.put(op)
        return op.future

    def _done(self, _f: asyncio.Future[Any]) -> None:
        self._pending -= 1

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read, outside any transaction."""
        return await self._submit(fn, write=False)

    async def _write_op(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A write, committed durably (possibly together with other queued writes)."""
        return await self._submit(fn, write=True)

    def _worker(self) -> None:
        db = self._db
        assert db is not None
        while True:
            op = self._queue.get()
            if op is None:
                return
            if not op.write:
                with self._conn_lock:
                    done = [(op, *self._call(op, db))]
                self._finish(done)
                continue
            batch = [op]
            while len(batch) < self.MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None or not nxt.write:
                    self._queue.put(nxt)  # handled after this batch, in order
                    break
                batch.append(nxt)
            with self._conn_lock:
                self._commit(db, batch)

    @staticmethod
    def _call(op: _Op, db: sqlite3.Connection) -> tuple[Any, BaseException | None]:
        try:
            return op.fn(db), None
        except BaseException as exc:  # handed to the caller
            return None, exc

    def _commit(self, db: sqlite3.Connection, batch: list[_Op], inline: bool = False) -> None:
        done: list[tuple[_Op, Any, BaseException | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # the common case when idle: no savepoint needed
                result, exc = self._call(batch[0], db)
                db.execute("ROLLBACK" if exc is not None else "COMMIT")
                if inline:
                    _resolve(batch[0].future, result, exc)
                else:
                    self._finish([(batch[0], result, exc)])
                return
            for op in batch:
                db.execute("SAVEPOINT w")
                result, exc = self._call(op, db)
                if exc is not None:
                    db.execute("ROLLBACK TO w")
                db.execute("RELEASE w")
                done.append((op, result, exc))
            db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            done = [(op, None, exc) for op in batch]
        self._finish(done)

    @staticmethod
    def _finish(done: list[tuple[_Op, Any, BaseException | None]]) -> None:
        # One wake-up of each event loop per batch, not one per write: waking a loop costs a
        # write to its self-pipe and a trip through its selector.
        by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]
        ] = {}
        for op, result, exc in done:
            by_loop.setdefault(op.loop, []).append((op.future, result, exc))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_resolve_all, items)

    def _open_sync(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}; this switchback knows up to "
                    f"{SCHEMA_VERSION}: upgrade switchback"
                )
            for i in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        db.execute(stmt)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
        return db

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._db = await asyncio.to_thread(self._open_sync)
        self._thread = threading.Thread(target=self._worker, name="sqlite-store", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        assert self._db is not None
        self._db.close()
        self._db = None
        self._thread = None

    # -- writes --------------------------------------------------------------------------------

    async def create(
        self,
        tx: TxRecord,
        blocks: Sequence[BlockRecord],
        audit: AuditRecord | None = None,
        locks: Sequence[str] = (),
    ) -> None:
        def go(db: sqlite3.Connection) -> None:
            def body() -> None:
                if locks:
                    self._set_locks(db, tx.xid, locks, tx.created_at)
                seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM transactions").fetchone()[0]
                try:
                    db.execute(
                        f"INSERT INTO transactions (seq, {_TX_COLS}) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            seq,
                            tx.xid,
                            tx.scenario,
                            tx.status,
                            _dump(tx.request),
                            tx.cursor,
                            tx.reason,
                            _dump(tx.error),
                            _dump(tx.result),
                            tx.created_at,
                            tx.updated_at,
                            tx.deadline,
                            tx.idempotency_key,
                            tx.request_hash,
                            tx.owner,
                            tx.lease_until,
                            tx.fence,
                        ),
                    )
                except sqlite3.IntegrityError:
                    if tx.idempotency_key:
                        existing = self._find_key(db, tx.idempotency_key)
                        if existing:
                            raise DuplicateIdempotencyKey(existing) from None
                    raise
                db.executemany(
                    f"INSERT INTO blocks ({_BLOCK_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [_block_params(b) for b in blocks],
                )
                if audit:
                    self._audit(db, audit)

            body()

        await self._write_op(go)

    @staticmethod
    def _set_locks(db: sqlite3.Connection, xid: str, keys: Sequence[str], now: float) -> None:
        for key in sorted(set(keys)):
            row = db.execute("SELECT xid FROM locks WHERE key=?", (key,)).fetchone()
            if row and row[0] != xid:
                raise LockHeld(key, row[0])
        marks = ",".join("?" for _ in keys)
        db.execute(f"DELETE FROM locks WHERE xid=? AND key NOT IN ({marks})", (xid, *keys))
        db.executemany(
            "INSERT OR IGNORE INTO locks (key, xid, acquired_at) VALUES (?, ?, ?)",
            [(k, xid, now) for k in sorted(set(keys))],
        )

    @staticmethod
    def _audit(db: sqlite3.Connection, a: AuditRecord) -> None:
        db.execute(
            "INSERT INTO audit (xid, at, actor, action, reason, input) VALUES (?, ?, ?, ?, ?, ?)",
            (a.xid, a.at, a.actor, a.action, a.reason, _dump(a.input)),
        )

    async def write(
        self,
        tx: TxRecord,
        blocks: Sequence[BlockRecord] = (),
        audit: AuditRecord | None = None,
        consume_signal: int | None = None,
        locks: Sequence[str] | None = None,
    ) -> None:
        tx_params = (
            tx.status, _dump(tx.request), tx.cursor, tx.reason, _dump(tx.error), _dump(tx.result),
            tx.updated_at, tx.deadline, tx.owner, tx.lease_until, tx.xid, tx.fence,
        )  # fmt: skip
        block_params = [_block_update_params(b) for b in blocks]

        def go(db: sqlite3.Connection) -> None:
            def body() -> None:
                cur = db.execute(
                    "UPDATE transactions SET status=?, request=?, cursor=?, reason=?, error=?, "
                    "result=?, updated_at=?, deadline=?, owner=?, lease_until=? "
                    "WHERE xid=? AND fence=?",
                    tx_params,
                )
                if cur.rowcount != 1:
                    raise FencedOut(f"transaction {tx.xid}: fencing token {tx.fence} is stale")
                # Block rows exist from create(); an UPDATE in place is cheaper than a REPLACE.
                for p in block_params:
                    db.execute(_BLOCK_UPDATE, p)
                if audit:
                    self._audit(db, audit)
                if consume_signal is not None:
                    db.execute("UPDATE signals SET consumed=1 WHERE id=?", (consume_signal,))
                if tx.status in FINAL:
                    db.execute("DELETE FROM locks WHERE xid=?", (tx.xid,))
                elif locks is not None:
                    self._set_locks(db, tx.xid, locks, tx.updated_at)

            body()

        await self._write_op(go)

    async def claim(
        self, xid: str, owner: str, lease_seconds: float, now: float
    ) -> TxRecord | None:
        def go(db: sqlite3.Connection) -> TxRecord | None:
            def body() -> TxRecord | None:
                row = db.execute(
                    "SELECT owner, lease_until, fence FROM transactions WHERE xid=?", (xid,)
                ).fetchone()
                if row is None:
                    return None
                cur_owner, lease_until, fence = row
                free = (
                    cur_owner is None
                    or cur_owner == owner
                    or (lease_until is not None and lease_until < now)
                    or owner_is_dead(cur_owner)
                )
                if not free:
                    return None
                db.execute(
                    "UPDATE transactions SET owner=?, lease_until=?, fence=? WHERE xid=?",
                    (owner, now + lease_seconds, fence + 1, xid),
                )
                return self._load(db, xid)

            return body()

        return await self._write_op(go)

    async def heartbeat(self, owner: str, lease_seconds: float, now: float) -> int:
        def go(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE transactions SET lease_until=? WHERE owner=?", (now + lease_seconds, owner)
            ).rowcount

        return await self._write_op(go)

    async def add_signal(self, signal: SignalRecord, audit: AuditRecord) -> int:
        def go(db: sqlite3.Connection) -> int:
            def body() -> int:
                cur = db.execute(
                    "INSERT INTO signals (xid, name, payload, at, actor) VALUES (?, ?, ?, ?, ?)",
                    (signal.xid, signal.name, _dump(signal.payload), signal.at, signal.actor),
                )
                self._audit(db, audit)
                return int(cur.lastrowid or 0)

            return body()

        return await self._write_op(go)

    async def set_meta(self, key: str, value: Any) -> None:
        await self._write_op(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, _dump(value))
            )
        )

    # -- reads ---------------------------------------------------------------------------------

    @staticmethod
    def _load(db: sqlite3.Connection, xid: str) -> TxRecord | None:
        row = db.execute(f"SELECT {_TX_COLS} FROM transactions WHERE xid=?", (xid,)).fetchone()
        if row is None:
            return None
        tx = _tx_from_row(row)
        for r in db.execute(f"SELECT {_BLOCK_COLS} FROM blocks WHERE xid=? ORDER BY idx", (xid,)):
            tx.blocks.append(
                BlockRecord(
                    xid=r[0],
                    index=r[1],
                    name=r[2],
                    status=r[3],
                    attempts=r[4],
                    output=_load(r[5]),
                    error=_load(r[6]),
                    started_at=r[7],
                    ended_at=r[8],
                    undo_attempts=r[9],
                    undo_output=_load(r[10]),
                    undo_error=_load(r[11]),
                    note=r[12],
                )
            )
        for r in db.execute(
            "SELECT id, xid, at, actor, action, reason, input FROM audit WHERE xid=? ORDER BY id",
            (xid,),
        ):
            tx.audit.append(
                AuditRecord(
                    id=r[0],
                    xid=r[1],
                    at=r[2],
                    actor=r[3],
                    action=r[4],
                    reason=r[5],
                    input=_load(r[6]),
                )
            )
        return tx

    async def load(self, xid: str) -> TxRecord | None:
        return await self._run(lambda db: self._load(db, xid))

    @staticmethod
    def _find_key(db: sqlite3.Connection, key: str) -> TxRecord | None:
        row = db.execute("SELECT xid FROM transactions WHERE idempotency_key=?", (key,)).fetchone()
        return SQLiteStore._load(db, row[0]) if row else None

    async def find_by_idempotency_key(self, key: str) -> TxRecord | None:
        return await self._run(lambda db: self._find_key(db, key))

    async def list(
        self,
        status: str | None = None,
        scenario: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TxRecord], str | None]:
        def go(db: sqlite3.Connection) -> tuple[list[TxRecord], str | None]:
            sql, params = list_query(_TX_COLS, status, scenario, cursor, limit, "?")
            rows = db.execute(sql, params).fetchall()
            page = [_tx_from_row(r[1:]) for r in rows[:limit]]
            nxt = str(rows[limit - 1][0]) if len(rows) > limit else None
            return page, nxt

        return await self._run(go)

    async def orphans(self, now: float, statuses: Sequence[str]) -> list[str]:
        def go(db: sqlite3.Connection) -> list[str]:
            marks = ",".join("?" for _ in statuses)
            rows = db.execute(
                f"SELECT xid, owner, lease_until FROM transactions WHERE status IN ({marks}) ORDER BY seq",
                tuple(statuses),
            ).fetchall()
            return [
                xid
                for xid, owner, lease in rows
                if owner is None or (lease is not None and lease < now) or owner_is_dead(owner)
            ]

        return await self._run(go)

    async def pending_signal(self, xid: str, name: str) -> SignalRecord | None:
        def go(db: sqlite3.Connection) -> SignalRecord | None:
            r = db.execute(
                "SELECT id, xid, name, payload, at, actor FROM signals "
                "WHERE xid=? AND name=? AND consumed=0 ORDER BY id LIMIT 1",
                (xid, name),
            ).fetchone()
            if r is None:
                return None
            return SignalRecord(
                id=r[0], xid=r[1], name=r[2], payload=_load(r[3]), at=r[4], actor=r[5]
            )

        return await self._run(go)

    async def list_locks(self) -> list[LockRecord]:
        def go(db: sqlite3.Connection) -> list[LockRecord]:
            rows = db.execute("SELECT key, xid, acquired_at FROM locks ORDER BY key").fetchall()
            return [LockRecord(key=k, xid=x, acquired_at=t) for k, x, t in rows]

        return await self._run(go)

    async def get_meta(self, key: str) -> Any:
        def go(db: sqlite3.Connection) -> Any:
            row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            return _load(row[0]) if row else None

        return await self._run(go)
