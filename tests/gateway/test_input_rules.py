"""What text and numbers the platform accepts, at every entry point, on both stores: a NUL or a
lone surrogate anywhere — a JSON string or key, a path or query parameter, an xid, a decision's
reason, a signal's name or payload, a corrected request — is a 422 naming the place, never a
500, never a transaction left unreadable or held; numbers beyond what JSON/Python can hold are a
422 that says where; an error never echoes more than a short piece of what it is about.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine.conftest import PG_URL, drop_pg_schema, pg_schema
from tests.gateway.conftest import JSON, Server, auth, start_server

ORDER = {"item": "widget", "qty": 2}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"rules-{request.param}")
    args = ["--max-body", str(2 * 1024 * 1024), "--no-access-log"]
    if request.param == "postgres":
        args += ["--db", f"{PG_URL}?schema={pg_schema(tmp)}"]
    s = start_server(tmp, args=args)
    try:
        yield s
    finally:
        s.stop()
        if request.param == "postgres":
            drop_pg_schema(tmp)
    # Nothing sent here made the server log an error (a 500 would have).
    assert '"level":"error"' not in s.log.read_text()


def count(server: Server) -> int:
    r = server.admin("GET", "/transactions", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return len(r.json()["transactions"])


def refused(r: httpx.Response, where: str, path: str) -> dict[str, Any]:
    """A 422 `input not accepted` that names ``path`` (a JSON pointer) ``in`` ``where``."""
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "input not accepted", body
    assert {"path": path, "in": where} in [
        {"path": v["path"], "in": v["in"]} for v in body["detail"]["violations"]
    ], body
    return body


def raw_post(server: Server, path: str, body: str, **kw: Any) -> httpx.Response:
    """POST a JSON text as written (``\\u0000`` escapes stay escapes on the wire)."""
    return server.client.post(
        path, content=body.encode(), headers={**JSON, **kw.pop("headers", {})}, **kw
    )


def parked(server: Server) -> str:
    flag = server.flags / "fail"
    flag.write_text("1")
    try:
        r = server.client.post("/orders", json=ORDER)
    finally:
        flag.unlink()
    assert r.status_code == 424, r.text
    return r.json()["xid"]  # type: ignore[no-any-return]


# -- scenario calls ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"item": "widget", "qty": 2, "note": "a\\u0000b"}', "/note"),
        ('{"item": "widget", "qty": 2, "note": "\\udfff"}', "/note"),
        ('{"item": "widget", "qty": 2, "note": "\\ud800x"}', "/note"),
        ('{"item": "widget", "qty": 2, "\\u0000": 1}', "/\x00"),
        ('{"item": "widget", "qty": 2, "note": ["ok", {"deep": "\\udc00"}]}', "/note/1/deep"),
    ],
)
def test_bad_text_in_a_body_is_422_naming_the_field(server: Server, text: str, path: str) -> None:
    before = count(server)
    body = refused(raw_post(server, "/orders", text), "body", path.replace("\x00", "\ufffd"))
    assert "Traceback" not in json.dumps(body)
    assert count(server) == before  # nothing started


@given(
    st.text(min_size=0, max_size=10),
    st.sampled_from(["\\u0000", "\\ud800", "\\udbff", "\\udc00", "\\udfff"]),
    st.text(min_size=0, max_size=10),
    st.sampled_from(["note", "key"]),
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_nul_or_lone_surrogate_is_refused(
    server: Server, before: str, bad: str, after: str, where: str
) -> None:
    """Property: wherever a NUL or a lone surrogate sits in a string (or a key), the call is a
    422 naming that place — never a 500, never a transaction."""
    inner = json.dumps(before)[1:-1] + bad + json.dumps(after)[1:-1]
    if bad.startswith("\\ud8") or bad.startswith("\\udb"):
        inner += "x"  # a high surrogate not followed by a low one
    text = (
        f'{{"item": "widget", "qty": 2, "note": "{inner}"}}'
        if where == "note"
        else f'{{"item": "widget", "qty": 2, "{inner}": 1}}'
    )
    r = raw_post(server, "/orders", text)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "input not accepted"


def test_a_valid_pair_and_other_text_are_kept_whole(server: Server) -> None:
    note = "smile \U0001f600, café, tab\there, \\u0000 as text"
    r = server.client.post("/orders", json={**ORDER, "note": note})  # ensure_ascii escapes
    assert r.status_code == 200, r.text
    tx = server.admin("GET", f"/transactions/{r.json()['xid']}").json()
    assert tx["request"]["note"] == note


def test_bad_text_in_a_path_parameter_is_422(server: Server) -> None:
    r = server.client.put("/devices/a%00b", json={"port": 22})
    refused(r, "path", "/name")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"item": "widget", "qty": 1' + "0" * 5000 + "}", "5001 digits"),
        ('{"item": "widget", "qty": 2, "note": [1e999]}', "too large"),
        ('{"item": "widget", "qty": -1e400}', "too large"),
    ],
)
def test_numbers_beyond_what_is_held_are_422_saying_where(
    server: Server, text: str, message: str
) -> None:
    r = raw_post(server, "/orders", text)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "input not accepted"
    (v,) = body["detail"]["violations"]
    assert v["path"] in ("/qty", "/note/0") and message in v["message"]
    assert "set_int_max_str_digits" not in r.text


def test_an_error_echoes_a_short_piece_only(server: Server) -> None:
    """#16: a 900 KB value in a field with maxLength gave a 921,746-byte 422."""
    r = server.client.post("/orders", json={**ORDER, "note": "x" * 900_000})
    assert r.status_code == 422, r.text[:500]
    assert len(r.content) < 2_000
    (v,) = r.json()["detail"]["violations"]
    assert v["path"] == "/note" and "characters)" in v["message"]
    many = server.client.post("/orders", json=[{"x": i} for i in range(5000)])
    assert many.status_code == 422 and len(many.content) < 2_000


