"""Small HTTP helpers shared by the handlers: JSON responses, errors, bounded body reading."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

JSON_TYPE = "application/json"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type=JSON_TYPE)


class HTTPError(Exception):
    """Raised by handlers; rendered as ``{"error": ..., "detail": ...}``."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers
        super().__init__(error)

    def response(self) -> Response:
        return error_response(self.status, self.error, self.detail, self.headers)


def error_response(
    status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
) -> Response:
    return json_response(status, {"error": error, "detail": detail}, headers)


_NO_BODY = object()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes: by its
    Content-Length before reading, or while streaming (chunked uploads have no length)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise HTTPError(400, "invalid Content-Length header")
        if int(length) > limit:
            raise HTTPError(413, "request body too large", {"limit_bytes": limit})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "request body too large", {"limit_bytes": limit})
        chunks.append(chunk)
    return b"".join(chunks)


def check_content_type(request: Request) -> None:
    ctype = request.headers.get("content-type")
    if ctype is None:
        return
    media = ctype.split(";", 1)[0].strip().lower()
    if media != JSON_TYPE and not media.endswith("+json"):
        raise HTTPError(
            415, "unsupported media type", {"expected": JSON_TYPE, "got": media or None}
        )


async def read_json(request: Request, limit: int, *, empty: Any = _NO_BODY) -> Any:
    """Parse the JSON body. An empty body gives ``empty`` when one is given, else 400."""
    check_content_type(request)
    raw = await read_body(request, limit)
    if not raw.strip():
        if empty is _NO_BODY:
            raise HTTPError(400, "malformed JSON", {"message": "the request body is empty"})
        return empty
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise HTTPError(400, "malformed JSON", {"message": "the body is not UTF-8"}) from None
    except json.JSONDecodeError as exc:
        raise HTTPError(
            400,
            "malformed JSON",
            {"message": exc.msg, "line": exc.lineno, "column": exc.colno},
        ) from None
    except RecursionError:
        raise HTTPError(400, "malformed JSON", {"message": "nested too deeply"}) from None
    except ValueError as exc:  # NaN / Infinity: not JSON
        raise HTTPError(400, "malformed JSON", {"message": str(exc)}) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def prefers_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == "respond-async" for p in prefer.replace(";", ",").split(","))
