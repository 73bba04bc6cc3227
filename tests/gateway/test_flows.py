"""Sync, async, idempotency, auth, park → rollforward / rollback, signals, metrics, OpenAPI —
over HTTP against a real uvicorn process."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.conftest import SWITCHBACK, TOKENS, Server, auth, start_server

ORDER = {"item": "widget", "qty": 3}


def poll(server: Server, location: str, until: set[str], timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tx = server.admin("GET", location).json()
        if tx["status"] in until:
            return tx
        time.sleep(0.02)
    raise AssertionError(f"{location} did not reach {until}: {tx['status']}")


def test_sync_call_completes_with_the_last_blocks_output(server: Server) -> None:
    r = server.client.post("/orders", json=ORDER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"xid", "status", "result"}
    assert body["status"] == "completed"
    assert body["result"] == {"charged": 30, "reserved": {"item": "widget", "qty": 3}}


def test_path_parameters_are_merged_into_the_request(server: Server) -> None:
    r = server.client.put("/devices/sw-1", json={"port": 22})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["request"] == {"name": "sw-1", "port": 22}
    # Agreeing with the path is fine; DELETE carries no body at all.
    assert server.client.put("/devices/sw-1", json={"name": "sw-1", "port": 23}).status_code == 200
    r = server.client.delete("/devices/sw-1")
    assert r.status_code == 200, r.text
    assert r.json()["result"]["request"] == {"name": "sw-1"}


def test_prefer_respond_async_answers_202_with_location(server: Server) -> None:
    r = server.client.post("/orders", json=ORDER, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    xid = r.json()["xid"]
    assert r.headers["location"] == f"/transactions/{xid}"
    tx = poll(server, r.headers["location"], {"completed"})
    assert tx["result"]["charged"] == 30


def test_async_scenario_option_answers_202(server: Server) -> None:
    r = server.client.post("/jobs", json={"n": 1})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "running"
    poll(server, r.headers["location"], {"completed"})


def test_idempotency_key_same_body_same_transaction(server: Server) -> None:
    key = {"Idempotency-Key": f"order-{time.time_ns()}"}
    first = server.client.post("/orders", json=ORDER, headers=key)
    assert first.status_code == 200
    before = len(
        server.admin("GET", "/transactions", params={"limit": 1000}).json()["transactions"]
    )
    again = server.client.post("/orders", json=ORDER, headers=key)
    assert again.status_code == 200
    assert again.json() == first.json()
    after = len(server.admin("GET", "/transactions", params={"limit": 1000}).json()["transactions"])
    assert after == before, "a replay started a new transaction"
    other = server.client.post("/orders", json={**ORDER, "qty": 4}, headers=key)
    assert other.status_code == 422, other.text
    assert other.json()["error"] == "idempotency key reused with a different request"
    assert other.json()["detail"]["xid"] == first.json()["xid"]


def test_idempotency_key_names_one_scenario_of_one_caller(server: Server) -> None:
    key = {"Idempotency-Key": f"job-{time.time_ns()}"}
    first = server.client.post("/jobs", json={"n": 7}, headers=key)
    assert first.status_code == 202, first.text
    # The same key and body to another scenario: a 422 that says so, not the job's transaction.
    other = server.client.post("/deadline", json={"n": 7}, headers=key)
    assert other.status_code == 422, other.text
    assert other.json()["error"] == "idempotency key reused with another scenario"
    assert other.json()["detail"]["scenario"] == "job"
    # Another caller's same key is another call.
    mine = server.client.post("/jobs", json={"n": 7}, headers={**key, **auth("bob")})
    assert mine.status_code == 202, mine.text
    assert mine.json()["xid"] != first.json()["xid"]


def test_admin_api_needs_a_token(server: Server) -> None:
    r = server.client.get("/transactions")
    assert r.status_code == 401
    assert r.json()["error"] == "authentication required"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = server.client.get("/transactions", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid token"
    r = server.client.get("/transactions", headers={"Authorization": "Basic YTpi"})
    assert r.status_code == 401
    assert server.client.get("/transactions", headers=auth("bob")).status_code == 200


def test_park_then_rollforward(server: Server, fail_flag: Path) -> None:
    r = server.client.post("/orders", json=ORDER)
    assert r.status_code == 424, r.text
    body = r.json()
    assert body["status"] == "suspended"
    assert body["failed_block"] == "charge"
    assert body["error"] == {
        "type": "RuntimeError",
        "message": "payment service unavailable (flag file present)",
    }
    assert r.headers["location"] == f"/transactions/{body['xid']}"
    tx = server.admin("GET", r.headers["location"]).json()
    assert [(b["name"], b["status"]) for b in tx["blocks"]] == [
        ("reserve", "done"),
        ("charge", "failed"),
    ]
    assert "traceback" not in json.dumps(tx["blocks"][1]["error"])
    with_tb = server.admin("GET", r.headers["location"], params={"traceback": "true"}).json()
    assert "Traceback" in with_tb["blocks"][1]["error"]["traceback"]
    plan = server.admin("GET", f"{r.headers['location']}/plan").json()
    assert [s["block"] for s in plan["rollforward"]] == ["charge"]
    # Still failing: the rollforward is applied, the transaction parks again.
    again = server.admin("POST", f"{r.headers['location']}/rollforward", json={"reason": "retry"})
    assert again.status_code == 200
    assert again.json()["status"] == "suspended"
    fail_flag.unlink()
    done = server.admin(
        "POST",
        f"{r.headers['location']}/rollforward",
        json={"reason": "payment back", "request": {**ORDER, "qty": 5}},
        headers=auth("bob"),
    )
    assert done.status_code == 200, done.text
    tx = done.json()
    assert tx["status"] == "completed"
    assert tx["result"]["charged"] == 50
    decisions = [(a["actor"], a["action"], a["reason"]) for a in tx["audit"]]
    assert ("alice", "rollforward", "retry") in decisions
    assert ("bob", "rollforward", "payment back") in decisions
    # A decision that no longer applies → 409 with the reason.
    late = server.admin("POST", f"{r.headers['location']}/rollback", json={})
    assert late.status_code == 409
    assert late.json()["detail"]["status"] == "completed"
    assert "rollback applies to" in late.json()["error"]


def test_park_then_rollback(server: Server, fail_flag: Path) -> None:
    r = server.client.post("/orders", json=ORDER)
    assert r.status_code == 424
    loc = r.headers["location"]
    done = server.admin("POST", f"{loc}/rollback", json={"reason": "customer cancelled"})
    assert done.status_code == 200, done.text
    tx = done.json()
    assert tx["status"] == "rolled_back"
    assert [b["status"] for b in tx["blocks"]] == ["undone", "undone"]
    assert tx["audit"][-1]["actor"] == "alice"
    assert tx["audit"][-1]["reason"] == "customer cancelled"
    assert server.admin("POST", f"{loc}/rollforward").status_code == 409
    assert server.admin("POST", f"{loc}/compensated", json={"reason": "x"}).status_code == 409


def test_wait_block_resumes_on_signal(server: Server) -> None:
    r = server.client.post("/approvals", json={"change": "CHG-1"})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "waiting"
    loc = r.headers["location"]
    wrong = server.admin("POST", f"{loc}/signals/nope", json={})
    assert wrong.status_code == 409
    ok = server.admin("POST", f"{loc}/signals/approve", json={"payload": {"by": "cab"}})
    assert ok.status_code == 200, ok.text
    tx = ok.json()
    assert tx["status"] == "completed"
    assert tx["blocks"][1]["output"]["payload"] == {"by": "cab"}
    assert tx["blocks"][1]["output"]["actor"] == "alice"


def test_pause_over_http(server: Server) -> None:
    r = server.client.post("/approvals", json={"change": "CHG-2"})
    assert r.status_code == 202 and r.json()["status"] == "waiting", r.text
    loc = r.headers["location"]
    assert server.client.post(f"{loc}/pause", json={}).status_code == 401  # admin API
    bad = server.admin("POST", f"{loc}/pause", json={"reason": 3})
    assert bad.status_code == 422 and bad.json()["detail"]["violations"][0]["path"] == "/reason"
    paused = server.admin("POST", f"{loc}/pause", json={"reason": "freeze window"})
    assert paused.status_code == 200, paused.text
    tx = paused.json()
    assert (tx["status"], tx["reason"]) == ("suspended", "paused")
    assert [b["status"] for b in tx["blocks"]] == ["done", "pending", "pending"]
    assert tx["audit"][-1]["action"] == "pause" and tx["audit"][-1]["actor"] == "alice"
    again = server.admin("POST", f"{loc}/pause", json={})
    assert again.status_code == 409 and "running or waiting" in again.json()["error"]
    assert server.admin("POST", "/transactions/0123abcd/pause", json={}).status_code == 404
    resumed = server.admin("POST", f"{loc}/rollforward", json={})
    assert resumed.status_code in (200, 202) and resumed.json()["status"] == "waiting"


def test_list_filters_and_pages(server: Server) -> None:
    for _ in range(3):
        server.client.post("/jobs", json={"n": 2})
    page = server.admin("GET", "/transactions", params={"scenario": "job", "limit": 2}).json()
    assert len(page["transactions"]) == 2
    assert all(t["scenario"] == "job" for t in page["transactions"])
    assert page["next_cursor"]
    nxt = server.admin(
        "GET",
        "/transactions",
        params={"scenario": "job", "limit": 2, "cursor": page["next_cursor"]},
    ).json()
    seen = {t["xid"] for t in page["transactions"]}
    assert not seen & {t["xid"] for t in nxt["transactions"]}
    completed = server.admin("GET", "/transactions", params={"status": "completed"}).json()
    assert all(t["status"] == "completed" for t in completed["transactions"])


def test_health_metrics_openapi(server: Server) -> None:
    assert server.client.get("/healthz").json()["status"] == "ok"
    assert server.client.get("/readyz").status_code == 200
    server.client.post("/orders", json=ORDER)
    text = server.client.get("/metrics").text
    assert 'switchback_http_requests_total{method="POST",route="/orders",status="200"}' in text
    assert 'switchback_transactions_total{scenario="order",status="completed"}' in text
    assert "switchback_block_duration_seconds_bucket" in text
    spec = server.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {"/orders", "/devices/{name}", "/transactions/{xid}/rollforward"} <= set(spec["paths"])
    assert set(spec["paths"]["/devices/{name}"]) == {"put", "delete"}
    body = spec["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["item", "qty"]
    assert "424" in spec["paths"]["/orders"]["post"]["responses"]


def test_logs_are_json_with_xid_and_never_contain_tokens(server: Server) -> None:
    r = server.client.post("/orders", json=ORDER)
    xid = r.json()["xid"]
    server.admin("GET", f"/transactions/{xid}")
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]
    access = [x for x in lines if x.get("logger") == "switchback.access" and x.get("xid") == xid]
    assert {x["method"] for x in access} == {"POST", "GET"}
    assert any(x.get("actor") == "alice" for x in access)
    text = server.log.read_text()
    for token in TOKENS.values():
        assert token not in text


def test_cli_tx_commands_through_the_server(
    server: Server, fail_flag: Path, tmp_path: Path
) -> None:
    r = server.client.post("/orders", json=ORDER)
    xid = r.json()["xid"]
    env = {"SWITCHBACK_TOKEN": TOKENS["bob"], "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SWITCHBACK), "tx", *args, "--server", server.url],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    listed = cli("list", "--status", "suspended", "--json")
    assert listed.returncode == 0, listed.stderr
    assert xid in {t["xid"] for t in json.loads(listed.stdout)["transactions"]}
    shown = cli("show", xid, "--json")
    assert json.loads(shown.stdout)["failed_block"] == "charge"
    assert "charge" in cli("plan", xid).stdout
    assert cli("rollback", "nope").returncode == 1
    rolled = cli("rollback", xid, "--reason", "from the CLI", "--json")
    assert rolled.returncode == 0, rolled.stderr
    tx = json.loads(rolled.stdout)
    assert tx["status"] == "rolled_back"
    assert tx["audit"][-1]["actor"] == "bob"
    refused = cli("rollforward", xid)
    assert refused.returncode == 1
    assert "rollforward applies to" in refused.stderr.replace("\n", " ")
    waiting = server.client.post("/approvals", json={"change": "CHG-3"}).json()["xid"]
    paused = cli("pause", waiting, "--reason", "freeze", "--json")
    assert paused.returncode == 2, paused.stderr  # parked: exit 2, like any parked transaction
    assert json.loads(paused.stdout)["reason"] == "paused"
    no_token = subprocess.run(
        [str(SWITCHBACK), "tx", "show", xid, "--server", server.url],
        capture_output=True,
        text=True,
        env={**env, "SWITCHBACK_TOKEN": ""},
        timeout=60,
    )
    assert no_token.returncode == 1
    assert "401" in no_token.stderr or "token" in no_token.stderr


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("guarded"), args=["--scenario-auth"], name="guarded")
    yield s
    s.stop()


def test_scenario_auth_when_enabled(guarded: Server) -> None:
    assert guarded.client.post("/orders", json=ORDER).status_code == 401
    bad = guarded.client.post("/orders", json=ORDER, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    ok = guarded.client.post("/orders", json=ORDER, headers=auth("bob"))
    assert ok.status_code == 200
    tx = guarded.admin("GET", f"/transactions/{ok.json()['xid']}").json()
    assert tx["audit"][0]["actor"] == "bob"
    spec = guarded.client.get("/openapi.json").json()
    assert spec["paths"]["/orders"]["post"]["security"] == [{"bearer": []}]


def test_tokens_from_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("tokens:\n  carol: carol-token-3\n")
    s = start_server(tmp_path, args=["--config", str(cfg)], env={"SWITCHBACK_ADMIN_TOKENS": ""})
    try:
        headers = {"Authorization": "Bearer carol-token-3"}
        assert s.client.get("/transactions", headers=headers).status_code == 200
        assert s.client.get("/transactions", headers=auth()).status_code == 401
    finally:
        s.stop()


def test_sync_wait_is_bounded_by_the_transaction_timeout(server: Server) -> None:
    began = time.monotonic()
    r = server.client.post("/deadline", json={})
    assert time.monotonic() - began < 4
    assert r.status_code == 424, r.text
    body = r.json()
    assert body["status"] == "suspended"
    assert body["reason"] == "timeout"
    assert body["failed_block"] == "sleepy"
    assert body["error"]["type"] == "TransactionTimeout"
