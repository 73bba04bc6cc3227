"""Chaos: 3 worker processes on one PostgreSQL, a few hundred transactions with random block
failures and random decisions, and ``kill -9`` of random workers while it runs (each restarted
at once). At the end, from the store and from the external ledger the blocks wrote:

- every transaction is completed, rolled back or parked (nothing running, nothing lost);
- no DO or UNDO ran more often than the in-doubt rules and the recorded decisions allow;
- no two transactions were ever inside the same lock key at once;
- every rollback ran its UNDOs exactly newest first, and covered every DO that ran.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.workers.conftest import AUTH, Worker, query, wait_until

CHAOSAPP = Path(__file__).parent / "apps" / "chaosapp"
N_TX = 300
DEVICES = 120
BLOCKS = ["b0", "b1", "b2", "b3"]
IDEMPOTENT = {"b1"}
PARKED = ("suspended", "rollback_failed")
FINAL = ("completed", "rolled_back")


class Chaos:
    """Kills a random worker with SIGKILL every so often (never the last one alive) and
    restarts it at once, in the background, so that kills overlap restarts."""

    def __init__(self, workers: list[Worker], rng: random.Random) -> None:
        self.workers = workers
        self.rng = rng
        self.kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._restarts: list[threading.Thread] = []
        self._starting: set[str] = set()
        self.errors: list[BaseException] = []

    def _restart(self, w: Worker) -> None:
        try:
            w.start()
        except BaseException as exc:  # reported on exit
            self.errors.append(exc)
        finally:
            self._starting.discard(w.name)

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.2, 0.7)):
            ready = [w for w in self.workers if w.alive() and w.name not in self._starting]
            if len(ready) < 2:
                continue
            w = self.rng.choice(ready)
            self._starting.add(w.name)
            w.kill9()
            self.kills += 1
            t = threading.Thread(target=self._restart, args=(w,), daemon=True)
            t.start()
            self._restarts.append(t)

    def __enter__(self) -> Chaos:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        for t in self._restarts:
            t.join(60)
        if self.errors:
            raise self.errors[0]
        assert all(w.alive() for w in self.workers)


def call(workers: list[Worker], rng: random.Random, method: str, path: str,
         **kw: Any) -> httpx.Response | None:  # fmt: skip
    """One request to a random live worker; on a connection error (killed under us) the same
    request goes to another one. Scenario calls carry an idempotency key, so a retry never
    starts a second transaction."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        w = rng.choice(workers)
        if not w.alive():
            time.sleep(0.01)
            continue
        try:
            return httpx.request(method, w.url + path, timeout=30, **kw)
        except httpx.TransportError:
            time.sleep(0.05)  # back-off before the next worker
    return None


def ledger(tmp: Path) -> list[tuple[int, str, str, str, str, str]]:
    """(t_ns, xid, phase, block, event, device)"""
    out = []
    for line in (tmp / "ledger").read_text().splitlines():
        t, _pid, xid, phase, block, event, device = line.split()
        out.append((int(t), xid, phase, block, event, device))
    return out


def settled(db: str) -> bool:
    rows = query(db, "SELECT count(*) FROM transactions WHERE status IN "
                     "('running', 'rolling_back', 'waiting')")  # fmt: skip
    return rows[0][0] == 0


