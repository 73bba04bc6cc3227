"""Request heads are bounded (--max-header-bytes, --max-headers): a larger head or more headers
get 431 with switchback's JSON error, a client still sending can read it, and the server never
holds more of a head than the limit — a 64 MB header does not grow it by 64 MB. Bodies are
bounded separately, as before."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.conftest import Server, start_server

MAX_HEAD = 16 * 1024
MAX_HEADERS = 50


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(
        tmp_path_factory.mktemp("heads"),
        args=["--max-header-bytes", str(MAX_HEAD), "--max-headers", str(MAX_HEADERS),
              "--no-access-log"],
    )  # fmt: skip
    try:
        yield s
    finally:
        s.stop()


def rss(server: Server) -> int:
    """The server process's resident memory, in bytes."""
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def exchange(
    server: Server, chunks: Iterator[bytes] | list[bytes], expect: int = 1
) -> bytes | None:
    """Send ``chunks`` on one connection, then read until ``expect`` answers are in or the
    server closes. None if it reset the connection before an answer could be read. (No
    half-close: uvicorn closes a connection at the client's EOF, answers still due or not.)"""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while we were still sending: read what it said
        out = b""
        try:
            while len(responses(out)) < expect and (data := sock.recv(65536)):
                out += data
        except ConnectionResetError:
            return out or None
        return out


def responses(raw: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each complete HTTP/1.1 response in ``raw`` (Content-Length framed)."""
    out = []
    while b"\r\n\r\n" in raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines
            if line.lower().startswith(b"content-length:")
        )
        if len(rest) < length:
            break
        out.append((status, rest[:length]))
        raw = rest[length:]
    return out


def request(headers: list[bytes], path: bytes = b"/healthz") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + b"".join(headers) + b"\r\n"


def refused_431(raw: bytes | None, limit: str) -> None:
    assert raw is not None, "reset before the 431 could be read"
    [(status, body)] = responses(raw)
    assert status == 431
    data = json.loads(body)
    assert data["error"] == "request header fields too large"
    assert limit in data["detail"]


def test_heads_within_the_limits_are_served(server: Server) -> None:
    big = b"X-Big: " + b"a" * (MAX_HEAD - 200) + b"\r\n"
    many = [b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS - 2)]  # Host + these + 1 spare
    raw = exchange(server, [request([big]), request(many)], expect=2)  # one connection
    assert raw is not None
    assert [s for s, _ in responses(raw)] == [200, 200]


def test_a_head_over_the_byte_limit_is_431(server: Server) -> None:
    raw = exchange(server, [request([b"X-Big: " + b"a" * (MAX_HEAD + 1) + b"\r\n"])])
    refused_431(raw, "limit_bytes")
    # A long URL counts too.
    raw = exchange(server, [request([], path=b"/healthz?" + b"q" * (MAX_HEAD + 1))])
    refused_431(raw, "limit_bytes")


def test_more_headers_than_the_limit_is_431(server: Server) -> None:
    raw = exchange(server, [request([b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS)])])
    refused_431(raw, "limit_count")


def test_the_limit_holds_for_every_request_of_a_connection(server: Server) -> None:
    """Pipelined: the requests before the refused one are answered first. (A pipelined head
    that begins inside the same read as the end of the request before it is counted from the
    next read: up to twice the limit.)"""
    fine = request([b"X-H%d: v\r\n" % i for i in range(10)])
    big = request([b"X-Big: " + b"a" * (2 * MAX_HEAD) + b"\r\n"])
    raw = exchange(server, [fine + fine + big], expect=3)
    assert raw is not None
    assert [s for s, _ in responses(raw)] == [200, 200, 431]


def test_a_body_is_not_a_head(server: Server) -> None:
    body = json.dumps({"item": "widget", "qty": 1, "note": "n" * (4 * MAX_HEAD)}).encode()
    raw = exchange(
        server,
        [
            b"POST /orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        ],
    )
    assert raw is not None
    [(status, answer)] = responses(raw)
    assert status == 422, answer  # the schema's maxLength, not the head limit


def test_a_64_mb_header_and_200000_headers(server: Server) -> None:
    """The outside probe's two requests: both refused, and the server did not take in the
    64 MB (the probe saw it grow by ~66 MB)."""
    before = rss(server)

    def huge() -> Iterator[bytes]:
        yield b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: "
        for _ in range(64):
            yield b"a" * (1024 * 1024)
        yield b"\r\n\r\n"

    raw = exchange(server, huge())
    if raw is not None:  # else: reset while sending, after the limit — refused cleanly too
        refused_431(raw, "limit_bytes")
    raw = exchange(server, [request([b"a: b\r\n"] * 200_000)])
    if raw is not None:
        refused_431(raw, "limit_count")
    assert rss(server) - before < 16 * 1024 * 1024
    assert server.client.get("/healthz").status_code == 200  # still serving
