"""Every bad-input case gets its status code and a JSON body, and creates no transaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.conftest import JSON, Server


def count(server: Server) -> int:
    r = server.admin("GET", "/transactions", params={"limit": 1000})
    assert r.status_code == 200
    return len(r.json()["transactions"])


@pytest.fixture(autouse=True)
def no_new_transaction(server: Server) -> Iterator[None]:
    before = count(server)
    yield
    assert count(server) == before, "a bad input created a transaction"


def error_of(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "detail"}
    assert "Traceback" not in r.text
    return body


@pytest.mark.parametrize(
    "raw",
    [b"{bad", b'{"item": "a",}', b"[1, 2", b"\xff\xfe", b'{"qty": NaN}', b"nul"],
)
def test_malformed_json_is_400(server: Server, raw: bytes) -> None:
    body = error_of(server.client.post("/orders", content=raw, headers=JSON), 400)
    assert body["error"] == "malformed JSON"
    assert body["detail"]["message"]


def test_schema_violations_are_422_with_every_violation(server: Server) -> None:
    r = server.client.post(
        "/orders", json={"item": "Not Valid!", "qty": 0, "colour": "red", "note": 5}
    )
    body = error_of(r, 422)
    assert body["error"] == "request does not match the schema"
    got = {(v["path"], v["message"].split(" ")[0]) for v in body["detail"]["violations"]}
    paths = {p for p, _ in got}
    # Every problem at once, each with the JSON pointer of its field.
    assert {"/item", "/qty", "/note", "/"} <= paths
    assert any("colour" in v["message"] for v in body["detail"]["violations"])


def test_missing_required_field_points_at_root(server: Server) -> None:
    body = error_of(server.client.post("/orders", json={"item": "a"}), 422)
    assert body["detail"]["violations"] == [
        {"path": "/", "message": "'qty' is a required property"}
    ]


def test_body_not_an_object_is_422(server: Server) -> None:
    body = error_of(server.client.post("/orders", json=[1, 2]), 422)
    assert body["detail"]["violations"][0]["path"] == "/"


def test_body_over_limit_is_413(server: Server) -> None:
    # The server runs with --max-body 4096.
    big = b'{"item": "a", "qty": 1, "note": "' + b"x" * 5000 + b'"}'
    body = error_of(server.client.post("/orders", content=big, headers=JSON), 413)
    assert body["detail"] == {"limit_bytes": 4096}


def test_chunked_body_over_limit_is_413_while_reading(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"item": "a", "qty": 1, "note": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    r = server.client.post("/orders", content=chunks(), headers=JSON)
    assert "content-length" not in r.request.headers
    error_of(r, 413)


def test_unknown_path_is_404(server: Server) -> None:
    body = error_of(server.client.post("/nowhere", json={}), 404)
    assert body == {"error": "not found", "detail": {"path": "/nowhere", "method": "POST"}}


def test_wrong_method_is_405_with_allow(server: Server) -> None:
    r = server.client.get("/orders")
    body = error_of(r, 405)
    assert r.headers["allow"] == "POST"
    assert body["detail"]["allow"] == "POST"
    # A path with two scenarios lists both methods.
    r = server.client.post("/devices/sw1", json={})
    error_of(r, 405)
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"PUT", "DELETE"}
    r = server.admin("DELETE", "/transactions")
    error_of(r, 405)
    assert r.headers["allow"] in ("GET, HEAD", "HEAD, GET")


def test_non_json_content_type_is_415(server: Server) -> None:
    r = server.client.post(
        "/orders", content=b"item=a", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    body = error_of(r, 415)
    assert body["detail"]["expected"] == "application/json"


def test_path_parameter_contradicted_by_body_is_422(server: Server) -> None:
    r = server.client.put("/devices/sw1", json={"name": "sw2", "port": 22})
    body = error_of(r, 422)
    assert body["detail"]["violations"][0]["path"] == "/name"


def test_path_parameter_is_validated_by_the_schema(server: Server) -> None:
    body = error_of(server.client.put("/devices/BAD_NAME", json={"port": 22}), 422)
    assert body["detail"]["violations"][0]["path"] == "/name"


def test_bad_idempotency_key_is_400(server: Server) -> None:
    r = server.client.post(
        "/orders", json={"item": "a", "qty": 1}, headers={"Idempotency-Key": "x" * 300}
    )
    error_of(r, 400)


def test_admin_unknown_xid_is_404(server: Server) -> None:
    for method, path in [
        ("GET", "/transactions/nope"),
        ("GET", "/transactions/nope/plan"),
        ("POST", "/transactions/nope/rollforward"),
        ("POST", "/transactions/nope/rollback"),
    ]:
        body = error_of(server.admin(method, path), 404)
        assert body == {"error": "unknown transaction", "detail": {"xid": "nope"}}


def test_admin_bad_query_and_bodies_are_422(server: Server) -> None:
    body = error_of(
        server.admin("GET", "/transactions", params={"status": "nope", "limit": 0}), 422
    )
    assert {v["path"] for v in body["detail"]["violations"]} == {"/status", "/limit"}
    # A cursor past the 64-bit range (found by schemathesis: it was a 500 from the database).
    for cursor in ("9638434546577359100", "-1", "abc"):
        body = error_of(server.admin("GET", "/transactions", params={"cursor": cursor}), 422)
        assert [v["path"] for v in body["detail"]["violations"]] == ["/cursor"]
    error_of(server.admin("POST", "/transactions/x/compensated", json={}), 422)
    error_of(server.admin("POST", "/transactions/x/rollforward", json={"frm": "a"}), 422)
    error_of(
        server.admin(
            "POST",
            "/transactions/x/rollback",
            content=b"{",
            headers={"Content-Type": "application/json"},
        ),
        400,
    )
