"""N simultaneous decisions over HTTP at one transaction, for every decision kind, on SQLite and
PostgreSQL, with one worker process and with two (the requests spread over both): exactly one is
accepted, the others get 409 with the reason, nothing answers 5xx, every DO/UNDO runs at most
once per accepted decision (counted in an external ledger the blocks write), and the audit trail
holds exactly one record of the decision. The engine-level form of the same is
tests/engine/test_concurrent_decisions.py.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engine.conftest import PG_URL, drop_pg_schema, pg_schema
from tests.eventually import eventually
from tests.workers.conftest import AUTH, Worker

DECIDEAPP = Path(__file__).parent / "apps" / "decideapp"
N = 8
ACCEPTED = (200, 202)


@dataclass
class Cluster:
    kind: str
    workers: list[Worker]
    dir: Path

    def flag(self, rid: str, name: str) -> Path:
        return self.dir / f"{rid}.{name}"

    def start(self, rid: str, *, asynchronous: bool = False) -> httpx.Response:
        headers = {"Prefer": "respond-async"} if asynchronous else {}
        return httpx.post(
            self.workers[0].url + "/decide", json={"id": rid}, headers=headers, timeout=60
        )

    def tx(self, xid: str) -> dict[str, Any]:
        r = httpx.get(f"{self.workers[0].url}/transactions/{xid}", headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def settled(self, xid: str, status: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            tx = self.tx(xid)
            return tx if tx["status"] == status else None

        return eventually(check, timeout=30, what=f"{xid} {status}")

    def ledger(self, xid: str) -> Counter[str]:
        path = self.dir / "ledger"
        lines = path.read_text().splitlines() if path.exists() else []
        return Counter(
            f"{phase}:{block}"
            for x, phase, block, _ in (line.split() for line in lines)
            if x == xid
        )

    def race(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> list[httpx.Response]:
        """POST the same decision N times at once, spread over the workers: each request on a
        connection of its own, opened before a barrier that releases them all together."""
        barrier = threading.Barrier(N)
        out: list[httpx.Response | BaseException] = [RuntimeError("not sent")] * N

        def send(i: int) -> None:
            w = self.workers[i % len(self.workers)]
            with httpx.Client(base_url=w.url, timeout=60) as client:
                client.get("/healthz")  # connected before the start line
                barrier.wait(30)
                try:
                    out[i] = client.post(path, json=body, headers={**AUTH, **(headers or {})})
                except httpx.HTTPError as exc:
                    out[i] = exc

        threads = [threading.Thread(target=send, args=(i,)) for i in range(N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        errors = [r for r in out if isinstance(r, BaseException)]
        assert not errors, errors
        responses = [r for r in out if isinstance(r, httpx.Response)]
        statuses = sorted(r.status_code for r in responses)
        assert all(s in (*ACCEPTED, 409) for s in statuses), [
            (r.status_code, r.text[:300]) for r in responses
        ]
        assert sum(s in ACCEPTED for s in statuses) == 1, statuses
        for r in responses:
            if r.status_code == 409:
                detail = r.json()["detail"]
                assert detail["reason"], r.text  # says why
        return responses


def audit_count(tx: dict[str, Any], action: str) -> int:
    return sum(1 for a in tx["audit"] if a["action"] == action)


@pytest.fixture(
    scope="module",
    params=[("sqlite", 1), ("sqlite", 2), ("postgres", 1), ("postgres", 2)],
    ids=["sqlite-1worker", "sqlite-2workers", "postgres-1worker", "postgres-2workers"],
)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    kind, n = request.param
    tmp = tmp_path_factory.mktemp(f"decide-{kind}-{n}")
    if kind == "sqlite":
        db = f"sqlite:///{tmp}/data/switchback.db"
    else:
        db = f"{PG_URL}?schema={pg_schema(tmp)}"
    # A short lease: a pause asked of the worker that does not drive the transaction reaches
    # the one that does within a third of it.
    env = {"DECIDE_DIR": str(tmp), "SWITCHBACK_LEASE_SECONDS": "3"}
    workers = [Worker(f"w{i}", DECIDEAPP, db, tmp, env) for i in range(n)]
    try:
        for w in workers:
            w.start()
        yield Cluster(kind, workers, tmp)
    finally:
        for w in workers:
            w.stop()
        if kind == "postgres":
            drop_pg_schema(tmp)
    for w in workers:  # nothing the race did made a worker log an error
        assert '"level":"error"' not in w.log.read_text(), w.tail()


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def parked(c: Cluster) -> tuple[str, str]:
    """A transaction suspended at b1 (whose DO failed once), the flag that failed it removed."""
    rid = new_id()
    c.flag(rid, "fail-do").touch()
    r = c.start(rid)
    assert r.status_code == 424, r.text
    c.flag(rid, "fail-do").unlink()
    return rid, r.json()["xid"]


def test_rollforward(cluster: Cluster) -> None:
    _, xid = parked(cluster)
    cluster.race(f"/transactions/{xid}/rollforward", {"reason": "race"})
    tx = cluster.settled(xid, "waiting")
    assert tx["reason"] is None
    assert cluster.ledger(xid) == Counter({"do:b0": 1, "do:b1": 2})  # failed try + one decision
    assert audit_count(tx, "rollforward") == 1
    assert [b["status"] for b in tx["blocks"]] == ["done", "done", "running", "pending"]


def test_rollback(cluster: Cluster) -> None:
    _, xid = parked(cluster)
    cluster.race(f"/transactions/{xid}/rollback", {"reason": "race"})
    tx = cluster.settled(xid, "rolled_back")
    assert cluster.ledger(xid) == Counter({"do:b0": 1, "do:b1": 1, "undo:b1": 1, "undo:b0": 1})
    assert audit_count(tx, "rollback") == 1


def test_mark_compensated(cluster: Cluster) -> None:
    rid, xid = parked(cluster)
    cluster.flag(rid, "fail-undo").touch()
    r = httpx.post(
        f"{cluster.workers[0].url}/transactions/{xid}/rollback", headers=AUTH, json={}, timeout=60
    )
    assert (r.status_code, r.json()["status"]) == (200, "rollback_failed"), r.text
    cluster.flag(rid, "fail-undo").unlink()
    cluster.race(f"/transactions/{xid}/compensated", {"reason": "deleted by hand"})
    tx = cluster.settled(xid, "rolled_back")
    assert cluster.ledger(xid) == Counter({"do:b0": 1, "do:b1": 1, "undo:b1": 1, "undo:b0": 1})
    assert audit_count(tx, "compensated") == 1


def test_signal(cluster: Cluster) -> None:
    r = cluster.start(new_id())
    assert (r.status_code, r.json()["status"]) == (202, "waiting"), r.text
    xid = r.json()["xid"]
    cluster.race(f"/transactions/{xid}/signals/approve", {"payload": {"ok": True}})
    tx = cluster.settled(xid, "completed")
    assert cluster.ledger(xid) == Counter({"do:b0": 1, "do:b1": 1, "do:b2": 1})
    assert audit_count(tx, "signal") == 1


def test_pause(cluster: Cluster) -> None:
    rid = new_id()
    cluster.flag(rid, "hold").touch()
    r = cluster.start(rid, asynchronous=True)
    assert r.status_code == 202, r.text
    xid = r.json()["xid"]
    eventually(lambda: cluster.ledger(xid)["do:b1"] == 1, timeout=30, what="b1 running")
    cluster.race(f"/transactions/{xid}/pause", {"reason": "race"}, {"Prefer": "respond-async"})
    cluster.flag(rid, "hold").unlink()
    tx = cluster.settled(xid, "suspended")
    assert tx["reason"] == "paused"
    assert cluster.ledger(xid) == Counter({"do:b0": 1, "do:b1": 1})  # b2 never started
    assert audit_count(tx, "pause") == 1
