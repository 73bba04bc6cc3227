"""Crash safety with real processes killed by SIGKILL (design.md: in-doubt rules).

A transaction runs in a `switchback` process; the test kills it with -9 at a chosen point, then a
new process recovers. What really ran is read from an external ledger the blocks append to.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.engine.conftest import store_url

APP = Path(__file__).parent / "apps" / "crashapp"
SWITCHBACK = [sys.executable, "-m", "switchback.cli"]


class Harness:
    def __init__(self, tmp: Path, store_kind: str = "sqlite") -> None:
        self.dir = tmp
        self.data = tmp / "data"
        # Where the store lives: --data for SQLite, --db URL (own schema) for PostgreSQL.
        loc = store_url(store_kind, tmp)
        self.where = ["--data", loc] if store_kind == "sqlite" else ["--db", loc]
        self.env = {**os.environ, "CRASHTEST_DIR": str(tmp), "SWITCHBACK_ACTOR": "tester"}

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SWITCHBACK, *args, *self.where], env=self.env, capture_output=True, text=True,
            timeout=60, check=check,
        )  # fmt: skip

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*SWITCHBACK, *args, *self.where], env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def mark(self, kind: str, phase: str, block: str, on: bool = True) -> None:
        path = self.dir / f"{kind}-{phase}-{block}"
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def wait_for(self, name: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not (self.dir / name).exists():
            if proc.poll() is not None:
                raise AssertionError(
                    f"process ended before {name}: {proc.stderr.read() if proc.stderr else ''}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {name}")
            time.sleep(0.02)

    def kill9(self, proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL

    def ledger(self) -> list[tuple[str, str, str]]:
        path = self.dir / "ledger"
        if not path.exists():
            return []
        return [tuple(line.split()[1:]) for line in path.read_text().splitlines()]  # type: ignore[misc]

    def show(self, xid: str) -> dict:
        res = self.cli("tx", "show", xid, "--json", check=True)
        return json.loads(res.stdout)

    def only_xid(self) -> str:
        res = self.cli("tx", "list", "--json", check=True)
        txs = json.loads(res.stdout)["transactions"]
        assert len(txs) == 1
        return txs[0]["xid"]


@pytest.fixture
def h(tmp_path: Path, store_kind: str) -> Harness:
    return Harness(tmp_path, store_kind)


def starts(ledger: list[tuple[str, str, str]], phase: str, block: str) -> int:
    return Counter(ledger)[(phase, block, "start")]


def test_kill_inside_non_idempotent_do_parks_interrupted(h: Harness) -> None:
    h.mark("hang", "do", "b1")
    proc = h.spawn("run", str(APP), "crash")
    h.wait_for("hanging-do-b1", proc)
    h.kill9(proc)
    h.mark("hang", "do", "b1", on=False)
    xid = h.only_xid()
    assert h.show(xid)["status"] == "running"  # as the dead process left it
    rec = h.cli("tx", "recover", "--app", str(APP))
    assert rec.returncode == 0, rec.stderr
    tx = h.show(xid)
    assert (tx["status"], tx["reason"]) == ("suspended", "interrupted")
    assert tx["blocks"][1]["status"] == "failed"
    assert tx["blocks"][1]["error"]["type"] == "Interrupted"
    ledger = h.ledger()
    assert starts(ledger, "do", "b1") == 1  # not re-run: the block is not idempotent
    assert ("do", "b2", "start") not in ledger
    assert [a["action"] for a in tx["audit"]] == ["start", "park_in_doubt"]
    # A person decides: rollforward runs b1 again (now allowed, and audited) and completes.
    res = h.cli("tx", "rollforward", xid, "--reason", "checked the peer", "--app", str(APP))
    assert res.returncode == 0, res.stderr
    assert h.show(xid)["status"] == "completed"
    assert starts(h.ledger(), "do", "b1") == 2


def test_kill_inside_idempotent_do_reruns_it(h: Harness) -> None:
    h.mark("hang", "do", "b1")
    proc = h.spawn("run", str(APP), "crash_idem")
    h.wait_for("hanging-do-b1", proc)
    h.kill9(proc)
    h.mark("hang", "do", "b1", on=False)
    xid = h.only_xid()
    assert h.cli("tx", "recover", "--app", str(APP)).returncode == 0
    tx = h.show(xid)
    assert tx["status"] == "completed"
    ledger = h.ledger()
    assert starts(ledger, "do", "b0") == 1
    assert starts(ledger, "do", "b1") == 2  # re-run, as idempotent allows
    assert starts(ledger, "do", "b2") == 1
    assert tx["blocks"][1]["attempts"] == 2


def test_kill_between_blocks(h: Harness) -> None:
    # Kill as soon as b0's DO has returned: the commit "b0 done + b1 started" may or may not have
    # happened. Either way the rules must hold: b0 never runs twice (it is not idempotent).
    h.mark("hang", "do", "b1")
    proc = h.spawn("run", str(APP), "crash")
    deadline = time.monotonic() + 30
    while ("do", "b0", "end") not in h.ledger():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.001)
    h.kill9(proc)
    h.mark("hang", "do", "b1", on=False)
    xid = h.only_xid()
    assert h.cli("tx", "recover", "--app", str(APP)).returncode == 0
    tx = h.show(xid)
    ledger = h.ledger()
    assert starts(ledger, "do", "b0") == 1
    assert tx["status"] == "suspended" and tx["reason"] == "interrupted"
    interrupted = [b["name"] for b in tx["blocks"] if b["status"] == "failed"]
    assert interrupted in (["b0"], ["b1"])
    if interrupted == ["b1"]:
        assert tx["blocks"][0]["status"] == "done"
    # Rolling back undoes exactly what may have had effects, newest first.
    assert h.cli("tx", "rollback", xid, "--app", str(APP)).returncode == 0
    tx = h.show(xid)
    assert tx["status"] == "rolled_back"
    undos = [b for p, b, e in h.ledger() if p == "undo" and e == "end"]
    assert undos == (["b1", "b0"] if interrupted == ["b1"] else ["b0"])


def test_kill_inside_undo(h: Harness) -> None:
    h.mark("fail", "do", "b2")
    res = h.cli("run", str(APP), "crash")
    assert res.returncode == 2, res.stderr  # parked
    xid = h.only_xid()
    h.mark("hang", "undo", "b1")
    proc = h.spawn("tx", "rollback", xid, "--app", str(APP))
    h.wait_for("hanging-undo-b1", proc)
    h.kill9(proc)
    h.mark("hang", "undo", "b1", on=False)
    assert h.show(xid)["status"] == "rolling_back"
    assert h.cli("tx", "recover", "--app", str(APP)).returncode == 0
    tx = h.show(xid)
    # The UNDO of b1 is in doubt and not idempotent: parked for a person, b0 not touched yet.
    assert (tx["status"], tx["reason"]) == ("rollback_failed", "interrupted")
    assert [b["status"] for b in tx["blocks"]] == ["done", "undo_failed", "undone"]
    assert starts(h.ledger(), "undo", "b1") == 1
    assert starts(h.ledger(), "undo", "b0") == 0
    res = h.cli("tx", "compensated", xid, "--reason", "verified b1 is gone", "--app", str(APP))
    assert res.returncode == 0, res.stderr
    tx = h.show(xid)
    assert tx["status"] == "rolled_back"
    undo_order = [b for p, b, e in h.ledger() if p == "undo" and e == "start"]
    assert undo_order == ["b2", "b1", "b0"]


def test_kill_inside_idempotent_undo_reruns_it(h: Harness) -> None:
    h.mark("fail", "do", "b2")
    assert h.cli("run", str(APP), "crash_idem").returncode == 2
    h.mark("fail", "do", "b2", on=False)
    xid = h.only_xid()
    h.mark("hang", "undo", "b1")
    proc = h.spawn("tx", "rollback", xid, "--app", str(APP))
    h.wait_for("hanging-undo-b1", proc)
    h.kill9(proc)
    h.mark("hang", "undo", "b1", on=False)
    assert h.cli("tx", "recover", "--app", str(APP)).returncode == 0
    tx = h.show(xid)
    assert tx["status"] == "rolled_back"
    undo_starts = [b for p, b, e in h.ledger() if p == "undo" and e == "start"]
    assert undo_starts == ["b2", "b1", "b1", "b0"]


def test_recover_leaves_a_live_owner_alone(h: Harness) -> None:
    h.mark("hang", "do", "b1")
    proc = h.spawn("run", str(APP), "crash")
    try:
        h.wait_for("hanging-do-b1", proc)
        res = h.cli("tx", "recover", "--app", str(APP))
        assert "recovered 0" in res.stdout
        xid = h.only_xid()
        refused = h.cli("tx", "rollback", xid, "--app", str(APP))
        assert refused.returncode == 1 and "owned by" in refused.stderr
    finally:
        h.mark("hang", "do", "b1", on=False)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert starts(h.ledger(), "do", "b1") == 1
