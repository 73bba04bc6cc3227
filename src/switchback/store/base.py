"""The one interface every store implements. The engine only ever talks to this."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from switchback.store.records import (
    AuditRecord,
    BlockRecord,
    LockRecord,
    SignalRecord,
    TxRecord,
    WaitingRecord,
)


class StoreError(Exception):
    pass


class FencedOut(StoreError):
    """A write carried a stale fencing token: another owner has taken the transaction over."""


class DuplicateIdempotencyKey(StoreError):
    def __init__(self, existing: TxRecord) -> None:
        self.existing = existing
        super().__init__(f"idempotency key already used by {existing.xid}")


class SignalRefused(StoreError):
    """``add_signal`` stored nothing: the transaction is missing, not in one of the statuses the
    signal applies to, past the last block that could consume it, or a signal of the same name
    is already pending (``pending``)."""

    def __init__(
        self, xid: str, status: str | None, cursor: int | None, pending: SignalRecord | None
    ) -> None:
        self.xid = xid
        self.status = status
        self.cursor = cursor
        self.pending = pending
        if pending is not None:
            what = f"a signal {pending.name!r} from {pending.actor} is already pending"
        else:
            what = f"status {status}, block {cursor}"
        super().__init__(f"signal not stored for {xid}: {what}")


class LockHeld(StoreError):
    """A resource lock key is held by another transaction."""

    def __init__(self, key: str, holder: str) -> None:
        self.key = key
        self.holder = holder
        super().__init__(f"lock {key!r} is held by transaction {holder}")


class Store(abc.ABC):
    """Persistence of transactions, blocks, audit records and signals.

    Every method that changes state commits durably before it returns, in exactly one database
    transaction, so that "block k done + block k+1 started" is one write.
    """

    url: str

    @abc.abstractmethod
    async def open(self) -> None: ...

    def set_load_hint(self, alone: Callable[[], bool]) -> None:  # noqa: B027 (optional hook)
        """``alone()`` tells whether a single transaction is moving in this process; a store
        may then take a faster path for one writer. Default: ignored."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def create(
        self,
        tx: TxRecord,
        blocks: Sequence[BlockRecord],
        audit: AuditRecord | None = None,
        locks: Sequence[str] = (),
    ) -> None:
        """Insert a new transaction with its blocks, taking all its resource ``locks`` in the
        same commit (all or nothing, so two transactions can never deadlock on them).
        Raises DuplicateIdempotencyKey (``tx.idempotency_key`` is taken in
        ``tx.idempotency_scope``), or LockHeld (and inserts nothing)."""

    @abc.abstractmethod
    async def write(
        self,
        tx: TxRecord,
        blocks: Sequence[BlockRecord] = (),
        audit: AuditRecord | None = None,
        consume_signal: int | None = None,
        locks: Sequence[str] | None = None,
    ) -> None:
        """Update the transaction row and the given block rows, append the audit record and mark
        a signal consumed — all in one commit, only if ``tx.fence`` is still the stored one
        (else FencedOut). ``locks`` (if not None) becomes the transaction's exact set of lock
        keys (LockHeld if another transaction holds one). When ``tx.status`` is final
        (completed, rolled_back) the transaction's locks are released in the same commit."""

    @abc.abstractmethod
    async def load(self, xid: str) -> TxRecord | None:
        """The transaction with its blocks (by index) and audit trail, or None."""

    @abc.abstractmethod
    async def list(
        self,
        status: str | None = None,
        scenario: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TxRecord], str | None]:
        """Newest first, without blocks/audit; returns the page and the next cursor."""

    @abc.abstractmethod
    async def find_by_idempotency_key(self, scope: str, key: str) -> TxRecord | None:
        """The transaction started with this key in this scope (the caller), or None."""

    @abc.abstractmethod
    async def claim(
        self, xid: str, owner: str, lease_seconds: float, now: float
    ) -> TxRecord | None:
        """Take ownership if the transaction is unowned or its owner's lease has expired (or its
        owner process is known dead). Bumps the fencing token. Returns the loaded transaction, or
        None if anyone holds it — ``owner`` itself included: a claim is exclusive, so two
        decisions made by one process can never both hold the transaction."""

    @abc.abstractmethod
    async def heartbeat(self, owner: str, lease_seconds: float, now: float) -> int:
        """Extend the lease of every transaction this owner holds; returns how many."""

    @abc.abstractmethod
    async def orphans(self, now: float, statuses: Sequence[str]) -> list[str]:
        """xids in the given statuses whose owner is gone (no owner, lease expired, or dead)."""

    @abc.abstractmethod
    async def waiting(self, now: float) -> list[WaitingRecord]:
        """Transactions in ``waiting`` whose owner is gone, oldest first, with the wait block's
        start and whether any signal is pending: one query per recovery sweep, however many
        transactions wait (an approval can wait for days)."""

    @abc.abstractmethod
    async def add_signal(
        self,
        signal: SignalRecord,
        audit: AuditRecord,
        *,
        statuses: Sequence[str] | None = None,
        max_cursor: int | None = None,
    ) -> int:
        """Store the signal and its audit record; returns the signal's id. In the same atomic
        step (serialised with every write to the transaction), refuse with SignalRefused and
        store nothing if the transaction's status is not in ``statuses``, its cursor is past
        ``max_cursor``, or a signal of the same name is pending already: so of concurrent
        signals exactly one is stored, and none is kept that nothing will consume."""

    @abc.abstractmethod
    async def pending_signal(self, xid: str, name: str) -> SignalRecord | None:
        """The oldest unconsumed signal of that name for the transaction."""

    @abc.abstractmethod
    async def list_locks(self) -> list[LockRecord]:
        """Every held lock, by key."""

    @abc.abstractmethod
    async def get_meta(self, key: str) -> Any: ...

    @abc.abstractmethod
    async def set_meta(self, key: str, value: Any) -> None: ...


