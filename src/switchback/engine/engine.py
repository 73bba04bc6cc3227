"""The transaction state machine and its executor.

One durable write per block transition: "block k done + block k+1 started" is a single store
write, so a crash leaves either block k running (in doubt) or block k+1 running (in doubt), never
a state in between. Which in-doubt blocks may run again is decided by ``idempotent`` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import random
import string
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

from switchback.engine import decisions, inputs
from switchback.engine.context import BlockContext
from switchback.engine.errors import (
    Busy,
    DecisionRefused,
    EngineError,
    IdempotencyConflict,
    LimitReached,
    LockTimeout,
    RequestInvalid,
    TextInvalid,
    UnknownScenario,
    UnknownTransaction,
    error_info,
)
from switchback.model import App, Block, Scenario
from switchback.store import (
    DuplicateIdempotencyKey,
    FencedOut,
    LockHeld,
    SignalRefused,
    Store,
    new_owner_id,
)
from switchback.store.records import (
    ACTIVE,
    B_RUNNING,
    COMPLETED,
    DONE,
    FAILED,
    PENDING,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    ROLLING_BACK,
    RUNNING,
    SUSPENDED,
    UNDO_FAILED,
    UNDOING,
    UNDONE,
    WAITING,
    AuditRecord,
    BlockRecord,
    LockRecord,
    SignalRecord,
    TxRecord,
    to_json,
)

log = logging.getLogger("switchback.engine")

SYSTEM_ACTOR = "switchback"
# A pause request is kept as a signal of this reserved name: durable, audited, and visible to
# whichever worker drives the transaction.
PAUSE_SIGNAL = "__pause__"
# xids: 32 hex digits, like UUIDv7: 48 bits of milliseconds since the epoch, then 80 random
# bits from a generator seeded once by the OS (os.urandom per xid is a system call: ~10 µs on the
# hot path). Time first, so new rows land at the end of every index keyed by xid: a batch of
# commits then dirties a few shared pages instead of one random page per row and index (about
# a third of the WAL written per call). Unique, not secret: the admin API needs a token.
_XID_RANDOM = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _XID_RANDOM.seed(os.urandom(32)))  # no shared sequence


def _lease_from_env() -> float:
    text = os.environ.get("SWITCHBACK_LEASE_SECONDS") or "15"
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"SWITCHBACK_LEASE_SECONDS must be a number of seconds > 0, not {text!r}")
    return value


def accept(*problems: list[dict[str, str]]) -> None:
    """Refuse (TextInvalid, HTTP 422) input the platform does not accept (engine/inputs.py)."""
    found = [p for group in problems for p in group]
    if found:
        raise TextInvalid(found)


def _json_or_none(tx: TxRecord) -> str | None:
    try:
        return tx.request_json()
    except ValueError:  # a non-finite number: json_problems locates it
        return None


class TransactionTimeout(Exception):
    pass


class Interrupted(Exception):
    pass


def lock_keys(sc: Scenario, request: Any) -> list[str]:
    """The scenario's lock keys with request fields filled in (``"device:{device}"``)."""
    keys = []
    for template in sc.transaction.lock_keys:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        missing = [f for f in fields if not isinstance(request, dict) or f not in request]
        if missing:
            raise RequestInvalid(
                [
                    {"path": f"/{f}", "message": f"required by lock key {template!r}"}
                    for f in missing
                ]
            )
        keys.append(template.format_map(request))
    return sorted(set(keys))


