"""The three roles as three processes on loopback sharing one store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchback.store import open_store
from switchback.store.records import TxRecord
from tests.eventually import eventually
from tests.gateway.conftest import Server, auth, start_server

ORDER = {"item": "gear", "qty": 2}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[dict[str, Server]]:
    started: list[Server] = []
    try:
        scenario = start_server(tmp_path, role="scenario")
        started.append(scenario)
        common = {"data": scenario.data, "flags": scenario.flags}
        started.append(start_server(tmp_path, role="transaction", **common))
        started.append(
            start_server(tmp_path, role="apigw", args=["--scenario-url", scenario.url], **common)
        )
        yield {"scenario": started[0], "transaction": started[1], "apigw": started[2]}
    finally:
        for s in reversed(started):
            s.stop()


def test_three_roles_run_a_scenario_and_a_decision_end_to_end(
    cluster: dict[str, Server],
) -> None:
    gw = cluster["apigw"]
    # Validation happens at the apigw: a bad body never reaches the scenario role.
    bad = gw.client.post("/orders", json={"item": 1})
    assert bad.status_code == 422
    assert {v["path"] for v in bad.json()["detail"]["violations"]} == {"/", "/item"}
    assert gw.client.get("/orders").status_code == 405
    assert gw.client.get("/transactions").status_code == 401

    ok = gw.client.post("/orders", json=ORDER)
    assert ok.status_code == 200, ok.text
    assert ok.json()["result"]["charged"] == 20

    (gw.flags / "fail").write_text("1")
    parked = gw.client.post("/orders", json=ORDER, headers={"Idempotency-Key": "roles-1"})
    assert parked.status_code == 424, parked.text
    loc = parked.headers["location"]
    assert gw.admin("GET", loc).json()["status"] == "suspended"
    (gw.flags / "fail").unlink()
    decided = gw.admin(
        "POST", f"{loc}/rollforward", json={"reason": "via apigw"}, headers=auth("bob")
    )
    assert decided.status_code == 200, decided.text
    tx = decided.json()
    assert tx["status"] == "completed"
    assert tx["audit"][-1]["actor"] == "bob"
    assert tx["audit"][-1]["reason"] == "via apigw"
    # Same key, same body through the apigw: the same transaction, now completed.
    replay = gw.client.post("/orders", json=ORDER, headers={"Idempotency-Key": "roles-1"})
    assert replay.status_code == 200
    assert replay.json()["xid"] == tx["xid"]
    # The apigw role has no engine; the transaction role serves only operations endpoints.
    assert "/orders" in gw.client.get("/openapi.json").json()["paths"]
    assert cluster["transaction"].client.post("/orders", json=ORDER).status_code == 404
    assert cluster["transaction"].client.get("/readyz").json()["role"] == "transaction"


def test_the_apigw_relays_paths_queries_and_headers_as_sent(cluster: dict[str, Server]) -> None:
    gw = cluster["apigw"]
    # A path parameter sent percent-encoded arrives decoded once, as sent directly.
    put = gw.client.put("/devices/sw%2D1", json={"port": 22})
    assert put.status_code == 200, put.text
    assert put.json()["result"]["request"] == {"name": "sw-1", "port": 22}
    xid = put.json()["xid"]
    page = gw.admin("GET", "/transactions", params={"limit": 1, "scenario": "device_put"})
    assert [t["xid"] for t in page.json()["transactions"]] == [xid]
    detail = gw.admin("GET", f"/transactions/{xid}", params={"traceback": "true"})
    assert detail.status_code == 200 and detail.json()["xid"] == xid
    asynchronous = gw.client.post("/orders", json=ORDER, headers={"Prefer": "respond-async"})
    assert asynchronous.status_code == 202
    assert asynchronous.headers["location"].startswith("/transactions/")
    denied = gw.client.get("/transactions/x", headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401 and "invalid_token" in denied.headers["www-authenticate"]


def test_an_unreachable_scenario_role_is_a_502_and_not_ready(tmp_path: Path) -> None:
    from tests.gateway.conftest import free_port

    gw = start_server(
        tmp_path,
        role="apigw",
        args=["--scenario-url", f"http://127.0.0.1:{free_port()}"],
        ready_path="/healthz",
    )
    try:
        r = gw.client.post("/orders", json=ORDER)
        assert r.status_code == 502, r.text
        assert r.json()["error"] == "the scenario role is unreachable"
        assert gw.client.get("/readyz").status_code == 503
    finally:
        gw.stop()


def test_transaction_role_takes_over_after_the_scenario_role_dies(
    cluster: dict[str, Server],
) -> None:
    gw, scenario = cluster["apigw"], cluster["scenario"]
    r = gw.client.post("/slow", json={}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    xid = r.json()["xid"]
    started = scenario.flags / "started"
    # The block writes its xid into the file; it can be seen empty before the write lands.
    eventually(
        lambda: started.exists() and started.read_text() == xid,
        timeout=10,
        what="the slow block to start",
    )
    scenario.kill9()  # the non-idempotent block is now in doubt

    # The transaction role notices the dead owner and parks the transaction as interrupted.
    # Nothing else runs an engine now, so read the shared store directly.
    def parked() -> TxRecord | None:
        tx = asyncio.run(load(scenario.data, xid))
        return tx if tx.status == "suspended" else None

    tx = eventually(parked, timeout=15, what="the transaction role parks it")
    assert tx.status == "suspended"
    assert tx.reason == "interrupted"
    assert tx.blocks[0].status == "failed"
    assert any(a.action == "park_in_doubt" for a in tx.audit)


async def load(data: Path, xid: str) -> TxRecord:
    store = open_store(data)
    await store.open()
    try:
        tx = await store.load(xid)
        assert tx is not None
        return tx
    finally:
        await store.close()
