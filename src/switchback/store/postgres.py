"""The shared store for several workers: PostgreSQL through psycopg 3 and a connection pool.

Every write is one SQL statement (data-modifying CTEs) sent in autocommit mode: one round trip
and one commit, the same "one durable write per block transition" as SQLite. Concurrent writers
in one process use separate pooled connections, so PostgreSQL's own group commit shares the WAL
flushes between them.

URL: ``postgresql://user@host:port/db?schema=NAME&pool_size=N``; ``schema`` (default
``switchback``) and ``pool_size`` (default 10) are ours, everything else goes to libpq.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

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

_WAITING = waiting_query("NOT s.consumed")
SCHEMA_VERSION = 3

# Each entry migrates from version i to i+1 (same history as the SQLite store). New versions
# append here; never edit old entries.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value JSONB);
    CREATE TABLE transactions (
        xid TEXT PRIMARY KEY,
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        scenario TEXT NOT NULL,
        status TEXT NOT NULL,
        request JSONB,
        cursor INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        error JSONB,
        result JSONB,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        deadline DOUBLE PRECISION,
        idempotency_key TEXT UNIQUE,
        request_hash TEXT,
        owner TEXT,
        lease_until DOUBLE PRECISION,
        fence BIGINT NOT NULL DEFAULT 0
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
        output JSONB,
        error JSONB,
        started_at DOUBLE PRECISION,
        ended_at DOUBLE PRECISION,
        undo_attempts INTEGER NOT NULL DEFAULT 0,
        undo_output JSONB,
        undo_error JSONB,
        note TEXT,
        PRIMARY KEY (xid, idx)
    );
    CREATE TABLE audit (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        xid TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT,
        input JSONB
    );
    CREATE INDEX audit_xid ON audit (xid, id);
    CREATE TABLE signals (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        xid TEXT NOT NULL,
        name TEXT NOT NULL,
        payload JSONB,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        consumed BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX signals_xid ON signals (xid, name, consumed, id);
    """,
    """
    CREATE TABLE locks (
        key TEXT PRIMARY KEY,
        xid TEXT NOT NULL,
        acquired_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX locks_xid ON locks (xid);
    """,
    # 3: an idempotency key is unique per scope (the caller who used it), not across callers.
    # Existing keys get the actor of their start record.
    """
    ALTER TABLE transactions ADD COLUMN idempotency_scope TEXT;
    UPDATE transactions t SET idempotency_scope = COALESCE((SELECT a.actor FROM audit a
        WHERE a.xid = t.xid AND a.action = 'start' ORDER BY a.id LIMIT 1), '')
        WHERE t.idempotency_key IS NOT NULL;
    ALTER TABLE transactions DROP CONSTRAINT transactions_idempotency_key_key;
    CREATE UNIQUE INDEX tx_idempotency ON transactions (idempotency_scope, idempotency_key);
    """,
]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


_dump = to_json  # the encoder every store uses (no NaN/infinity: not JSON, jsonb refuses them)


_TX_COLS = (
    "xid, scenario, status, request, cursor, reason, error, result, created_at, updated_at, "
    "deadline, idempotency_key, request_hash, owner, lease_until, fence, idempotency_scope"
)
_BLOCK_COLS = (
    "xid, idx, name, status, attempts, output, error, started_at, ended_at, undo_attempts, "
    "undo_output, undo_error, note"
)


def _tx_from_row(r: Sequence[Any]) -> TxRecord:
    return TxRecord(
        xid=r[0], scenario=r[1], status=r[2], request=r[3], cursor=r[4], reason=r[5],
        error=r[6], result=r[7], created_at=r[8], updated_at=r[9], deadline=r[10],
        idempotency_key=r[11], request_hash=r[12], owner=r[13], lease_until=r[14], fence=r[15],
        idempotency_scope=r[16],
    )  # fmt: skip


def _blocks_json(blocks: Sequence[BlockRecord]) -> str:
    """Block rows as one JSON array, expanded by ``jsonb_to_recordset`` on the server: one
    parameter whatever the block count, and far cheaper to send than a dozen typed arrays."""
    return (
        to_json(
            [
                {
                    "idx": b.index,
                    "name": b.name,
                    "status": b.status,
                    "attempts": b.attempts,
                    "output": b.output,
                    "error": b.error,
                    "started_at": b.started_at,
                    "ended_at": b.ended_at,
                    "undo_attempts": b.undo_attempts,
                    "undo_output": b.undo_output,
                    "undo_error": b.undo_error,
                    "note": b.note,
                }
                for b in blocks
            ]
        )
        or "[]"
    )