def new_owner_id() -> str:
    """An owner id that says where the owner runs: ``host:pid:random``."""
    import os
    import secrets
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_gone(owner: str | None, lease_until: float | None, now: float) -> bool:
    """Nobody drives the transaction: no owner, an expired lease, or a dead owner process."""
    return owner is None or (lease_until is not None and lease_until < now) or owner_is_dead(owner)


def waiting_query(unconsumed: str) -> str:
    """The recovery sweep's query for ``Store.waiting`` (``unconsumed``: the SQL that is true
    for a signal not yet consumed, which differs between databases)."""
    return (
        "SELECT t.xid, t.scenario, t.cursor, b.started_at, t.owner, t.lease_until, "
        f"EXISTS (SELECT 1 FROM signals s WHERE s.xid = t.xid AND {unconsumed}) "
        "FROM transactions t LEFT JOIN blocks b ON b.xid = t.xid AND b.idx = t.cursor "
        "WHERE t.status = 'waiting' ORDER BY t.seq"
    )


def waiting_records(rows: Iterable[Sequence[Any]], now: float) -> list[WaitingRecord]:
    return [
        WaitingRecord(xid, scenario, cursor, started, bool(signalled))
        for xid, scenario, cursor, started, owner, lease, signalled in rows
        if owner_gone(owner, lease, now)
    ]


def owner_is_dead(owner: str | None) -> bool:
    """True only when the owner is a process on this host that no longer exists.

    Lets a restarted process on the same machine take over at once after a ``kill -9`` instead of
    waiting for the lease to expire; for owners elsewhere only the lease counts.
    """
    import os
    import socket

    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie (killed, not yet reaped by its parent) is dead too.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def list_query(
    columns: str,
    status: str | None,
    scenario: str | None,
    cursor: str | None,
    limit: int,
    mark: str,
) -> tuple[str, tuple[Any, ...]]:
    """The query behind ``Store.list`` (newest first, one row more than the page to tell whether
    there is a next one), for a DB-API driver whose placeholder is ``mark``."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (
        ("status=", status),
        ("scenario=", scenario),
        # seq is a 64-bit integer in both databases: a larger cursor means "from the newest".
        ("seq<", min(int(cursor), 2**63 - 1) if cursor else None),
    ):
        if value is not None and value != "":
            where.append(clause + mark)
            params.append(value)
    sql = f"SELECT seq, {columns} FROM transactions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY seq DESC LIMIT {mark}", (*params, limit + 1)
