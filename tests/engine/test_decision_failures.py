"""A decision that fails after it claimed the transaction — here a real database error, raised
by a trigger on the audit table — gives the claim back at once: another worker can decide right
away instead of waiting for the lease to run out, and nothing of the failed decision is stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.engine.conftest import PG_URL, pg_schema
from tests.engine.test_concurrent_decisions import parked_at_b1, three
from tests.engine.test_engine import Ledger


def refuse_audit(kind: str, tmp_path: Path, action: str) -> Any:
    """Make every audit insert of ``action`` fail inside the database; returns an undo."""
    if kind == "sqlite":
        db = sqlite3.connect(tmp_path / "data" / "switchback.db", isolation_level=None)
        db.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON audit WHEN NEW.action = '{action}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
        )

        def undo() -> None:
            db.execute("DROP TRIGGER refuse")
            db.close()

        return undo
    conn = psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={pg_schema(tmp_path)}")
    conn.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$"
    )
    conn.execute(
        f"CREATE TRIGGER refuse BEFORE INSERT ON audit FOR EACH ROW "
        f"WHEN (NEW.action = '{action}') EXECUTE FUNCTION refuse()"
    )

    def undo_pg() -> None:
        conn.execute("DROP TRIGGER refuse ON audit")
        conn.close()

    return undo_pg


@pytest.mark.parametrize("decision", ["rollforward", "rollback"])
async def test_a_store_error_after_the_claim_releases_it(
    engine_factory: Any, store_kind: str, tmp_path: Path, decision: str
) -> None:
    ledger = Ledger()
    a = await engine_factory(three(ledger))  # the default lease: 15 s
    b = await engine_factory(three(ledger))
    xid = await parked_at_b1(a, ledger)
    undo = refuse_audit(store_kind, tmp_path, decision)
    try:
        with pytest.raises(Exception, match="refused by a test trigger"):
            await getattr(a, decision)(xid, actor="alice", wait=False)
    finally:
        undo()
    stored = await a.get(xid)
    assert (stored.status, stored.owner) == ("suspended", None)  # handed back, as it was
    assert [x.action for x in stored.audit] == ["start"]
    # Another worker decides at once (before, it got Busy until a's lease ran out).
    tx = await b.rollback(xid, actor="bob")
    assert tx.status == "rolled_back"
    assert ledger.phases(xid) == ["do:b0", "do:b1", "undo:b1", "undo:b0"]