# A JSON null inside a jsonb column would differ from SQL NULL: map it back.
_BLOCK_ROWS = (
    "(SELECT idx, name, status, attempts, NULLIF(output, 'null') AS output, "
    "NULLIF(error, 'null') AS error, started_at, ended_at, undo_attempts, "
    "NULLIF(undo_output, 'null') AS undo_output, NULLIF(undo_error, 'null') AS undo_error, note "
    "FROM jsonb_to_recordset(%s::jsonb) AS r(idx int, name text, status text, attempts int, "
    "output jsonb, error jsonb, started_at float8, ended_at float8, undo_attempts int, "
    "undo_output jsonb, undo_error jsonb, note text)) AS v"
)

_CREATE = f"""
WITH l AS (
    INSERT INTO locks (key, xid, acquired_at) SELECT k, %s, %s FROM unnest(%s::text[]) AS k
), t AS (
    INSERT INTO transactions ({_TX_COLS}) VALUES
    (%s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s)
), b AS (
    INSERT INTO blocks ({_BLOCK_COLS})
    SELECT %s, v.* FROM {_BLOCK_ROWS}
), a AS (
    INSERT INTO audit (xid, at, actor, action, reason, input)
    SELECT %s, %s, %s, %s, %s, %s::jsonb WHERE %s
)
SELECT 1
"""

# The fence check and everything the write carries, in one statement: when the fence is stale
# the UPDATE matches nothing and every other part joins on its empty result. Parts the write does
# not need are left out (a few statement shapes, each prepared once per connection).
_W_TX = """
WITH t AS (
    UPDATE transactions SET status=%s, request=%s::jsonb, cursor=%s, reason=%s, error=%s::jsonb,
        result=%s::jsonb, updated_at=%s, deadline=%s, owner=%s, lease_until=%s
    WHERE xid=%s AND fence=%s RETURNING xid
)"""
_W_BLOCKS = f""", b AS (
    UPDATE blocks SET status=v.status, attempts=v.attempts, output=v.output, error=v.error,
        started_at=v.started_at, ended_at=v.ended_at, undo_attempts=v.undo_attempts,
        undo_output=v.undo_output, undo_error=v.undo_error, note=v.note
    FROM {_BLOCK_ROWS}
    WHERE blocks.xid = (SELECT xid FROM t) AND blocks.idx = v.idx
)"""
_W_AUDIT = """, a AS (
    INSERT INTO audit (xid, at, actor, action, reason, input)
    SELECT xid, %s, %s, %s, %s, %s::jsonb FROM t
)"""
_W_SIGNAL = """, s AS (
    UPDATE signals SET consumed=TRUE WHERE id=%s AND EXISTS (SELECT 1 FROM t)
)"""
_W_UNLOCK = """, l AS (
    DELETE FROM locks WHERE xid = (SELECT xid FROM t)
)"""
_WRITES: dict[tuple[bool, bool, bool, bool], str] = {}


def _write_sql(blocks: bool, audit: bool, signal: bool, unlock: bool) -> str:
    key = (blocks, audit, signal, unlock)
    sql = _WRITES.get(key)
    if sql is None:
        sql = _WRITES[key] = (
            _W_TX
            + (_W_BLOCKS if blocks else "")
            + (_W_AUDIT if audit else "")
            + (_W_SIGNAL if signal else "")
            + (_W_UNLOCK if unlock else "")
            + "\nSELECT count(*) FROM t"
        )
    return sql


_LOAD_TX = f"SELECT {_TX_COLS} FROM transactions WHERE xid=%s"
_LOAD_BLOCKS = f"SELECT {_BLOCK_COLS} FROM blocks WHERE xid=%s ORDER BY idx"
_LOAD_AUDIT = "SELECT id, xid, at, actor, action, reason, input FROM audit WHERE xid=%s ORDER BY id"


def _audit_params(a: AuditRecord | None) -> tuple[Any, ...]:
    if a is None:
        return (None, None, None, None, None, False)
    return (a.at, a.actor, a.action, a.reason, _dump(a.input), True)


