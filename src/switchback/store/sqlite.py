"""The embedded default store: one SQLite file in WAL mode.

Statements run on the event loop's thread, the writes of one turn of the loop committed
together; a sync thread fsyncs the WAL before any writer continues, and a checkpoint thread
copies the WAL into the database file (see SQLiteStore).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from switchback import datadir
from switchback.store.base import (
    DuplicateIdempotencyKey,
    FencedOut,
    LockHeld,
    SignalRefused,
    Store,
    StoreError,
    list_query,
    owner_gone,
    owner_is_dead,
    waiting_query,
    waiting_records,
)
from switchback.store.records import (
    FINAL,
    AuditRecord,
    BlockRecord,
    LockRecord,
    SignalRecord,
    TxRecord,
    WaitingRecord,
    to_json,
)

T = TypeVar("T")
log = logging.getLogger("switchback.store")

SCHEMA_VERSION = 3

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
    # 3: an idempotency key is unique per scope (the caller who used it), not across callers.
    # SQLite cannot drop a column's UNIQUE constraint: the table is rebuilt (foreign keys are
    # off while migrating, see _open_sync). Existing keys get the actor of their start record.
    """
    CREATE TABLE transactions_v3 (
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
        idempotency_key TEXT,
        request_hash TEXT,
        owner TEXT,
        lease_until REAL,
        fence INTEGER NOT NULL DEFAULT 0,
        idempotency_scope TEXT
    );
    INSERT INTO transactions_v3 SELECT t.*, CASE WHEN t.idempotency_key IS NULL THEN NULL ELSE
        COALESCE((SELECT a.actor FROM audit a WHERE a.xid = t.xid AND a.action = 'start'
                  ORDER BY a.id LIMIT 1), '') END
        FROM transactions t;
    DROP TABLE transactions;
    ALTER TABLE transactions_v3 RENAME TO transactions;
    CREATE INDEX tx_status ON transactions (status, seq);
    CREATE INDEX tx_scenario ON transactions (scenario, seq);
    CREATE INDEX tx_owner ON transactions (owner);
    CREATE UNIQUE INDEX tx_idempotency ON transactions (idempotency_scope, idempotency_key);
    """,
]


_dump = to_json


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_TX_COLS = (
    "xid, scenario, status, request, cursor, reason, error, result, created_at, updated_at, "
    "deadline, idempotency_key, request_hash, owner, lease_until, fence, idempotency_scope"
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
        idempotency_scope=r[16],
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


# seq (the listing order) is taken in the INSERT itself: one statement, not a SELECT and an INSERT.
_TX_INSERT = (
    f"INSERT INTO transactions (seq, {_TX_COLS}) VALUES "
    "((SELECT COALESCE(MAX(seq), 0) + 1 FROM transactions), "
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BLOCK_INSERT = f"INSERT INTO blocks ({_BLOCK_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_WAITING = waiting_query("s.consumed = 0")
_BLOCK_UPDATE = (
    "UPDATE blocks SET status=?, attempts=?, output=?, error=?, started_at=?, ended_at=?, "
    "undo_attempts=?, undo_output=?, undo_error=?, note=? WHERE xid=? AND idx=?"
)


class _Op:
    __slots__ = ("fn", "future")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.future = future


Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _resolve(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # cancelled by its caller meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _resolve_all(items: list[Outcome]) -> None:
    for future, result, exc in items:
        _resolve(future, result, exc)


class SQLiteStore(Store):
    """Group commit with the fsync off the event loop.

    Writes run on the event loop's own thread: the writes submitted during one turn of the loop
    form a batch, committed as one SQLite transaction (see _flush for a refused write). SQLite
    writes the commit to the WAL without syncing (``synchronous=NORMAL``); a sync thread then
    fsyncs the WAL file, and only then do the writers continue. So every write is durable before
    its caller goes on, writes that pile up during one fsync share the next, and the loop never
    waits for the disk. Checkpoints run on a third thread (see _checkpoint_worker).

    Why not a writer thread that owns the connection (as aiosqlite does): every statement then
    needs the GIL back from a busy event loop, and the two threads took turns instead of
    overlapping (each about half busy under load, neither saturated). Here the statements run
    where the data already is and only the fsync is handed off: one hand-off per batch.
    Hand-written because no SQLite library for asyncio does group commit.

    ``synchronous``: FULL (default) or EXTRA = durable as above; NORMAL = SQLite's own NORMAL
    (a commit survives a crash of the process, not of the machine); OFF = SQLite's OFF.
    """

    MAX_BATCH = 256
    BUSY_RETRY = 0.002  # another process holds the write lock: try the batch again this soon
    BUSY_LIMIT = 30.0  # ... and give up on the batch after this long (as sqlite3's timeout=30)
    CHECKPOINT_EVERY = 0.05  # seconds between checkpoints while writes come in
    # A WAL this long (4 MB of 4 KB pages, SQLite's own checkpoint threshold) is rewound, holding
    # writers for a moment: a short WAL is overwritten in place, and an fsync that does not grow
    # the file is cheaper (no size to record): ~0.6 instead of ~0.5 of the raw commit rate at C=1.
    RESTART_FRAMES = 1000

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be OFF, NORMAL, FULL or EXTRA")
        self.synchronous = synchronous.upper()
        self._fsync = self.synchronous in ("FULL", "EXTRA")  # we sync the WAL ourselves
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wal_fd: int | None = None
        self._batch: list[_Op] = []
        self._flush_scheduled = False
        self._busy_since: float | None = None  # loop time of the first refused BEGIN in a row
        # Durability bookkeeping (loop thread only): batches committed, batches fsynced, and
        # readers waiting until what they may read is durable.
        self._committed = 0
        self._synced = 0
        self._sync_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._sync_lock = threading.Condition()
        self._to_sync: list[tuple[int, list[Outcome]]] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._alone: Callable[[], bool] = lambda: False

    def set_load_hint(self, alone: Callable[[], bool]) -> None:
        self._alone = alone

    # -- plumbing ------------------------------------------------------------------------------

    def _check_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._db is None:
            raise RuntimeError("store is not open")
        if loop is not self._loop:
            raise RuntimeError("a SQLiteStore is used from the event loop that opened it only")
        return loop

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read, on the loop's connection. It waits until every commit it could see is
        durable, so nothing read here can vanish in a power cut."""
        self._check_loop()
        if self._synced < self._committed:
            fut = asyncio.get_running_loop().create_future()
            self._sync_waiters.append((self._committed, fut))
            await fut
        for delay in (0.001, 0.005, 0.02, 0.1, None):
            try:
                return fn(self._db)  # type: ignore[arg-type]
            except sqlite3.OperationalError as exc:
                # Busy only while another connection recovers the WAL; brief, so retry.
                if delay is None or not _busy(exc):
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _write_op(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """A write, committed durably with the other writes of this turn of the loop."""
        loop = self._check_loop()
        op = _Op(fn, loop.create_future())
        self._batch.append(op)
        if len(self._batch) == 1 and self._synced == self._committed and self._alone():
            # One transaction moving and nothing in flight: nobody to batch with, so commit
            # (and sync, below) right away rather than one turn of the loop later.
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return op.future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch[: self.MAX_BATCH], self._batch[self.MAX_BATCH :]
        if self._batch:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        if not batch:
            return
        db = self._db
        assert db is not None and self._loop is not None
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                _resolve_all([(op.future, None, exc) for op in batch])
                return
            # Another process (a local `switchback tx` command) is writing: the loop does not
            # wait for it; the batch goes first in the next try, for up to BUSY_LIMIT seconds.
            now = self._loop.time()
            if self._busy_since is None:
                self._busy_since = now
            elif now - self._busy_since > self.BUSY_LIMIT:
                self._busy_since = None
                locked = StoreError(
                    f"{self.path} stayed locked by another process for {self.BUSY_LIMIT:g} s "
                    "(a sqlite3 session or a local switchback command inside a write?)"
                )
                _resolve_all([(op.future, None, locked) for op in batch])
                return
            self._batch[:0] = batch
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_later(self.BUSY_RETRY, self._flush)
            return
        self._busy_since = None
        done: list[Outcome] = []
        try:
            # Optimistic: writes are rarely refused (stale fence, held lock, duplicate key), so
            # run the batch plainly; only if one is refused, undo it all and run it again with a
            # SAVEPOINT around each write (two statements per write saved in the common case;
            # a write reads and changes nothing outside the database, so it can run twice).
            for op in batch:
                result, exc = self._call(op, db)
                if exc is not None:
                    break
                done.append((op.future, result, None))
            else:
                db.execute("COMMIT")
                exc = None
            if exc is not None:
                db.execute("ROLLBACK")
                done = []
                if len(batch) > 1:
                    db.execute("BEGIN IMMEDIATE")
                    for op in batch:
                        db.execute("SAVEPOINT w")
                        result, exc = self._call(op, db)
                        if exc is not None:
                            db.execute("ROLLBACK TO w")
                        db.execute("RELEASE w")
                        done.append((op.future, result, exc))
                    db.execute("COMMIT")
                else:
                    done.append((batch[0].future, None, exc))
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            _resolve_all([(op.future, None, exc) for op in batch])
            return
        if not self._fsync:
            _resolve_all(done)
            return
        self._committed += 1
        if self._synced == self._committed - 1 and self._alone():
            # One transaction moving and no fsync in flight: syncing here (~0.1 ms) is cheaper
            # than the two thread hops, which dominate one transaction at a time.
            self._sync_now(self._committed, done)
            return
        with self._sync_lock:
            self._to_sync.append((self._committed, done))
            self._sync_lock.notify()

    def _sync_now(self, gen: int, done: list[Outcome]) -> None:
        try:
            os.fdatasync(self._wal_fd)  # type: ignore[arg-type]
        except OSError as exc:
            done = [(f, None, exc) for f, _r, _e in done]
        self._synced_upto(gen)
        _resolve_all(done)

    def _synced_upto(self, gen: int) -> None:
        self._synced = max(self._synced, gen)
        if self._sync_waiters:
            ready = [f for g, f in self._sync_waiters if g <= self._synced]
            self._sync_waiters = [(g, f) for g, f in self._sync_waiters if g > self._synced]
            for f in ready:
                if not f.done():
                    f.set_result(None)

    def _sync_worker(self) -> None:
        """fsync the WAL for every batch committed before the fsync starts, then wake their
        writers (one wake-up of the loop per fsync)."""
        while True:
            with self._sync_lock:
                while not self._to_sync and not self._closing:
                    self._sync_lock.wait()
                if not self._to_sync:
                    return
                jobs, self._to_sync = self._to_sync, []
            error: OSError | None = None
            try:
                os.fdatasync(self._wal_fd)  # type: ignore[arg-type]
            except OSError as exc:
                error = exc
            gen = jobs[-1][0]
            done = [o for _g, items in jobs for o in items]
            if error is not None:
                done = [(f, None, error) for f, _r, _e in done]
            loop = self._loop
            assert loop is not None
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
                loop.call_soon_threadsafe(self._after_sync, gen, done)

    def _after_sync(self, gen: int, done: list[Outcome]) -> None:
        self._synced_upto(gen)
        _resolve_all(done)

    def _checkpoint_worker(self) -> None:
        """Checkpoints (copying the WAL into the database file, with two fsyncs) on a connection
        of their own, so that the loop's commits never do one (SQLite's automatic checkpoint
        runs inside the COMMIT that crosses the threshold). A PASSIVE checkpoint never holds up
        writers; under constant load it never quite catches up either, so a long WAL is rewound
        with a RESTART checkpoint, which holds writers for its duration (the loop retries)."""
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5)
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # WAL synced before, database after
            seen = -1
            while not self._stop_checkpoints.wait(self.CHECKPOINT_EVERY):
                if self._committed == seen:
                    continue  # nothing new (a stale read of the counter only delays this)
                seen = self._committed
                try:
                    _busy, frames, _done = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames >= self.RESTART_FRAMES:
                        db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                except sqlite3.Error:  # busy or short of disk: the next round tries again
                    log.warning("checkpoint failed", exc_info=True)
        finally:
            db.close()

    @staticmethod
    def _call(op: _Op, db: sqlite3.Connection) -> tuple[Any, BaseException | None]:
        try:
            return op.fn(db), None
        except BaseException as exc:  # handed to the caller
            return None, exc

    def _open_sync(self) -> sqlite3.Connection:
        datadir.make_dir(self.path.parent)
        # Created private before SQLite opens it: its -wal and -shm files take the db's mode.
        os.close(datadir.open_file(self.path, os.O_RDWR | os.O_CREAT))
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        sync = "NORMAL" if self._fsync else self.synchronous
        db.execute(f"PRAGMA synchronous={sync}")
        # Foreign keys are enforced from after the migrations (a migration may rebuild a table
        # that others reference; the pragma cannot change inside a transaction).
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this switchback knows up to "
                    f"{SCHEMA_VERSION}: upgrade switchback"
                )
            for i in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        db.execute(stmt)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if version < SCHEMA_VERSION and db.execute("PRAGMA foreign_key_check").fetchone():
                raise StoreError(f"{self.path}: migration broke a foreign key")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
        db.execute("PRAGMA foreign_keys=ON")
        if self._fsync:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # make sure the -wal file exists
            # fsync works on the file, whichever descriptor: our own read-only one will do.
            self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY)
            os.fsync(self._wal_fd)  # the migration above, if any
            db.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint_worker
        # From here on the connection serves the loop thread, which must never sit in SQLite's
        # busy handler: a busy write lock is retried from the loop instead (see _flush).
        db.execute("PRAGMA busy_timeout=0")
        return db

    async def open(self) -> None:
        if self._db is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._db = await asyncio.to_thread(self._open_sync)
        self._closing = False
        if self._fsync:
            self._thread = threading.Thread(
                target=self._sync_worker, name="sqlite-sync", daemon=True
            )
            self._thread.start()
            self._stop_checkpoints.clear()
            self._checkpointer = threading.Thread(
                target=self._checkpoint_worker, name="sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    async def close(self) -> None:
        if self._db is None:
            return
        queued = [op.future for op in self._batch]
        if queued:  # let queued writes reach the disk
            await asyncio.wait(queued)
        if self._synced < self._committed:
            fut = asyncio.get_running_loop().create_future()
            self._sync_waiters.append((self._committed, fut))
            await fut
        if self._thread is not None:
            with self._sync_lock:
                self._closing = True
                self._sync_lock.notify()
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._checkpointer is not None:
            self._stop_checkpoints.set()
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        self._db.close()
        self._db = None

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
                try:
                    db.execute(
                        _TX_INSERT,
                        (
                            tx.xid,
                            tx.scenario,
                            tx.status,
                            tx.request_json(),
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
                            tx.idempotency_scope,
                        ),
                    )
                except sqlite3.IntegrityError:
                    if tx.idempotency_key:
                        existing = self._find_key(db, tx.idempotency_scope, tx.idempotency_key)
                        if existing:
                            raise DuplicateIdempotencyKey(existing) from None
                    raise
                db.executemany(_BLOCK_INSERT, [_block_params(b) for b in blocks])
                if audit:
                    self._audit(db, audit, tx)

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
    def _audit(db: sqlite3.Connection, a: AuditRecord, tx: TxRecord | None = None) -> None:
        # The start record's input is the request itself: its JSON is already made.
        text = tx.request_json() if tx is not None and a.input is tx.request else _dump(a.input)
        db.execute(
            "INSERT INTO audit (xid, at, actor, action, reason, input) VALUES (?, ?, ?, ?, ?, ?)",
            (a.xid, a.at, a.actor, a.action, a.reason, text),
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
            tx.status, tx.request_json(), tx.cursor, tx.reason, _dump(tx.error), _dump(tx.result),
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
                    self._audit(db, audit, tx)
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
                # Never "already mine": a claim is exclusive, even within one owner.
                free = (
                    cur_owner is None
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

    async def add_signal(
        self,
        signal: SignalRecord,
        audit: AuditRecord,
        *,
        statuses: Sequence[str] | None = None,
        max_cursor: int | None = None,
    ) -> int:
        def go(db: sqlite3.Connection) -> int:
            def body() -> int:
                # Inside the batch's BEGIN IMMEDIATE: no other write (ours or another process's)
                # can come between this check and the insert.
                row = db.execute(
                    "SELECT status, cursor FROM transactions WHERE xid=?", (signal.xid,)
                ).fetchone()
                status, cursor = row if row else (None, None)
                if (
                    row is None
                    or (statuses is not None and status not in statuses)
                    or (max_cursor is not None and cursor > max_cursor)
                ):
                    raise SignalRefused(signal.xid, status, cursor, None)
                pending = self._pending(db, signal.xid, signal.name)
                if pending is not None:
                    raise SignalRefused(signal.xid, status, cursor, pending)
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
    def _find_key(db: sqlite3.Connection, scope: str | None, key: str) -> TxRecord | None:
        row = db.execute(
            "SELECT xid FROM transactions WHERE idempotency_scope=? AND idempotency_key=?",
            (scope, key),
        ).fetchone()
        return SQLiteStore._load(db, row[0]) if row else None

    async def find_by_idempotency_key(self, scope: str, key: str) -> TxRecord | None:
        return await self._run(lambda db: self._find_key(db, scope, key))

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
            return [xid for xid, owner, lease in rows if owner_gone(owner, lease, now)]

        return await self._run(go)

    async def waiting(self, now: float) -> list[WaitingRecord]:
        return await self._run(lambda db: waiting_records(db.execute(_WAITING).fetchall(), now))

    @staticmethod
    def _pending(db: sqlite3.Connection, xid: str, name: str) -> SignalRecord | None:
        r = db.execute(
            "SELECT id, xid, name, payload, at, actor FROM signals "
            "WHERE xid=? AND name=? AND consumed=0 ORDER BY id LIMIT 1",
            (xid, name),
        ).fetchone()
        if r is None:
            return None
        return SignalRecord(id=r[0], xid=r[1], name=r[2], payload=_load(r[3]), at=r[4], actor=r[5])

    async def pending_signal(self, xid: str, name: str) -> SignalRecord | None:
        return await self._run(lambda db: self._pending(db, xid, name))

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
