"""examples/quickstart: the blocks people copy must never touch another transaction's data.
Real engine, real SQLite store, the inventory as real files (what the blocks act on)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from switchback.engine import Engine
from switchback.model import load_app
from switchback.store import open_store

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "quickstart"
TOKYO = {"site": "tokyo-1", "prefix": "10.1.0.0/24", "owner": "netops"}


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "inventory"
    monkeypatch.setenv("QUICKSTART_DIR", str(path))
    return path


@pytest.fixture
async def engine(tmp_path: Path, inventory: Path) -> AsyncIterator[Engine]:
    e = Engine(load_app(APP), open_store(tmp_path / "data"))
    await e.open()
    try:
        yield e
    finally:
        await e.close()


def files(inventory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(inventory.iterdir()) if p.name[0] != "."}


def owner_of_address(inventory: Path, site: str) -> str:
    return str(json.loads((inventory / f"{site}.address").read_text())["xid"])


async def test_a_second_run_for_a_reserved_site_parks_and_changes_nothing(
    engine: Engine, inventory: Path
) -> None:
    first = await engine.run("provision", TOKYO, actor="t")
    assert first.status == "completed"
    before = files(inventory)
    second = await engine.run("provision", {**TOKYO, "prefix": "10.9.0.0/24"}, actor="t")
    assert second.status == "suspended"
    assert second.blocks[0].status == "failed"
    assert second.blocks[0].error is not None
    assert second.blocks[0].error["message"] == (f"tokyo-1 is reserved by transaction {first.xid}")
    assert files(inventory) == before
    undone = await engine.rollback(second.xid, actor="t", reason="reserved")
    assert undone.status == "rolled_back"
    assert files(inventory) == before, "the rollback removed another transaction's files"
    assert owner_of_address(inventory, "tokyo-1") == first.xid


async def test_rollback_of_a_parked_run_keeps_the_completed_ones(
    engine: Engine, inventory: Path
) -> None:
    done = await engine.run("provision", TOKYO, actor="t")
    assert done.status == "completed"
    before = files(inventory)
    (inventory / "MAINTENANCE").touch()
    parked = await engine.run("provision", {"site": "osaka-1", "prefix": "10.2.0.0/24"}, actor="t")
    assert (parked.status, parked.blocks[2].name) == ("suspended", "announce")
    assert owner_of_address(inventory, "osaka-1") == parked.xid
    undone = await engine.rollback(parked.xid, actor="t", reason="not needed")
    assert undone.status == "rolled_back"
    (inventory / "MAINTENANCE").unlink()
    assert files(inventory) == before


async def test_concurrent_transactions_keep_each_others_announcements(
    engine: Engine, inventory: Path
) -> None:
    sites = [{"site": f"site-{i}", "prefix": f"10.{i}.0.0/24"} for i in range(8)]
    started = await asyncio.gather(*(engine.run("provision", s, actor="t") for s in sites))
    assert {t.status for t in started} == {"completed"}
    # Roll back half of them at the same time as the other half is re-announced (a re-run).
    (inventory / "MAINTENANCE").touch()
    parked = await asyncio.gather(
        *(engine.run("provision", {"site": f"late-{i}", "prefix": "10.99.0.0/24"}, actor="t")
          for i in range(4))
    )  # fmt: skip
    (inventory / "MAINTENANCE").unlink()
    await asyncio.gather(*(engine.rollback(t.xid, actor="t") for t in parked[:2]))
    await asyncio.gather(*(engine.rollforward(t.xid, actor="t") for t in parked[2:]))
    announced = (inventory / "announced.log").read_text().splitlines()
    expected = {t.xid for t in started} | {t.xid for t in parked[2:]}
    assert {line.split()[0] for line in announced} == expected
    assert len(announced) == len(expected)


def test_blocks_rerun_find_their_own_and_undo_only_their_own(inventory: Path) -> None:
    from quickstart import inventory as blocks  # examples/quickstart is on the path (load_app)

    from switchback.engine import BlockContext

    load_app(APP)

    def ctx(xid: str, **kw: Any) -> BlockContext:
        return BlockContext(
            xid=xid, scenario="provision", block="b", attempt=1, request=TOKYO, **kw
        )

    out = blocks.reserve(ctx("x1"))
    assert blocks.reserve(ctx("x1")) == out  # a re-run in doubt: its own reservation, done
    conf = blocks.write_config(ctx("x1", outputs={"reserve_address": out}))
    assert blocks.write_config(ctx("x1", outputs={"reserve_address": out})) == conf
    blocks.announce(ctx("x1"))
    blocks.announce(ctx("x1"))
    assert (inventory / "announced.log").read_text().count("x1 ") == 1
    # Another transaction's UNDOs (in doubt, without outputs) leave x1's files alone.
    assert blocks.release(ctx("x2"))["released"] is False
    assert blocks.remove_config(ctx("x2"))["removed"] is False
    assert blocks.withdraw(ctx("x2"))["withdrawn"] == 0
    assert set(files(inventory)) == {"tokyo-1.address", "tokyo-1.conf", "announced.log"}
    # Its own UNDOs remove them; run again, "already gone" is done.
    for _ in range(2):
        blocks.withdraw(ctx("x1"))
        blocks.remove_config(ctx("x1"))
        blocks.release(ctx("x1"))
    assert files(inventory) == {"announced.log": ""}
