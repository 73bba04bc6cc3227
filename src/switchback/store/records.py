"""The rows the engine persists. Plain dataclasses shared by every store implementation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Transaction statuses (design.md).
RUNNING = "running"
WAITING = "waiting"
COMPLETED = "completed"
SUSPENDED = "suspended"
ROLLING_BACK = "rolling_back"
ROLLED_BACK = "rolled_back"
ROLLBACK_FAILED = "rollback_failed"
TX_STATUSES = (RUNNING, WAITING, COMPLETED, SUSPENDED, ROLLING_BACK, ROLLED_BACK, ROLLBACK_FAILED)
# Statuses in which some process is (or should be) driving the transaction.
ACTIVE = (RUNNING, ROLLING_BACK)
FINAL = (COMPLETED, ROLLED_BACK)

# Block statuses.
PENDING = "pending"
B_RUNNING = "running"
DONE = "done"
FAILED = "failed"
UNDOING = "undoing"
UNDONE = "undone"
UNDO_FAILED = "undo_failed"
BLOCK_STATUSES = (PENDING, B_RUNNING, DONE, FAILED, UNDOING, UNDONE, UNDO_FAILED)


# allow_nan=False: NaN and infinity are not JSON (PostgreSQL's jsonb refuses them; SQLite would
# keep text no JSON parser reads back). The engine refuses them before they get here.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def to_json(value: Any) -> str | None:
    """Compact JSON, None for None. One shared encoder (json.dumps builds one per call), the
    same for every store."""
    return None if value is None else _encode(value)


@dataclass
class BlockRecord:
    xid: str
    index: int
    name: str
    status: str = PENDING
    attempts: int = 0
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    ended_at: float | None = None
    undo_attempts: int = 0
    undo_output: Any = None
    undo_error: dict[str, Any] | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "status": self.status,
            "attempts": self.attempts,
            "output": self.output,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "undo_attempts": self.undo_attempts,
            "undo_output": self.undo_output,
            "undo_error": self.undo_error,
            "note": self.note,
        }


@dataclass
class AuditRecord:
    xid: str
    at: float
    actor: str
    action: str
    reason: str | None = None
    input: Any = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "reason": self.reason,
            "input": self.input,
        }


@dataclass
class SignalRecord:
    xid: str
    name: str
    payload: Any
    at: float
    actor: str
    id: int | None = None
    consumed: bool = False


@dataclass
class TxRecord:
    xid: str
    scenario: str
    status: str
    request: Any
    cursor: int = 0
    reason: str | None = None
    error: dict[str, Any] | None = None
    result: Any = None
    created_at: float = 0.0
    updated_at: float = 0.0
    deadline: float | None = None
    idempotency_key: str | None = None
    # Whose key it is (the actor who called): two callers' keys never meet.
    idempotency_scope: str | None = None
    request_hash: str | None = None
    # Ownership: the process driving the transaction holds a lease; every write it makes carries
    # the fencing token it got when it claimed, and a write with a stale token is refused.
    owner: str | None = None
    lease_until: float | None = None
    fence: int = 0
    blocks: list[BlockRecord] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    # The request as JSON text, kept with the object it was made from: stores write the request
    # with every state change, and it changes only on a rollforward with a corrected request.
    _request_json: tuple[Any, str | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def request_json(self) -> str | None:
        cached = self._request_json
        if cached is None or cached[0] is not self.request:
            cached = self._request_json = (self.request, to_json(self.request))
        return cached[1]

    def to_dict(self) -> dict[str, Any]:
        # The block that stopped the transaction: failed now, or (after a rollback) the last one
        # that recorded an error.
        failed = next((b for b in self.blocks if b.status in (FAILED, UNDO_FAILED)), None) or next(
            (b for b in reversed(self.blocks) if b.error or b.undo_error), None
        )
        return {
            "xid": self.xid,
            "scenario": self.scenario,
            "status": self.status,
            "reason": self.reason,
            "request": self.request,
            "cursor": self.cursor,
            "current_block": self.blocks[self.cursor].name
            if self.cursor < len(self.blocks)
            else None,
            "failed_block": failed.name if failed else None,
            "error": self.error,
            "result": self.result,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "deadline": self.deadline,
            "owner": self.owner,
            "blocks": [b.to_dict() for b in self.blocks],
            "audit": [a.to_dict() for a in self.audit],
        }


@dataclass
class WaitingRecord:
    """A transaction parked at a wait block with no live owner, as the recovery sweep needs it:
    enough to decide whether it is due (signal arrived, wait timed out) without loading it."""

    xid: str
    scenario: str
    cursor: int
    started_at: float | None  # when the wait block began
    signalled: bool  # some unconsumed signal exists for the transaction


@dataclass
class LockRecord:
    key: str
    xid: str
    acquired_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "xid": self.xid, "acquired_at": self.acquired_at}