# -- the admin API -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["status=%00", "scenario=%00", "scenario=a%00", "cursor=%00", "limit=1%00"]
)
def test_bad_text_in_a_query_parameter_is_422(server: Server, query: str) -> None:
    r = server.admin("GET", f"/transactions?{query}")
    refused(r, "query", "/" + query.split("=")[0])


@pytest.mark.parametrize("query", ["status=", "scenario="])
def test_an_empty_filter_is_422_not_everything(server: Server, query: str) -> None:
    r = server.admin("GET", f"/transactions?{query}")
    assert r.status_code == 422, r.text
    assert [v["path"] for v in r.json()["detail"]["violations"]] == ["/" + query[:-1]]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/transactions/%00"),
        ("GET", "/transactions/ab%00cd/plan"),
        ("POST", "/transactions/%00/rollback"),
        ("POST", "/transactions/%00/signals/go"),
    ],
)
def test_bad_text_in_an_xid_is_422(server: Server, method: str, path: str) -> None:
    r = server.admin(method, path, **({"json": {}} if method == "POST" else {}))
    refused(r, "path", "/xid")


def test_bad_text_in_a_decision_leaves_the_transaction_as_it_was(server: Server) -> None:
    """The PostgreSQL probe: a reason with \\u0000 was a 500 that left the transaction owned by
    that worker until its lease ran out (every other decision 409 meanwhile)."""
    xid = parked(server)
    for path, text, field in [
        ("rollback", '{"reason": "a\\u0000"}', "/reason"),
        ("rollforward", '{"reason": "\\udfff"}', "/reason"),
        ("rollforward", '{"request": {"item": "w\\u0000", "qty": 1}}', "/request/item"),
        ("rollforward", '{"from": "\\u0000"}', "/from"),
        ("compensated", '{"reason": "by hand \\u0000"}', "/reason"),
        ("pause", '{"reason": "\\u0000"}', "/reason"),
        ("signals/go", '{"payload": {"k": "\\ud800"}}', "/payload/k"),
    ]:
        r = raw_post(server, f"/transactions/{xid}/{path}", text, headers=auth())
        refused(r, "body", field)
    r = server.admin("POST", f"/transactions/{xid}/signals/a%00b", json={})
    refused(r, "path", "/name")
    tx = server.admin("GET", f"/transactions/{xid}").json()
    assert (tx["status"], [a["action"] for a in tx["audit"]]) == ("suspended", ["start"])
    r = server.admin("POST", f"/transactions/{xid}/rollback", json={"reason": "fine"})
    assert (r.status_code, r.json()["status"]) == (200, "rolled_back"), r.text


def test_rollforward_request_null_and_unknown_from_are_422(server: Server) -> None:
    xid = parked(server)
    r = server.admin("POST", f"/transactions/{xid}/rollforward", json={"request": None})
    assert r.status_code == 422, r.text
    (v,) = r.json()["detail"]["violations"]
    assert v["path"] == "/request" and "leave the field out" in v["message"]
    r = server.admin("POST", f"/transactions/{xid}/rollforward", json={"from": "nope"})
    assert r.status_code == 422, r.text
    (v,) = r.json()["detail"]["violations"]
    assert v["path"] == "/from" and "unknown block 'nope'" in v["message"]
    tx = server.admin("GET", f"/transactions/{xid}").json()
    assert tx["status"] == "suspended" and [a["action"] for a in tx["audit"]] == ["start"]
    r = server.admin("POST", f"/transactions/{xid}/rollforward", json={"reason": "ok"})
    assert (r.status_code, r.json()["status"]) == (200, "completed"), r.text


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_text_stored_before_these_rules_stays_readable(server: Server) -> None:
    """SQLite kept a lone surrogate (as a JSON escape) before the edge refused it; such a
    transaction must still read as JSON, not answer 500 forever. (PostgreSQL never stored
    one: it refused them.)"""
    r = server.client.post("/orders", json=ORDER)
    xid = r.json()["xid"]
    db = sqlite3.connect(server.data / "switchback.db", isolation_level=None, timeout=30)
    try:
        db.execute(
            "UPDATE transactions SET request=? WHERE xid=?",
            ('{"item":"widget","qty":2,"note":"\\udfff"}', xid),
        )
    finally:
        db.close()
    got = server.admin("GET", f"/transactions/{xid}")
    assert got.status_code == 200, got.text
    assert got.json()["request"]["note"] == "\udfff"  # valid JSON, the escape as stored
