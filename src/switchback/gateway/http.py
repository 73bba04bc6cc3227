"""Small HTTP helpers shared by the handlers: JSON responses, errors, bounded body reading."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from switchback.engine import inputs

JSON_TYPE = "application/json"


def dumps(value: Any) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate in stored data (refused at the edge since, but a store may hold one
        # from before): written as its JSON escape, so the answer is still valid JSON.
        return text.encode("utf-8", "backslashreplace")


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


# An error echoes what it is about (a value, a field, a path), but never more than this many
# characters of any one string: a 900 KB value made a 900 KB answer.
MAX_ECHO = 200
MAX_VIOLATIONS = 50


def capped(value: Any) -> Any:
    """``value`` with every string longer than MAX_ECHO cut (saying how long it was)."""
    if isinstance(value, str):
        if len(value) <= MAX_ECHO:
            return value
        return f"{value[:MAX_ECHO]}… ({len(value):,} characters)"
    if isinstance(value, dict):
        return {capped(k): capped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [capped(v) for v in value]
    return value


def error_response(
    status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
) -> Response:
    if isinstance(detail, dict) and isinstance(detail.get("violations"), list):
        found = detail["violations"]
        if len(found) > MAX_VIOLATIONS:
            detail = {
                **detail,
                "violations": found[:MAX_VIOLATIONS],
                "violations_total": len(found),
            }
    return json_response(status, {"error": capped(error), "detail": capped(detail)}, headers)


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
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
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
    except _Constant as exc:  # NaN / Infinity: not JSON
        raise HTTPError(400, "malformed JSON", {"message": str(exc)}) from None
    except ValueError as exc:
        # Valid JSON with a number Python cannot hold (an integer of more digits than int()
        # converts, a float beyond the double range): parse again to say where.
        try:
            lenient = json.loads(
                raw,
                parse_constant=_refuse_constant,
                parse_int=inputs.lenient_int,
                parse_float=inputs.lenient_float,
            )
        except _Constant as constant:
            raise HTTPError(400, "malformed JSON", {"message": str(constant)}) from None
        problems = inputs.locate(lenient)
        if not problems:  # not a number after all
            raise HTTPError(400, "malformed JSON", {"message": str(exc)}) from None
        raise not_accepted(problems) from None
    # NUL and lone surrogates only reach a parsed string through a \u escape.
    if b"\\u" in raw:
        problems = inputs.json_problems(value)
        if problems:
            raise not_accepted(problems)
    return value


def not_accepted(violations: list[dict[str, str]], where: str = "body") -> HTTPError:
    """422 for input the platform does not accept (engine/inputs.py), each place named."""
    return HTTPError(422, NOT_ACCEPTED, {"violations": [{**v, "in": where} for v in violations]})


NOT_ACCEPTED = "input not accepted"


class _Constant(ValueError):
    pass


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (_INF, -_INF):
        raise ValueError("a number too large to represent")  # located by the second parse
    return value


_INF = float("inf")


def _refuse_constant(name: str) -> Any:
    raise _Constant(f"{name} is not a JSON value")


def prefers_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == "respond-async" for p in prefer.replace(";", ",").split(","))