def parse_url(url: str) -> tuple[str, str, int]:
    """Split our own query parameters (schema, pool_size) off a PostgreSQL URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema, pool_size, rest = "switchback", 10, []
    for k, v in query:
        if k == "schema":
            schema = v
        elif k == "pool_size":
            pool_size = int(v)
        else:
            rest.append((k, v))
    if not _IDENT.match(schema):
        raise ValueError(f"schema must be a plain SQL identifier, not {schema!r}")
    if pool_size < 1:
        raise ValueError("pool_size must be at least 1")
    conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
    return conninfo, schema, pool_size


class _Borrow:
    __slots__ = ("conn", "pool")

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> psycopg.AsyncConnection[Any]:
        self.conn = await self.pool.get()
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        assert self.conn is not None
        self.pool.put(self.conn)


class _Pool:
    """Just what the store needs from a connection pool, with as little work per borrow as
    possible (a general pool's bookkeeping cost ~8% of a block transition here): idle
    connections on a stack, new ones opened on demand up to ``max_size``, waiters served first
    come first served. A connection that comes back broken or inside a transaction is dropped."""

    def __init__(self, conninfo: str, max_size: int, kwargs: dict[str, Any]) -> None:
        self.conninfo = conninfo
        self.max_size = max_size
        self.kwargs = kwargs
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._size = 0
        self._waiters: deque[asyncio.Future[psycopg.AsyncConnection[Any] | None]] = deque()
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def connection(self) -> _Borrow:
        return _Borrow(self)

    async def open(self) -> None:
        self.put(await self._connect())

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        self._size += 1
        try:
            return await psycopg.AsyncConnection.connect(self.conninfo, **self.kwargs)
        except BaseException:
            self._size -= 1
            self._wake(None)  # a waiter may try to connect in turn
            raise

    async def get(self) -> psycopg.AsyncConnection[Any]:
        while True:
            if self._closed:
                raise RuntimeError("store is closed")
            if self._idle:
                return self._idle.pop()
            if self._size < self.max_size:
                return await self._connect()
            fut: asyncio.Future[psycopg.AsyncConnection[Any] | None]
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                conn = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.result() is not None:
                    self.put(fut.result())  # handed to us just as we were cancelled
                raise
            if conn is not None:
                return conn
            # Woken without a connection: a slot was freed, try again.

    def put(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if (
            self._closed
            or conn.closed
            or conn.broken
            or conn.info.transaction_status != TransactionStatus.IDLE
        ):
            self._size -= 1
            task = asyncio.ensure_future(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            self._wake(None)
            return
        if not self._wake(conn):
            self._idle.append(conn)

    def _wake(self, conn: psycopg.AsyncConnection[Any] | None) -> bool:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
        self._size -= len(idle)
        while self._wake(None):
            pass
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class PostgresStore(Store):
    """The Store contract on PostgreSQL. Safe to share between any number of processes: fencing,
    claims and locks are all decided by the database in single statements."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        conninfo, url_schema, url_pool = parse_url(url)
        self.conninfo = conninfo
        self.schema = schema or url_schema
        if not _IDENT.match(self.schema):
            raise ValueError(f"schema must be a plain SQL identifier, not {self.schema!r}")
        self.pool_size = pool_size or url_pool
        self.connect_timeout = connect_timeout
        self.url = url
        self._pool: _Pool | None = None

    # -- plumbing ------------------------------------------------------------------------------

    def _safe_url(self) -> str:
        parts = urlsplit(self.conninfo)
        host = parts.hostname or "localhost"
        return f"{parts.scheme}://{parts.username or ''}@{host}:{parts.port or 5432}{parts.path}"

    async def _migrate(self) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=max(1, int(self.connect_timeout))
            )
        except psycopg.OperationalError as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self._safe_url()}: {str(exc).strip()}"
            ) from None
        try:
            async with conn.transaction():
                # Several workers may start at once: one migrates, the others wait and see it done.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('switchback.migrate:' || %s))",
                    (self.schema,),
                )
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                await conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self.schema}".schema_version (version INTEGER NOT NULL)'
                )
                row = await (
                    await conn.execute(f'SELECT version FROM "{self.schema}".schema_version')
                ).fetchone()
                version = row[0] if row else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"schema {self.schema!r} has version {version}; this switchback knows up "
                        f"to {SCHEMA_VERSION}: upgrade switchback"
                    )
                await conn.execute(f'SET LOCAL search_path TO "{self.schema}"')
                for i in range(version, SCHEMA_VERSION):
                    for stmt in MIGRATIONS[i].split(";"):
                        if stmt.strip():
                            await conn.execute(stmt)  # type: ignore[arg-type]
                if row is None:
                    await conn.execute(
                        "INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,)
                    )
                elif version != SCHEMA_VERSION:
                    await conn.execute("UPDATE schema_version SET version=%s", (SCHEMA_VERSION,))
        finally:
            await conn.close()

    async def open(self) -> None:
        if self._pool is not None:
            return
        await self._migrate()
        pool = _Pool(
            self.conninfo,
            self.pool_size,
            {
                "autocommit": True,
                "connect_timeout": max(1, int(self.connect_timeout)),
                # Every statement is a lookup by key: a generic plan, made once per connection
                # (psycopg prepares repeated statements), saves re-planning on every write.
                "options": f"-c search_path={self.schema} -c plan_cache_mode=force_generic_plan",
            },
        )
        try:
            await pool.open()
        except psycopg.OperationalError as exc:
            await pool.close()
            raise StoreError(
                f"cannot connect to PostgreSQL at {self._safe_url()}: {str(exc).strip()}"
            ) from None
        self._pool = pool

    async def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        await pool.close()

    @property
    def pool(self) -> _Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    # -- writes --------------------------------------------------------------------------------

    async def create(
        self,
        tx: TxRecord,
        blocks: Sequence[BlockRecord],
        audit: AuditRecord | None = None,
        locks: Sequence[str] = (),
    ) -> None:
        keys = sorted(set(locks))
        params = (
            tx.xid, tx.created_at, keys,
            tx.xid, tx.scenario, tx.status, tx.request_json(), tx.cursor, tx.reason,
            _dump(tx.error), _dump(tx.result), tx.created_at, tx.updated_at, tx.deadline,
            tx.idempotency_key, tx.request_hash, tx.owner, tx.lease_until, tx.fence,
            tx.idempotency_scope,
            tx.xid, _blocks_json(blocks),
            tx.xid, *_audit_params(audit),
        )  # fmt: skip
        while True:
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(_CREATE, params)
                return
            except pg_errors.UniqueViolation as exc:
                # The statement failed as a whole: nothing of it is stored.
                constraint = exc.diag.constraint_name or ""
                if constraint == "locks_pkey":
                    held = await self._lock_holder(keys, tx.xid)
                    if held is None:
                        continue  # released between our insert and the look-up: try again
                    raise LockHeld(*held) from None
                if tx.idempotency_key and constraint == "tx_idempotency":
                    existing = await self.find_by_idempotency_key(
                        tx.idempotency_scope or "", tx.idempotency_key
                    )
                    if existing is not None:
                        raise DuplicateIdempotencyKey(existing) from None
                raise

    async def _lock_holder(self, keys: Sequence[str], xid: str) -> tuple[str, str] | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT key, xid FROM locks WHERE key = ANY(%s) AND xid <> %s ORDER BY key LIMIT 1",
                    (list(keys), xid),
                )
            ).fetchone()
        return (row[0], row[1]) if row else None

    async def write(
        self,
        tx: TxRecord,
        blocks: Sequence[BlockRecord] = (),
        audit: AuditRecord | None = None,
        consume_signal: int | None = None,
        locks: Sequence[str] | None = None,
    ) -> None:
        final = tx.status in FINAL
        params: list[Any] = [
            tx.status, tx.request_json(), tx.cursor, tx.reason, _dump(tx.error), _dump(tx.result),
            tx.updated_at, tx.deadline, tx.owner, tx.lease_until, tx.xid, tx.fence,
        ]  # fmt: skip
        if blocks:
            params.append(_blocks_json(blocks))
        if audit:
            params += (audit.at, audit.actor, audit.action, audit.reason, _dump(audit.input))
        if consume_signal is not None:
            params.append(consume_signal)
        sql = _write_sql(bool(blocks), audit is not None, consume_signal is not None, final)
        if locks is not None and not final:
            await self._write_with_locks(tx, sql, params, sorted(set(locks)))
            return
        async with self.pool.connection() as conn:
            row = await (await conn.execute(sql, params)).fetchone()
        if not row or row[0] != 1:
            raise FencedOut(f"transaction {tx.xid}: fencing token {tx.fence} is stale")

    async def _write_with_locks(
        self, tx: TxRecord, sql: str, params: list[Any], keys: list[str]
    ) -> None:
        """The rare write that changes the lock set (rollforward with a corrected request):
        an explicit transaction, so that a held key undoes the whole write."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await (await conn.execute(sql, params)).fetchone()
            if not row or row[0] != 1:
                raise FencedOut(f"transaction {tx.xid}: fencing token {tx.fence} is stale")
            await conn.execute(
                "DELETE FROM locks WHERE xid=%s AND NOT (key = ANY(%s))", (tx.xid, keys)
            )
            await conn.execute(
                "INSERT INTO locks (key, xid, acquired_at) SELECT k, %s, %s FROM unnest(%s::text[]) AS k "
                "ON CONFLICT (key) DO NOTHING",
                (tx.xid, tx.updated_at, keys),
            )
            # Rows of other holders are locked by their inserts until they commit; what we see
            # here after ON CONFLICT is settled.
            row = await (
                await conn.execute(
                    "SELECT key, xid FROM locks WHERE key = ANY(%s) AND xid <> %s ORDER BY key LIMIT 1",
                    (keys, tx.xid),
                )
            ).fetchone()
            if row:
                raise LockHeld(row[0], row[1])

    async def claim(
        self, xid: str, owner: str, lease_seconds: float, now: float
    ) -> TxRecord | None:
        async with self.pool.connection() as conn:
            # Never "already mine": a claim is exclusive, even within one owner (two decisions
            # of one process must not both hold the transaction).
            cur = await conn.execute(
                "UPDATE transactions SET owner=%s, lease_until=%s, fence=fence+1 WHERE xid=%s AND "
                "(owner IS NULL OR lease_until < %s) RETURNING owner",
                (owner, now + lease_seconds, xid, now),
            )
            if await cur.fetchone() is None:
                row = await (
                    await conn.execute("SELECT owner FROM transactions WHERE xid=%s", (xid,))
                ).fetchone()
                if row is None or row[0] == owner or not owner_is_dead(row[0]):
                    return None
                # Its owner is a dead process on this host: take over, but only from that owner
                # (compare and set), in case someone else was quicker.
                cur = await conn.execute(
                    "UPDATE transactions SET owner=%s, lease_until=%s, fence=fence+1 "
                    "WHERE xid=%s AND owner=%s RETURNING owner",
                    (owner, now + lease_seconds, xid, row[0]),
                )
                if await cur.fetchone() is None:
                    return None
            return await self._load(conn, xid)

    async def heartbeat(self, owner: str, lease_seconds: float, now: float) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE transactions SET lease_until=%s WHERE owner=%s",
                (now + lease_seconds, owner),
            )
            return cur.rowcount

    async def add_signal(
        self,
        signal: SignalRecord,
        audit: AuditRecord,
        *,
        statuses: Sequence[str] | None = None,
        max_cursor: int | None = None,
    ) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            # The transaction's row lock serialises this with every other signal for it and with
            # every write of its driver (which consumes signals in the same statement that
            # updates the row): the check below sees the latest committed state.
            row = await (
                await conn.execute(
                    "SELECT status, cursor FROM transactions WHERE xid=%s FOR UPDATE",
                    (signal.xid,),
                )
            ).fetchone()
            status, cursor = row if row else (None, None)
            if (
                row is None
                or (statuses is not None and status not in statuses)
                or (max_cursor is not None and cursor > max_cursor)
            ):
                raise SignalRefused(signal.xid, status, cursor, None)
            pending = await self._pending(conn, signal.xid, signal.name)
            if pending is not None:
                raise SignalRefused(signal.xid, status, cursor, pending)
            row = await (
                await conn.execute(
                    "WITH s AS (INSERT INTO signals (xid, name, payload, at, actor) "
                    "VALUES (%s, %s, %s::jsonb, %s, %s) RETURNING id), "
                    "a AS (INSERT INTO audit (xid, at, actor, action, reason, input) "
                    "VALUES (%s, %s, %s, %s, %s, %s::jsonb)) SELECT id FROM s",
                    (
                        signal.xid,
                        signal.name,
                        _dump(signal.payload),
                        signal.at,
                        signal.actor,
                        audit.xid,
                        audit.at,
                        audit.actor,
                        audit.action,
                        audit.reason,
                        _dump(audit.input),
                    ),
                )
            ).fetchone()
        assert row is not None
        return int(row[0])

    async def set_meta(self, key: str, value: Any) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES (%s, %s::jsonb) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (key, _dump(value)),
            )

    # -- reads ---------------------------------------------------------------------------------

    @staticmethod
    async def _load(conn: psycopg.AsyncConnection[Any], xid: str) -> TxRecord | None:
        # Three queries, one round trip.
        async with conn.pipeline():
            c_tx = await conn.execute(_LOAD_TX, (xid,))
            c_blocks = await conn.execute(_LOAD_BLOCKS, (xid,))
            c_audit = await conn.execute(_LOAD_AUDIT, (xid,))
        row = await c_tx.fetchone()
        if row is None:
            return None
        tx = _tx_from_row(row)
        for r in await c_blocks.fetchall():
            tx.blocks.append(
                BlockRecord(
                    xid=r[0],
                    index=r[1],
                    name=r[2],
                    status=r[3],
                    attempts=r[4],
                    output=r[5],
                    error=r[6],
                    started_at=r[7],
                    ended_at=r[8],
                    undo_attempts=r[9],
                    undo_output=r[10],
                    undo_error=r[11],
                    note=r[12],
                )
            )
        for r in await c_audit.fetchall():
            tx.audit.append(
                AuditRecord(
                    id=r[0], xid=r[1], at=r[2], actor=r[3], action=r[4], reason=r[5], input=r[6]
                )
            )
        return tx

    async def load(self, xid: str) -> TxRecord | None:
        async with self.pool.connection() as conn:
            return await self._load(conn, xid)

    async def find_by_idempotency_key(self, scope: str, key: str) -> TxRecord | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT xid FROM transactions WHERE idempotency_scope=%s AND idempotency_key=%s",
                    (scope, key),
                )
            ).fetchone()
            return await self._load(conn, row[0]) if row else None

    async def list(
        self,
        status: str | None = None,
        scenario: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TxRecord], str | None]:
        sql, params = list_query(_TX_COLS, status, scenario, cursor, limit, "%s")
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(sql, params)).fetchall()  # type: ignore[arg-type]
        page = [_tx_from_row(r[1:]) for r in rows[:limit]]
        nxt = str(rows[limit - 1][0]) if len(rows) > limit else None
        return page, nxt

    async def orphans(self, now: float, statuses: Sequence[str]) -> list[str]:
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT xid, owner, lease_until FROM transactions WHERE status = ANY(%s) "
                    "ORDER BY seq",
                    (list(statuses),),
                )
            ).fetchall()
        return [xid for xid, owner, lease in rows if owner_gone(owner, lease, now)]

    async def waiting(self, now: float) -> list[WaitingRecord]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_WAITING)).fetchall()
        return waiting_records(rows, now)

    @staticmethod
    async def _pending(
        conn: psycopg.AsyncConnection[Any], xid: str, name: str
    ) -> SignalRecord | None:
        r = await (
            await conn.execute(
                "SELECT id, xid, name, payload, at, actor FROM signals "
                "WHERE xid=%s AND name=%s AND NOT consumed ORDER BY id LIMIT 1",
                (xid, name),
            )
        ).fetchone()
        if r is None:
            return None
        return SignalRecord(id=r[0], xid=r[1], name=r[2], payload=r[3], at=r[4], actor=r[5])

    async def pending_signal(self, xid: str, name: str) -> SignalRecord | None:
        async with self.pool.connection() as conn:
            return await self._pending(conn, xid, name)

    async def list_locks(self) -> list[LockRecord]:
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute("SELECT key, xid, acquired_at FROM locks ORDER BY key")
            ).fetchall()
        return [LockRecord(key=k, xid=x, acquired_at=t) for k, x, t in rows]

    async def get_meta(self, key: str) -> Any:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT value FROM meta WHERE key=%s", (key,))
            ).fetchone()
        return row[0] if row else None

    async def drop_schema(self) -> None:
        """Remove the schema and everything in it (tests, benchmarks)."""
        async with self.pool.connection() as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