def test_chaos_three_workers_kill9(
    workers: Callable[..., list[Worker]], pg_db: str, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    env = {
        "CHAOS_DIR": str(tmp_path),
        "CHAOS_DO_FAIL": "0.04",
        "CHAOS_UNDO_FAIL": "0.1",
        "SWITCHBACK_LEASE_SECONDS": "3",
    }
    ws = workers(CHAOSAPP, 3, env)
    op_rng = random.Random(seed + N_TX)
    refused: list[str] = []
    started: dict[str, str] = {}  # idempotency key -> xid

    def submit(i: int) -> None:
        r_local = random.Random(seed + i)
        body = {"device": f"dev{r_local.randrange(DEVICES)}"}
        path = "/chaos" if i % 3 else "/chaos-rb"
        headers = {"Prefer": "respond-async", "Idempotency-Key": f"chaos-{i}"}
        for _ in range(3):
            r = call(ws, r_local, "POST", path, json=body, headers=headers)
            assert r is not None, "no worker answered"
            if r.status_code == 409:  # the device is locked (parked transaction): try later
                assert "lock" in r.text
                continue
            assert r.status_code in (200, 202, 424), r.text
            started[f"chaos-{i}"] = r.json()["xid"]
            return
        refused.append(f"chaos-{i}")

    def decide_parked() -> int:
        """A random decision on every parked transaction (as operators would, while traffic
        flows: parked transactions hold their locks until someone decides)."""
        decisions = 0
        parked = query(pg_db, "SELECT xid, status FROM transactions WHERE status = ANY(%s)",
                           (list(PARKED),))  # fmt: skip
        for xid, status in parked:
            if status == "suspended":
                action = op_rng.choice(["rollforward", "rollback"])
                body: dict[str, str] = {"reason": "chaos"}
            else:
                action = op_rng.choice(["rollback", "compensated"])
                body = {"reason": "chaos: checked by hand"}
            r = call(ws, op_rng, "POST", f"/transactions/{xid}/{action}", json=body,
                     headers={**AUTH, "Prefer": "respond-async"})  # fmt: skip
            assert r is not None
            # 409: it moved on meanwhile (a killed worker's decision may have landed).
            assert r.status_code in (200, 202, 409), r.text
            decisions += r.status_code != 409
        return decisions

    decisions = 0
    submitting = threading.Event()

    def operator() -> None:
        nonlocal decisions
        while not submitting.wait(0.3):
            decisions += decide_parked()

    began = time.monotonic()
    with Chaos(ws, rng) as chaos, ThreadPoolExecutor(13) as pool:
        op = pool.submit(operator)
        list(pool.map(submit, range(N_TX)))
        submitting.set()
        op.result()
    # One last round of decisions once everything has come to rest, all workers up.
    wait_until("no transaction is moving", lambda: settled(pg_db), timeout=60)
    decisions += decide_parked()
    wait_until("every transaction settled", lambda: settled(pg_db), timeout=60)
    elapsed = time.monotonic() - began

    # -- nothing lost, nothing running ------------------------------------------------------------
    rows = query(pg_db, "SELECT xid, status, idempotency_key FROM transactions")
    status = {xid: st for xid, st, _ in rows}
    assert {k: x for x, _, k in rows} == started  # exactly one transaction per accepted call
    assert len(started) + len(refused) == N_TX
    assert len(started) >= N_TX * 0.5, f"too many lock refusals: {len(refused)}"
    assert set(status.values()) <= {*FINAL, *PARKED}, Counter(status.values())
    held = query(pg_db, "SELECT key, xid FROM locks")
    assert all(status[x] in PARKED for _, x in held)  # final transactions hold no lock

    # -- DO/UNDO never re-ran without a rule or a decision allowing it -------------------------
    audit: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for xid, action, inp in query(pg_db, "SELECT xid, action, input FROM audit ORDER BY id"):
        audit[xid].append((action, inp))
    events = ledger(tmp_path)
    starts = Counter((x, p, b) for _, x, p, b, e, _ in events if e == "start")
    for (xid, phase, block), n in starts.items():
        idx = BLOCKS.index(block)
        reruns = sum(1 for a, inp in audit[xid] if a == "rerun_in_doubt" and inp["block"] == block)
        if phase == "do":
            allowed = (
                1
                + reruns
                + sum(
                    1
                    for a, inp in audit[xid]
                    if a == "rollforward" and BLOCKS.index(inp["from"]) <= idx
                )
            )
            assert block in IDEMPOTENT or reruns == 0
        else:
            allowed = 1 + reruns + sum(1 for a, _ in audit[xid] if a == "retry_rollback")
        assert n <= allowed, (xid, phase, block, n, audit[xid])

    # -- never two transactions inside one lock key at once ------------------------------------
    spans: dict[str, list[int]] = {}
    device_of: dict[str, str] = {}
    for t, xid, *_, device in events:
        span = spans.setdefault(xid, [t, t])
        span[0], span[1] = min(span[0], t), max(span[1], t)
        device_of[xid] = device
    by_device: dict[str, list[list[int]]] = defaultdict(list)
    for xid, span in spans.items():
        by_device[device_of[xid]].append(span)
    for device, sp in by_device.items():
        sp.sort()
        for a, b in itertools.pairwise(sp):
            assert a[1] < b[0], f"two transactions inside lock {device} at once"

    # -- rollbacks: newest first, and every DO that ran was undone --------------------------------
    rolled_back = 0
    undone_by_hand = 0  # UNDOs in doubt before they wrote anything, then marked compensated
    for xid, st in status.items():
        undo_order = [BLOCKS.index(b) for _, x, p, b, e, _ in events
                      if x == xid and p == "undo" and e == "start"]  # fmt: skip
        assert undo_order == sorted(undo_order, reverse=True), (xid, undo_order)
        if st == "rolled_back":
            rolled_back += 1
            did = {BLOCKS.index(b) for _, x, p, b, e, _ in events if x == xid and p == "do"}
            # A person may declare an UNDO done by hand (e.g. one in doubt after a kill -9 that
            # came before its first ledger line): that block is accounted for by the decision.
            by_hand = {BLOCKS.index(inp["block"]) for a, inp in audit[xid] if a == "compensated"}
            in_doubt = {BLOCKS.index(inp["block"]) for a, inp in audit[xid] if a == "park_in_doubt"}
            missing = did - set(undo_order)
            assert missing <= by_hand & in_doubt, (xid, did, undo_order, audit[xid])
            if missing:
                undone_by_hand += 1
        if st == "completed":
            assert not undo_order
    in_doubt = sum(a in ("rerun_in_doubt", "park_in_doubt") for v in audit.values() for a, _ in v)
    print(
        f"\nchaos seed={seed}: {len(started)} transactions ({len(refused)} refused on a held "
        f"lock), {chaos.kills} kill -9, {in_doubt} in-doubt blocks resolved, {decisions} "
        f"decisions ({undone_by_hand} in-doubt UNDO compensated by hand), {elapsed:.1f}s; "
        f"{Counter(status.values())}"
    )
    assert chaos.kills >= 3
