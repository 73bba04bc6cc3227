"""The HTTP/1.1 connection: uvicorn's httptools protocol with a bounded request head.

uvicorn reads a request's head (request line and headers) without any limit when it parses
with httptools, the fast parser the gateway uses: httptools keeps each header value until it
ends, uvicorn keeps the URL and every header. A 64 MB header was accepted and grew the server by
as much; 200,000 headers were accepted. Only uvicorn's h11 parser has a limit, and it is several
times slower. So this protocol bounds what httptools is fed while a head is incomplete, and counts
headers as they complete; past either limit it answers 431 with switchback's JSON error, and
closes the connection after a short lingering close (the client can read the answer instead of
meeting a reset while it still sends). Hand-written because no library does this for httptools.
Bodies are bounded by the application (``--max-body``), as before.
"""

from __future__ import annotations

import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from switchback.gateway.config import DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_HEADERS

LINGER_SECONDS = 2.0  # how long a refused client may go on sending before the connection closes


class _TooManyHeaders(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = DEFAULT_MAX_HEAD_BYTES
    max_headers = DEFAULT_MAX_HEADERS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # a connection starts with a request head
        self._head_bytes = 0
        self._header_count = 0
        self._completed = 0  # requests fully read on this connection
        self._refused = False
        self._refusal: dict[str, int] | None = None  # a 431 waiting for earlier answers

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and drop what the refused client still sends
        while data:
            if not self._in_head:
                # A body (bounded by the app), and whatever follows it in this read.
                self._feed(data)
                return
            room = self.max_head_bytes - self._head_bytes
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            completed = self._completed
            if not self._feed(piece) or self._refused:
                return
            if self._completed != completed:
                # A request ended inside this piece and the next head began after it: what
                # of the piece is the new head is not known, so its count starts from the next
                # piece (a pipelined head can so reach twice the limit, never more).
                continue
            if self._in_head and data:  # the head goes on past the limit
                self._refuse({"limit_bytes": self.max_head_bytes})
                return

    def _feed(self, data: bytes) -> bool:
        """Feed the parser as uvicorn does; False if the connection is done with."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _TooManyHeaders):
                self._refuse({"limit_count": self.max_headers})
                return False
            return self._bad_request()
        except httptools.HttpParserError:
            return self._bad_request()
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return not self.transport.is_closing()

    def _bad_request(self) -> bool:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)
        return False

    def _refuse(self, detail: dict[str, int]) -> None:
        self._refused = True
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            self._refusal = detail  # after the answers to the requests before it
            return
        self._answer_431(detail)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if any
        if (
            self._refusal is not None
            and not self.pipeline
            and self.cycle.response_complete
            and not self.transport.is_closing()
        ):
            detail, self._refusal = self._refusal, None
            self._answer_431(detail)

    def _answer_431(self, detail: dict[str, int]) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        body = json.dumps(
            {"error": "request header fields too large", "detail": detail},
            separators=(",", ":"),
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            raise _TooManyHeaders  # stops the parser; _feed answers 431
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._completed += 1
        self._in_head, self._head_bytes = True, 0  # the next request's head begins


def bounded_protocol(max_head_bytes: int, max_headers: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` with these limits."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"max_head_bytes": max_head_bytes, "max_headers": max_headers},
    )