def request_fingerprint(request: Any) -> str:
    """A stable hash of a request body, for idempotency keys."""
    return hashlib.sha256(
        json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


class EngineObserver:
    """Hooks for metrics and logs (the gateway's Prometheus counters implement this). Every method
    is called on the event loop and must not block; the defaults do nothing."""

    def block_finished(
        self, tx: TxRecord, block: str, phase: str, ok: bool, seconds: float
    ) -> None:
        """A DO or UNDO attempt ended (``phase`` is "do" or "undo")."""

    def transaction_changed(self, tx: TxRecord) -> None:
        """The transaction was written with a new status or position."""


class Engine:
    """Runs scenarios of one app as durable transactions on one store.

    Use as ``async with Engine(app, store) as engine:``; the engine opens and closes the store.
    """

    def __init__(
        self,
        app: App,
        store: Store,
        *,
        owner: str | None = None,
        lease_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        observers: list[EngineObserver] | None = None,
    ) -> None:
        self.app = app
        self.observers = list(observers or [])
        self.store = store
        self.owner = owner or new_owner_id()
        # Default 15 s; SWITCHBACK_LEASE_SECONDS shortens it (tests of lease expiry, fast failover).
        self.lease_seconds = lease_seconds if lease_seconds is not None else _lease_from_env()
        self.clock = clock
        self._tasks: dict[str, asyncio.Task[TxRecord | None]] = {}
        self._active = 0  # drive tasks not finished
        self._heartbeat: asyncio.Task[None] | None = None
        # Pause requests for transactions driven here: xid -> id of the pause signal to consume.
        self._pauses: dict[str, int] = {}
        # Transactions whose driver failed and could not hand them back yet: xid -> fence.
        self._to_release: dict[str, int] = {}
        # Transactions a decision here has claimed (or is claiming) and not yet handed on.
        self._deciding: set[str] = set()
        self._background: set[asyncio.Future[TxRecord]] = set()  # referenced until done

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> Engine:
        self.store.set_load_hint(lambda: self._active <= 1)
        await self.store.open()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="switchback-heartbeat")
        return self

    async def close(self, *, drain_timeout: float = 5.0) -> None:
        """Let running transactions reach their next durable point (up to ``drain_timeout``), then
        stop. Whatever is still running is simply left in doubt: the next start recovers it."""
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=drain_timeout)
            for t in still:
                t.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        if self._heartbeat:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self.store.close()

    async def __aenter__(self) -> Engine:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            for xid, fence in list(self._to_release.items()):
                try:
                    await self._give_up(xid, fence)
                except Exception:  # the store still fails: next beat
                    continue
                del self._to_release[xid]
                log.info("handed back after a driver failure", extra={"xid": xid})
            if any(not t.done() for t in self._tasks.values()):
                try:
                    await self.store.heartbeat(self.owner, self.lease_seconds, self.clock())
                    await self._collect_pauses()
                except Exception:  # a missed heartbeat is survivable; log and try again
                    log.exception("heartbeat failed")

    async def _collect_pauses(self, xids: list[str] | None = None) -> None:
        """Pause requests made through another process for transactions driven here."""
        for xid in xids if xids is not None else list(self._tasks):
            if xid not in self._pauses and self.is_running_here(xid):
                sig = await self.store.pending_signal(xid, PAUSE_SIGNAL)
                if sig is not None and sig.id is not None:
                    self._pauses[xid] = sig.id

    # -- queries ---------------------------------------------------------------------------------

    def scenario(self, name: str) -> Scenario:
        try:
            return self.app.scenario(name)
        except KeyError as exc:
            raise UnknownScenario(str(exc.args[0])) from None

    async def get(self, xid: str) -> TxRecord:
        accept(inputs.field_problems(xid=xid))
        tx = await self.store.load(xid)
        if tx is None:
            raise UnknownTransaction(xid)
        return tx

    async def list(
        self,
        status: str | None = None,
        scenario: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TxRecord], str | None]:
        accept(inputs.field_problems(status=status, scenario=scenario, cursor=cursor))
        return await self.store.list(status=status, scenario=scenario, limit=limit, cursor=cursor)

    async def locks(self) -> list[LockRecord]:
        """Every held resource lock and the transaction holding it."""
        return await self.store.list_locks()

    def is_running_here(self, xid: str) -> bool:
        task = self._tasks.get(xid)
        return task is not None and not task.done()

    async def wait(self, xid: str, timeout: float | None = None) -> TxRecord:
        """Wait until the transaction stops moving in this process (parked, waiting or final), or
        until ``timeout``; then return its stored state."""
        task = self._tasks.get(xid)
        if task is not None and not task.done():
            # A future woken by the driver's end or by the timer: the same as wait_for(shield())
            # without the two extra tasks and futures that costs (this is the hot path of every
            # synchronous HTTP call).
            loop = asyncio.get_running_loop()
            woken: asyncio.Future[None] = loop.create_future()

            def wake(_: object = None) -> None:
                if not woken.done():
                    woken.set_result(None)

            task.add_done_callback(wake)
            timer = loop.call_later(timeout, wake) if timeout is not None else None
            try:
                await woken
            finally:
                task.remove_done_callback(wake)
                if timer is not None:
                    timer.cancel()
            if task.done() and not task.cancelled() and task.exception() is None:
                settled = task.result()
                if settled is not None:
                    # The driver's record equals what it wrote last (each change is applied in
                    # memory and then committed): no need to read it back.
                    return settled
        return await self.get(xid)

    # -- starting --------------------------------------------------------------------------------

    async def start(
        self,
        scenario: str,
        request: Any,
        *,
        actor: str = "api",
        idempotency_key: str | None = None,
    ) -> TxRecord:
        """Validate the request, create the transaction durably (block 0 started) and drive it in
        the background. With an idempotency key already used for the same request, return that
        transaction instead and start nothing."""
        sc = self.scenario(scenario)
        violations = sc.validate_request(request)
        if violations:
            raise RequestInvalid(violations)
        keys = lock_keys(sc, request)
        now = self.clock()
        xid = f"{int(now * 1000) & 0xFFFF_FFFF_FFFF:012x}{_XID_RANDOM.getrandbits(80):020x}"
        tx = TxRecord(
            xid=xid,
            scenario=sc.name,
            status=RUNNING,
            request=request,
            created_at=now,
            updated_at=now,
            deadline=now + sc.transaction.timeout if sc.transaction.timeout else None,
            idempotency_key=idempotency_key,
            idempotency_scope=actor if idempotency_key else None,
            owner=self.owner,
            lease_until=now + self.lease_seconds,
            fence=1,
        )
        # The request's JSON is made here once (the store writes the same text): checking it
        # costs a regex search unless it holds a suspect escape.
        accept(
            inputs.json_problems(request, _json_or_none(tx)),
            inputs.field_problems(idempotency_key=idempotency_key, actor=actor),
        )
        if idempotency_key:
            tx.request_hash = fingerprint = request_fingerprint(request)
            # A key is the caller's own: another caller's same key is another call.
            existing = await self.store.find_by_idempotency_key(actor, idempotency_key)
            if existing:
                return self._same_request(existing, idempotency_key, sc.name, fingerprint)
            now = self.clock()
            tx.created_at = tx.updated_at = now
            tx.lease_until = now + self.lease_seconds
            tx.deadline = now + sc.transaction.timeout if sc.transaction.timeout else None
        fingerprint = tx.request_hash
        tx.blocks = [BlockRecord(xid=xid, index=i, name=b.name) for i, b in enumerate(sc.blocks)]
        first = tx.blocks[0]
        first.status, first.attempts, first.started_at = B_RUNNING, 1, now
        audit = AuditRecord(xid=xid, at=now, actor=actor, action="start", input=request)
        waited_until = time.monotonic() + sc.transaction.lock_timeout
        delay = 0.005
        while True:
            try:
                await self.store.create(tx, tx.blocks, audit, locks=keys)
                break
            except DuplicateIdempotencyKey as dup:
                return self._same_request(dup.existing, idempotency_key or "", sc.name, fingerprint)
            except LockHeld as held:
                # All keys are taken in one commit or none, so waiting here cannot deadlock.
                left = waited_until - time.monotonic()
                if left <= 0:
                    raise LockTimeout(held.key, held.holder, sc.transaction.lock_timeout) from None
                await asyncio.sleep(min(left, random.uniform(0, delay)))
                delay = min(delay * 2, 0.25)
                now = self.clock()
                tx.created_at = tx.updated_at = audit.at = first.started_at = now
                tx.lease_until = now + self.lease_seconds
                tx.deadline = now + sc.transaction.timeout if sc.transaction.timeout else None
        tx.audit.append(audit)
        for o in self.observers:
            o.transaction_changed(tx)
        self._spawn(tx)
        return tx

    @staticmethod
    def _same_request(
        existing: TxRecord, key: str, scenario: str, fingerprint: str | None
    ) -> TxRecord:
        """The transaction a key names, if this call is the one it was made for: the same
        scenario and the same request; anything else is a conflict, never its result."""
        if existing.scenario != scenario:
            raise IdempotencyConflict(key, existing.xid, scenario=existing.scenario)
        if existing.request_hash != fingerprint:
            raise IdempotencyConflict(key, existing.xid)
        return existing

    async def run(self, scenario: str, request: Any, **kwargs: Any) -> TxRecord:
        """Start a transaction and wait until it completes or parks."""
        tx = await self.start(scenario, request, **kwargs)
        return await self.wait(tx.xid)

    # -- decisions -------------------------------------------------------------------------------
    # Each decision owns the transaction while it decides (see _claimed): of concurrent
    # decisions, in this process or in others, exactly one gets it; the others are refused.

    async def rollforward(
        self,
        xid: str,
        *,
        actor: str,
        reason: str | None = None,
        request: Any = None,
        from_block: str | None = None,
        wait: bool = True,
    ) -> TxRecord:
        """Run a suspended transaction again from its failed block (or ``from_block``, an earlier
        one), optionally with a corrected request that is validated again."""
        accept(
            inputs.field_problems(xid=xid, actor=actor, reason=reason, **{"from": from_block}),
            inputs.json_problems(request, at="/request") if request is not None else [],
        )
        async with self._claimed(xid) as tx:
            decisions.ROLLFORWARD.check(tx)
            sc = self.scenario(tx.scenario)
            start = tx.cursor
            if from_block is not None:
                try:
                    start = sc.block_index(from_block)
                except KeyError:
                    names = ", ".join(b.name for b in sc.blocks)
                    raise RequestInvalid(
                        [
                            {
                                "path": "/from",
                                "message": f"unknown block {from_block!r} (blocks: {names})",
                            }
                        ]
                    ) from None
                if start > tx.cursor:
                    raise DecisionRefused(
                        xid,
                        f"can only roll forward from the failed block {tx.blocks[tx.cursor].name!r} or an earlier one",
                        tx.status,
                    )
            new_keys = None
            if request is not None:
                violations = sc.validate_request(request)
                if violations:
                    raise RequestInvalid(violations)
                new_keys = lock_keys(sc, request)
            stale_pause = await self.store.pending_signal(xid, PAUSE_SIGNAL)
            now = self.clock()
            changed = []
            for b in tx.blocks[start : tx.cursor + 1]:
                b.status, b.ended_at = PENDING, None
                changed.append(b)
            first = tx.blocks[start]
            first.status, first.started_at, first.error = B_RUNNING, now, None
            first.attempts += 1
            if request is not None:
                tx.request = request
            tx.cursor, tx.status, tx.reason, tx.error = start, RUNNING, None, None
            # A person decided just now: the transaction gets its full time budget again.
            timeout = sc.transaction.timeout
            tx.deadline = now + timeout if timeout else None
            tx.updated_at = now
            audit = AuditRecord(
                xid=xid, at=now, actor=actor, action="rollforward", reason=reason,
                input={"from": sc.blocks[start].name, "request": request},
            )  # fmt: skip
            try:
                await self._write(
                    tx,
                    changed,
                    audit,
                    locks=new_keys,
                    consume_signal=stale_pause.id if stale_pause else None,
                )
            except LockHeld as held:
                raise DecisionRefused(
                    xid, f"the corrected request needs {held}", SUSPENDED
                ) from None
            self._spawn(tx)
        return await self._settle(tx, wait)

    async def rollback(
        self, xid: str, *, actor: str, reason: str | None = None, wait: bool = True
    ) -> TxRecord:
        """UNDO every block whose DO ran, newest first. Also retries a failed rollback."""
        accept(inputs.field_problems(xid=xid, actor=actor, reason=reason))
        async with self._claimed(xid) as tx:
            decisions.ROLLBACK.check(tx)
            stale_pause = await self.store.pending_signal(xid, PAUSE_SIGNAL)
            now = self.clock()
            changed = []
            if tx.status == WAITING:
                b = tx.blocks[tx.cursor]
                b.status, b.note, b.ended_at = PENDING, "wait cancelled by rollback", now
                changed.append(b)
            action = "retry_rollback" if tx.status == ROLLBACK_FAILED else "rollback"
            tx.status, tx.updated_at = ROLLING_BACK, now
            audit = AuditRecord(xid=xid, at=now, actor=actor, action=action, reason=reason)
            await self._write(
                tx, changed, audit, consume_signal=stale_pause.id if stale_pause else None
            )
            self._spawn(tx)
        return await self._settle(tx, wait)

    async def mark_compensated(
        self, xid: str, *, actor: str, reason: str, wait: bool = True
    ) -> TxRecord:
        """Declare the failed UNDO done by hand; the rollback then goes on with older blocks."""
        accept(inputs.field_problems(xid=xid, actor=actor, reason=reason))
        if not reason or not reason.strip():
            raise DecisionRefused(xid, "marking a block compensated needs a reason")
        async with self._claimed(xid) as tx:
            decisions.COMPENSATED.check(tx)
            failed = next((b for b in reversed(tx.blocks) if b.status == UNDO_FAILED), None)
            if failed is None:
                raise DecisionRefused(xid, f"{xid} has no failed UNDO to mark", tx.status)
            now = self.clock()
            failed.status, failed.ended_at = UNDONE, now
            failed.note = f"compensated by {actor}: {reason}"
            tx.status, tx.updated_at, tx.error = ROLLING_BACK, now, None
            audit = AuditRecord(
                xid=xid,
                at=now,
                actor=actor,
                action="compensated",
                reason=reason,
                input={"block": failed.name},
            )
            await self._write(tx, [failed], audit)
            self._spawn(tx)
        return await self._settle(tx, wait)

    async def signal(
        self,
        xid: str,
        name: str,
        payload: Any = None,
        *,
        actor: str,
        reason: str | None = None,
        wait: bool = True,
    ) -> TxRecord:
        """Deliver a durable signal; a transaction waiting for it resumes. One signal of a name
        is pending at a time, and only while a wait block for it may still run."""
        accept(
            inputs.field_problems(xid=xid, name=name, actor=actor, reason=reason),
            inputs.json_problems(payload, at="/payload"),
        )
        tx = await self.get(xid)
        sc = self.scenario(tx.scenario)
        window = decisions.signal_window(sc, name)
        if window is None:
            raise DecisionRefused(
                xid, f"scenario {sc.name!r} has no wait block for signal {name!r}", tx.status
            )
        now = self.clock()
        try:
            await self.store.add_signal(
                SignalRecord(xid=xid, name=name, payload=payload, at=now, actor=actor),
                AuditRecord(
                    xid=xid,
                    at=now,
                    actor=actor,
                    action="signal",
                    reason=reason,
                    input={"signal": name, "payload": payload},
                ),
                statuses=decisions.SIGNAL.applies_to,
                max_cursor=window,
            )
        except SignalRefused as refused:
            raise self._signal_refused(refused, decisions.SIGNAL, f"signal {name!r}") from None
        resumed = await self._resume_waiting(xid, name)
        if resumed is not None:
            return await self._settle(resumed, wait)
        return await self.get(xid)

    async def _resume_waiting(self, xid: str, name: str) -> TxRecord | None:
        """After a signal is stored: resume the transaction if it waits for that signal and
        nobody else holds it (another process that does, or a recovery sweep, resumes it)."""
        try:
            async with self._claimed(xid) as tx:
                sc = self.scenario(tx.scenario)
                if tx.status != WAITING or sc.blocks[tx.cursor].wait != name:
                    await self._release(tx)
                    return None
                tx.status = RUNNING
                await self._write(tx)
                self._spawn(tx)
                return tx
        except Busy:
            return None

    @staticmethod
    def _signal_refused(
        refused: SignalRefused, decision: decisions.Decision, what: str
    ) -> EngineError:
        """Why ``add_signal`` stored nothing, as the decision's refusal."""
        xid, status = refused.xid, refused.status
        if status is None:
            return UnknownTransaction(xid)
        if refused.pending is not None:
            return DecisionRefused(
                xid,
                f"{what} is already pending for {xid} (requested by {refused.pending.actor})",
                status,
            )
        if decision.applies(status):
            return DecisionRefused(
                xid, f"{what} no longer applies: {xid} is past every block that waits for it",
                status,
            )  # fmt: skip
        return decision.refusal(xid, status, what)

    async def pause(
        self, xid: str, *, actor: str, reason: str | None = None, wait: bool = True
    ) -> TxRecord:
        """Park a running transaction at its next block boundary — the block that is running
        finishes, the next one does not start — as ``suspended`` with reason ``paused``; a
        waiting one at once. Roll it forward to go on, or back. Driven by another worker, it
        pauses when that worker's heartbeat sees the request (within a third of the lease)."""
        accept(inputs.field_problems(xid=xid, actor=actor, reason=reason))
        tx = await self.get(xid)
        decisions.PAUSE.check(tx)
        now = self.clock()
        try:
            sid = await self.store.add_signal(
                SignalRecord(xid=xid, name=PAUSE_SIGNAL, payload=None, at=now, actor=actor),
                AuditRecord(xid=xid, at=now, actor=actor, action="pause", reason=reason),
                statuses=decisions.PAUSE.applies_to,
            )
        except SignalRefused as refused:
            raise self._signal_refused(refused, decisions.PAUSE, "a pause") from None
        if self.is_running_here(xid):
            # The driver parks it at the next boundary (or, if it stops at a wait block first,
            # _one_less hands the request on to _pause_waiting).
            self._pauses[xid] = sid
            return await self.wait(xid) if wait else tx
        return await self._pause_waiting(xid, sid)

    async def _pause_waiting(self, xid: str, sid: int) -> TxRecord:
        """A pause request for a transaction not driven here: park it if it waits."""
        try:
            async with self._claimed(xid) as tx:
                if tx.status != WAITING:
                    # Running with its owner gone: the recovery sweep takes it over (in-doubt
                    # rules first) and pauses it at the next boundary. Anything else: it stopped
                    # meanwhile.
                    await self._release(tx)
                    return tx
                b = tx.blocks[tx.cursor]
                b.status, b.started_at, b.note = PENDING, None, "wait paused"
                tx.status, tx.reason, tx.error = SUSPENDED, "paused", None
                await self._write(tx, [b], release=True, consume_signal=sid)
                return tx
        except Busy:
            # Its driver, here (a decision being made) or elsewhere, will see the request.
            return await self.get(xid)

    async def _pause_from_elsewhere(self, xid: str) -> bool:
        """A pause requested through another process that the heartbeat has not brought here
        yet. Looked up before stopping at a wait block (a waiting transaction has no driver to
        see it later); between other blocks the heartbeat suffices."""
        sig = await self.store.pending_signal(xid, PAUSE_SIGNAL)
        if sig is None or sig.id is None:
            return False
        self._pauses[xid] = sig.id
        return True

    def _spent_pause(self, tx: TxRecord, consume: int | None) -> int | None:
        """The signal this write consumes: the step's own, else a pending pause request, which
        is spent when the transaction stops moving for whatever reason."""
        if consume is not None:
            return consume
        return self._pauses.pop(tx.xid, None)

    async def plan(self, xid: str) -> dict[str, Any]:
        """A dry run: which DOs a rollforward and which UNDOs a rollback would run, in order, with
        their inputs. Changes nothing."""
        tx = await self.get(xid)
        sc = self.scenario(tx.scenario)
        rolling_forward = decisions.ROLLFORWARD.applies(tx.status)
        forward: list[dict[str, Any]] = []
        if rolling_forward or tx.status == WAITING:
            for i in range(tx.cursor, len(sc.blocks)):
                b = sc.blocks[i]
                forward.append(
                    {
                        "index": i,
                        "block": b.name,
                        "action": "wait" if b.is_wait else "do",
                        "callable": b.do_ref,
                        "signal": b.wait,
                        "request": tx.request,
                    }
                )
        backward: list[dict[str, Any]] = []
        # What a rollback would undo, or (rolling back) what is still to undo.
        if decisions.ROLLBACK.applies(tx.status) or tx.status == ROLLING_BACK:
            for i in self._undo_order(tx, sc):
                b, rec = sc.blocks[i], tx.blocks[i]
                backward.append(
                    {
                        "index": i,
                        "block": b.name,
                        "action": "undo" if b.undo else "nothing (no undo defined)",
                        "callable": b.undo_ref,
                        "do_status": rec.status,
                        "do_output": rec.output,
                        "do_error": rec.error,
                    }
                )
        return {
            "xid": xid,
            "status": tx.status,
            "rollforward": forward if rolling_forward else [],
            "rollback": backward,
            "resume_after_signal": forward if tx.status == WAITING else [],
        }

    # -- recovery --------------------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Take over transactions whose owner is gone (crash, kill -9, expired lease), apply the
        in-doubt rules and drive them on; resume waiting transactions whose signal arrived or whose
        wait timed out. Returns the xids taken over. Safe to call from any number of processes."""
        now = self.clock()
        taken: list[str] = []
        for xid in await self.store.orphans(now, ACTIVE):
            if self.is_running_here(xid) or xid in self._deciding:
                continue
            try:
                if await self._take_over(xid):
                    taken.append(xid)
            except (Busy, UnknownTransaction):
                continue
            except Exception:  # this one failed (handed back): the others still get their turn
                log.exception("taking over failed", extra={"xid": xid})
                continue
            await self._collect_pauses([xid])  # paused while its owner was gone
        # Waits: one query for all of them; a transaction is loaded only once it is due.
        for w in await self.store.waiting(now):
            xid = w.xid
            try:
                bdef = self.scenario(w.scenario).blocks[w.cursor]
            except (UnknownScenario, IndexError):
                continue  # not this app's (another app shares the store): not ours to wake
            if w.signalled:
                pause = await self.store.pending_signal(xid, PAUSE_SIGNAL)
                if pause is not None and pause.id is not None:
                    # Requested while it stopped at the wait, too late for its driver to see.
                    await self._pause_waiting(xid, pause.id)
                    continue
            timed_out = bdef.timeout is not None and (w.started_at or 0) + bdef.timeout <= now
            signalled = w.signalled and (
                await self.store.pending_signal(xid, bdef.wait or "") is not None
            )
            if (signalled or timed_out) and await self._wake(xid):
                taken.append(xid)
        return taken

    async def _take_over(self, xid: str) -> bool:
        """Claim an orphan, apply the in-doubt rules and drive it on; False if it had stopped."""
        async with self._claimed(xid) as tx:
            if tx.status not in ACTIVE:
                await self._release(tx)
                return False
            log.info("taking over transaction", extra={"xid": xid})
            await self._resolve_in_doubt(tx)
            if tx.status in ACTIVE:
                self._spawn(tx)
            return True

    async def _wake(self, xid: str) -> bool:
        """Resume a waiting transaction whose signal came or whose wait timed out (the driver
        tells which); False if someone else holds it or it stopped waiting meanwhile."""
        try:
            async with self._claimed(xid) as tx:
                if tx.status != WAITING:
                    await self._release(tx)
                    return False
                tx.status = RUNNING
                await self._write(tx)
                self._spawn(tx)
                return True
        except Busy:
            return False

    async def sweep_forever(self, interval: float = 1.0) -> None:
        """The transaction role: recover orphans and time out waits, forever."""
        while True:
            try:
                await self.recover()
            except Exception:
                log.exception("recovery sweep failed")
            await asyncio.sleep(interval)

    async def _resolve_in_doubt(self, tx: TxRecord) -> None:
        sc = self.scenario(tx.scenario)
        now = self.clock()
        if tx.status == RUNNING and tx.cursor < len(tx.blocks):
            b, bdef = tx.blocks[tx.cursor], sc.blocks[tx.cursor]
            if b.status != B_RUNNING or bdef.is_wait:
                return
            if bdef.idempotent:
                b.attempts += 1
                b.started_at = now
                audit = AuditRecord(
                    tx.xid,
                    now,
                    SYSTEM_ACTOR,
                    "rerun_in_doubt",
                    "block is idempotent",
                    {"block": b.name},
                )
                await self._write(tx, [b], audit)
                return
            err = error_info(
                Interrupted(
                    "the process running this block stopped before the block finished; its effect is unknown"
                )
            )
            b.status, b.error, b.ended_at = FAILED, err, now
            tx.status, tx.reason, tx.error = SUSPENDED, "interrupted", err
            audit = AuditRecord(
                tx.xid,
                now,
                SYSTEM_ACTOR,
                "park_in_doubt",
                "block is not idempotent",
                {"block": b.name},
            )
            await self._write(tx, [b], audit, release=True)
        elif tx.status == ROLLING_BACK:
            order = self._undo_order(tx, sc)
            if not order:
                return
            b, bdef = tx.blocks[order[0]], sc.blocks[order[0]]
            if b.status != UNDOING:
                return
            if bdef.rerun_undo_when_in_doubt:
                b.undo_attempts += 1
                audit = AuditRecord(
                    tx.xid,
                    now,
                    SYSTEM_ACTOR,
                    "rerun_in_doubt",
                    "undo is idempotent",
                    {"block": b.name},
                )
                await self._write(tx, [b], audit)
                return
            err = error_info(
                Interrupted(
                    "the process running this UNDO stopped before it finished; its effect is unknown"
                )
            )
            b.status, b.undo_error = UNDO_FAILED, err
            tx.status, tx.reason, tx.error = ROLLBACK_FAILED, "interrupted", err
            audit = AuditRecord(
                tx.xid,
                now,
                SYSTEM_ACTOR,
                "park_in_doubt",
                "undo is not idempotent",
                {"block": b.name},
            )
            await self._write(tx, [b], audit, release=True)

    # -- ownership -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _claimed(self, xid: str) -> AsyncIterator[TxRecord]:
        """Own the transaction while deciding on it. Exactly one of any number of concurrent
        claims gets it: in this process by a reservation taken before the first ``await`` (the
        store's claim is not enough on its own: between two awaits another coroutine may claim
        too), across processes by the store's claim, which never hands a transaction to anyone
        who holds it — its own owner included. The body either hands the transaction on (a
        write that releases it, or a driver) or fails; a failure of any kind gives the
        transaction back as stored, at once or, if the store fails too, from the heartbeat."""
        if self.is_running_here(xid) or xid in self._deciding:
            tx = await self.get(xid)  # for the reason only: the refusal is decided already
            doing = "running" if self.is_running_here(xid) else "being decided on"
            raise Busy(
                xid,
                f"transaction {xid} is {tx.status} and {doing} in this process; "
                "wait until it parks",
                tx.status,
            )
        self._deciding.add(xid)
        try:
            fence = self._to_release.pop(xid, None)
            if fence is not None:  # left owned by a failure here: hand it back first
                try:
                    await self._give_up(xid, fence)
                except Exception:
                    self._to_release[xid] = fence
                    raise
            tx = await self.store.claim(xid, self.owner, self.lease_seconds, self.clock())
            if tx is None:
                current = await self.store.load(xid)
                if current is None:
                    raise UnknownTransaction(xid)
                raise Busy(
                    xid,
                    f"transaction {xid} is {current.status} and owned by {current.owner}",
                    current.status,
                )
            try:
                yield tx
            except FencedOut:
                # Our lease ran out mid-decision and another worker took over: its decision.
                raise Busy(
                    xid, f"transaction {xid} was taken over by another worker meanwhile", None
                ) from None
            except BaseException:
                await self._hand_back(xid, tx.fence)
                raise
        finally:
            self._deciding.discard(xid)

    async def _hand_back(self, xid: str, fence: int) -> None:
        """Release a claim after a failure; if the store fails too, the heartbeat retries."""
        try:
            await self._give_up(xid, fence)
        except Exception:
            log.exception("could not hand the transaction back; retrying", extra={"xid": xid})
            self._to_release[xid] = fence

    async def _settle(self, tx: TxRecord, wait: bool) -> TxRecord:
        """After a decision: wait until the transaction stops moving, if asked to."""
        if wait and tx.status in ACTIVE:
            return await self.wait(tx.xid)
        return tx

    async def _release(self, tx: TxRecord) -> None:
        tx.owner = tx.lease_until = None
        await self.store.write(tx)

    async def _write(
        self,
        tx: TxRecord,
        blocks: list[BlockRecord] | tuple[()] = (),
        audit: AuditRecord | None = None,
        *,
        release: bool = False,
        consume_signal: int | None = None,
        locks: list[str] | None = None,
    ) -> None:
        tx.updated_at = self.clock()
        if release:
            tx.owner = tx.lease_until = None
        await self.store.write(tx, blocks, audit, consume_signal, locks)
        if audit:
            tx.audit.append(audit)
        for o in self.observers:
            o.transaction_changed(tx)

    def _notify(self, tx: TxRecord) -> None:
        for o in self.observers:
            o.transaction_changed(tx)

    # -- driving ---------------------------------------------------------------------------------

    def _spawn(self, tx: TxRecord) -> None:
        task = asyncio.create_task(self._drive(tx), name=f"tx-{tx.xid}")
        self._active += 1
        task.add_done_callback(functools.partial(self._one_less, tx.xid))
        self._tasks[tx.xid] = task

    def _one_less(self, xid: str, task: asyncio.Task[TxRecord | None]) -> None:
        self._active -= 1
        sid = self._pauses.pop(xid, None)
        if sid is not None and not task.cancelled() and task.exception() is None:
            settled = task.result()
            if settled is not None and settled.status == WAITING:
                # The request came in as the driver stopped at a wait block: park it now.
                pausing = asyncio.ensure_future(self._pause_waiting(xid, sid))
                self._background.add(pausing)
                pausing.add_done_callback(self._background.discard)
        # Forget the finished driver (whoever waits on it holds it already).
        if self._tasks.get(xid) is task:
            del self._tasks[xid]

    async def _drive(self, tx: TxRecord) -> TxRecord | None:
        """Drive until the transaction stops moving; returns it as last written, or None if the
        driver lost ownership or failed (the stored state is then the truth)."""
        try:
            sc = self.scenario(tx.scenario)
            while True:
                if tx.status == RUNNING:
                    await self._forward_step(tx, sc)
                elif tx.status == ROLLING_BACK:
                    await self._undo_step(tx, sc)
                else:
                    return tx
        except FencedOut:
            log.warning(
                "lost ownership; another worker took the transaction over", extra={"xid": tx.xid}
            )
            self._notify(tx)
            return None
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug or a store failure, not a block failure: leave the transaction as stored and
            # give up ownership so a recovery sweep can pick it up under the in-doubt rules. If
            # the store is still failing, the heartbeat loop tries again until it works.
            log.exception("driver failed", extra={"xid": tx.xid})
            try:
                await self._give_up(tx.xid, tx.fence)
            except Exception:
                self._to_release[tx.xid] = tx.fence
            self._notify(tx)
            return None

    async def _give_up(self, xid: str, fence: int) -> None:
        """Release a transaction this process can no longer drive, as it is stored: the driver's
        record may be ahead of the store (the write that failed), and must not be written."""
        stored = await self.store.load(xid)
        if stored is not None and stored.owner == self.owner and stored.fence == fence:
            await self._release(stored)

    async def _call(self, fn: Callable[..., Any], ctx: BlockContext, timeout: float | None) -> Any:
        if inspect.iscoroutinefunction(fn):
            aw = fn(ctx)
        else:
            # Blocking code (boto3, ncclient, ...) runs in a thread so the loop stays responsive.
            aw = asyncio.to_thread(fn, ctx)
        # asyncio.timeout, unlike wait_for, does not wrap the call in a new task (hot path).
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                result = await aw
        except TimeoutError:
            if limit.expired():
                raise LimitReached(
                    f"{ctx.phase} of block {ctx.block!r} timed out after {timeout:.3g} s"
                ) from None
            raise
        if inspect.isawaitable(result):
            result = await result
        try:
            text = to_json(result)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"block {ctx.block!r} returned a value that is not JSON-serialisable: {exc}"
            ) from None
        problems = inputs.json_problems(result, text)
        if problems:
            # The same rule as for requests: no store could keep it (a DO that returns it
            # fails like one that returns something not JSON at all).
            where = "; ".join(f"{p['path']}: {p['message']}" for p in problems[:5])
            raise TypeError(
                f"block {ctx.block!r} returned a value the platform cannot store: {where}"
            )
        return result

    async def _attempts(
        self, tx: TxRecord, sc: Scenario, bdef: Block, rec: BlockRecord, phase: str
    ) -> tuple[bool, Any, dict[str, Any] | None]:
        """Run a DO or UNDO with its retry policy. Each retry is made durable before it runs."""
        fn = bdef.do if phase == "do" else bdef.undo
        assert fn is not None
        while True:
            attempt = rec.attempts if phase == "do" else rec.undo_attempts
            timeout = bdef.timeout
            # True when the transaction deadline, not the block's own timeout, bounds this try:
            # the limit firing then means the transaction ran out of time. Decided here rather
            # than by re-reading the clock afterwards: the loop's monotonic timer may fire a hair
            # before the wall clock reaches the deadline (a flaky 'failed' instead of 'timeout').
            deadline_bound = False
            if phase == "do" and tx.deadline is not None:
                remaining = tx.deadline - self.clock()
                if remaining <= 0:
                    return (
                        False,
                        None,
                        error_info(TransactionTimeout("transaction timeout reached")),
                    )
                deadline_bound = timeout is None or remaining <= timeout
                timeout = remaining if timeout is None else min(timeout, remaining)
            ctx = BlockContext(
                xid=tx.xid, scenario=sc.name, block=bdef.name, attempt=attempt, request=tx.request,
                outputs={b.name: b.output for b in tx.blocks[: rec.index] if b.status == DONE},
                output=rec.output if phase == "undo" else None,
                error=rec.error if phase == "undo" else None,
                phase=phase,
            )  # fmt: skip
            began = time.perf_counter()
            try:
                result = await self._call(fn, ctx, timeout)
                for o in self.observers:
                    o.block_finished(tx, bdef.name, phase, True, time.perf_counter() - began)
                return True, result, None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = error_info(exc, traceback.format_exc(limit=20))
                timed_out = isinstance(exc, LimitReached)
            for o in self.observers:
                o.block_finished(tx, bdef.name, phase, False, time.perf_counter() - began)
            if timed_out and deadline_bound:
                return (
                    False,
                    None,
                    error_info(
                        TransactionTimeout(f"transaction timeout reached while {bdef.name!r} ran")
                    ),
                )
            if attempt >= bdef.retry.attempts:
                return False, None, err
            await asyncio.sleep(bdef.retry.delay(attempt))
            if phase == "do":
                rec.attempts += 1
                rec.error = err
            else:
                rec.undo_attempts += 1
                rec.undo_error = err
            await self._write(tx, [rec])

    async def _forward_step(self, tx: TxRecord, sc: Scenario) -> None:
        i = tx.cursor
        rec, bdef = tx.blocks[i], sc.blocks[i]
        consume: int | None = None
        if bdef.is_wait:
            signal = await self.store.pending_signal(tx.xid, bdef.wait or "")
            now = self.clock()
            if signal is not None:
                ok, out, err = (
                    True,
                    {"signal": signal.name, "payload": signal.payload, "actor": signal.actor},
                    None,
                )
                consume = signal.id
            elif bdef.timeout is not None and (rec.started_at or now) + bdef.timeout <= now:
                ok, out, err = (
                    False,
                    None,
                    error_info(TimeoutError(f"no signal {bdef.wait!r} within {bdef.timeout:g} s")),
                )
            elif tx.xid in self._pauses or await self._pause_from_elsewhere(tx.xid):
                # Paused before the wait began: park, the wait block not started.
                rec.status, rec.started_at = PENDING, None
                tx.status, tx.reason, tx.error = SUSPENDED, "paused", None
                await self._write(tx, [rec], release=True, consume_signal=self._pauses.pop(tx.xid))
                return
            else:
                tx.status = WAITING
                await self._write(tx, release=True)
                return
        else:
            ok, out, err = await self._attempts(tx, sc, bdef, rec, "do")
        now = self.clock()
        if ok:
            rec.status, rec.output, rec.error, rec.ended_at = DONE, out, None, now
            changed = [rec]
            nxt = i + 1
            if nxt >= len(tx.blocks):
                tx.status = COMPLETED
                name = sc.result_block
                tx.result = next((b.output for b in tx.blocks if b.name == name), None)
                await self._write(
                    tx, changed, release=True, consume_signal=self._spent_pause(tx, consume)
                )
                return
            tx.cursor = nxt
            if tx.deadline is not None and now >= tx.deadline:
                # Out of time between blocks: park before the next DO starts, so nothing is in doubt.
                tx.status, tx.reason = SUSPENDED, "timeout"
                tx.error = error_info(
                    TransactionTimeout(
                        f"transaction timeout reached before block {tx.blocks[nxt].name!r}"
                    )
                )
                if sc.transaction.on_failure == "rollback":
                    tx.status = ROLLING_BACK
                    audit = AuditRecord(
                        tx.xid, now, "policy", "rollback", "on_failure: rollback (timeout)"
                    )
                    await self._write(tx, changed, audit, consume_signal=consume)
                else:
                    await self._write(
                        tx, changed, release=True, consume_signal=self._spent_pause(tx, consume)
                    )
                return
            if consume is None and tx.xid in self._pauses:
                # Paused: the block that ran is done and recorded; the next one does not start.
                tx.status, tx.reason, tx.error = SUSPENDED, "paused", None
                await self._write(
                    tx, changed, release=True, consume_signal=self._pauses.pop(tx.xid)
                )
                return
            nb = tx.blocks[nxt]
            nb.status, nb.started_at, nb.ended_at, nb.error = B_RUNNING, now, None, None
            nb.attempts += 1
            changed.append(nb)
            await self._write(tx, changed, consume_signal=consume)
            return
        rec.status, rec.error, rec.ended_at = FAILED, err, now
        tx.error = err
        tx.reason = "timeout" if err and err["type"] == "TransactionTimeout" else "failed"
        if sc.transaction.on_failure == "rollback":
            tx.status = ROLLING_BACK
            audit = AuditRecord(
                tx.xid, now, "policy", "rollback", f"on_failure: rollback ({rec.name} failed)"
            )
            await self._write(tx, [rec], audit)
        else:
            tx.status = SUSPENDED
            await self._write(tx, [rec], release=True, consume_signal=self._spent_pause(tx, None))

    @staticmethod
    def _undo_order(tx: TxRecord, sc: Scenario) -> list[int]:
        """Indexes of the blocks a rollback still has to undo, newest first."""
        order = []
        for i in range(len(tx.blocks) - 1, -1, -1):
            rec, bdef = tx.blocks[i], sc.blocks[i]
            if rec.status in (DONE, UNDOING, UNDO_FAILED):
                order.append(i)
            elif (
                rec.status == FAILED
                and rec.attempts > 0
                and bdef.partial_effects
                and not bdef.is_wait
            ):
                order.append(i)
        return order

    async def _undo_step(self, tx: TxRecord, sc: Scenario) -> None:
        order = self._undo_order(tx, sc)
        now = self.clock()
        if not order:
            tx.status = ROLLED_BACK
            await self._write(tx, release=True)
            return
        rec, bdef = tx.blocks[order[0]], sc.blocks[order[0]]
        if rec.status != UNDOING:
            if bdef.undo is None:
                rec.status, rec.ended_at = UNDONE, now
                rec.note = "wait block: nothing to undo" if bdef.is_wait else "no undo defined"
                await self._write(tx, [rec])
                return
            rec.status = UNDOING
            rec.undo_attempts += 1
            await self._write(tx, [rec])  # the UNDO's start is durable before it runs
        ok, out, err = await self._attempts(tx, sc, bdef, rec, "undo")
        now = self.clock()
        if ok:
            rec.status, rec.undo_output, rec.undo_error, rec.ended_at = UNDONE, out, None, now
            await self._write(tx, [rec])
            return
        rec.status, rec.undo_error = UNDO_FAILED, err
        tx.status, tx.reason, tx.error = ROLLBACK_FAILED, "undo_failed", err
        await self._write(tx, [rec], release=True)
