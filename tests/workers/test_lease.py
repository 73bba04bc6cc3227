"""Leases with real processes on PostgreSQL: a worker that is paused (SIGSTOP: alive, so only
its lease can tell) loses its transaction to another worker once the lease expires; when it
wakes up it cannot commit the block result it was computing (fencing token)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.workers.conftest import AUTH, Worker, query, wait_until

CRASHAPP = Path(__file__).parents[1] / "engine" / "apps" / "crashapp"


def ledger(tmp: Path) -> list[tuple[str, str, str, str]]:
    """(xid, phase, block, event) lines the crash app's blocks appended."""
    path = tmp / "ledger"
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


def take_over_while_paused(
    workers: Callable[..., list[Worker]], pg_db: str, tmp: Path, scenario: str
) -> tuple[str, Worker, Worker]:
    """Start a transaction on w0, pause w0 inside block b1, wait until w1 has taken it over,
    then wake w0 up and wait until it has tried (and failed) to commit b1's result."""
    env = {"CRASHTEST_DIR": str(tmp), "SWITCHBACK_LEASE_SECONDS": "1.5"}
    w0, w1 = workers(CRASHAPP, 2, env)
    (tmp / "hang-do-b1").touch()
    r = httpx.post(f"{w0.url}/{scenario.replace('_', '-')}", json={},
                   headers={"Prefer": "respond-async"}, timeout=30)  # fmt: skip
    assert r.status_code == 202, r.text
    xid = r.json()["xid"]
    wait_until("b1 runs on w0", lambda: (tmp / "hanging-do-b1").exists())
    [(owner, fence)] = query(pg_db, "SELECT owner, fence FROM transactions WHERE xid=%s", (xid,))
    assert owner.split(":")[1] == str(w0.proc.pid) and fence == 1  # type: ignore[union-attr]
    w0.pause()
    try:
        (tmp / "hang-do-b1").unlink()  # b1 may finish now, but w0 is frozen in the middle of it
        wait_until(
            "w1 took the transaction over",
            lambda: query(pg_db, "SELECT fence FROM transactions WHERE xid=%s", (xid,))[0][0] > 1,
        )
    finally:
        w0.resume()
    wait_until("w0's write was refused", lambda: "lost ownership" in w0.log.read_text())
    assert (xid, "do", "b1", "end") in ledger(tmp)  # w0 did finish b1's DO ...
    return xid, w0, w1


def test_paused_worker_cannot_commit_after_takeover(
    workers: Callable[..., list[Worker]], pg_db: str, tmp_path: Path
) -> None:
    xid, w0, w1 = take_over_while_paused(workers, pg_db, tmp_path, "crash")
    # ... but its result never landed: w1 had parked the transaction (b1 is not idempotent).
    tx = httpx.get(f"{w1.url}/transactions/{xid}", headers=AUTH, timeout=10).json()
    assert (tx["status"], tx["reason"]) == ("suspended", "interrupted")
    assert [b["status"] for b in tx["blocks"]] == ["done", "failed", "pending"]
    assert tx["blocks"][1]["output"] is None
    assert [a["action"] for a in tx["audit"]] == ["start", "park_in_doubt"]
    assert Counter(ledger(tmp_path))[(xid, "do", "b2", "start")] == 0
    assert w0.alive()  # w0 lives on and keeps serving
    # A person decides; any worker carries it out.
    r = httpx.post(f"{w0.url}/transactions/{xid}/rollforward", json={"reason": "checked"},
                   headers=AUTH, timeout=30)  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    starts = Counter(e[2] for e in ledger(tmp_path) if e[1] == "do" and e[3] == "start")
    assert starts == {"b0": 1, "b1": 2, "b2": 1}  # b1 again only by the person's decision


def test_paused_worker_idempotent_block_rerun_by_new_owner(
    workers: Callable[..., list[Worker]], pg_db: str, tmp_path: Path
) -> None:
    xid, _w0, w1 = take_over_while_paused(workers, pg_db, tmp_path, "crash_idem")
    wait_until(
        "w1 completed it",
        lambda: (
            query(pg_db, "SELECT status FROM transactions WHERE xid=%s", (xid,))[0][0]
            == "completed"
        ),
    )
    tx = httpx.get(f"{w1.url}/transactions/{xid}", headers=AUTH, timeout=10).json()
    assert [a["action"] for a in tx["audit"]] == ["start", "rerun_in_doubt"]
    assert tx["blocks"][1]["attempts"] == 2
    starts = Counter(e[2] for e in ledger(tmp_path) if e[1] == "do" and e[3] == "start")
    assert starts == {"b0": 1, "b1": 2, "b2": 1}  # w0's late b1 result started nothing
