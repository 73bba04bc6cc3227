"""The text and numbers the platform accepts, decided once for every entry point and every store.

Refused anywhere in a request, a decision, a signal, a key or an id — a JSON string or key, a
path or query parameter, a reason, an xid:

- NUL (U+0000): PostgreSQL cannot store it in text or jsonb, and C-string tools cut at it;
- a lone surrogate (U+D800–U+DFFF not in a pair): not a character; it cannot be encoded as
  UTF-8, so no store keeps it and no response can carry it;
- a number that is not finite (a literal like ``1e999`` parses as infinity): not JSON.

The HTTP gateway applies these rules at its edge (422 naming each field, with a JSON pointer);
the engine applies them to whatever reaches it another way (the CLI, the Python API), so both
stores always see the same accepted values.
"""

from __future__ import annotations

import math
import re
from typing import Any

from switchback.store.records import to_json

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
# In JSON text as to_json writes it (ASCII, lowercase escapes): where a NUL or a surrogate
# might be. A valid pair (an emoji) or an escaped backslash also matches: the walk decides.
_SUSPECT = re.compile(r"\\u(?:0000|d[89a-f])")


def text_problem(text: str) -> str | None:
    """Why ``text`` is refused, or None."""
    m = _BAD_CHAR.search(text)
    if m is None:
        return None
    ch = m.group()
    if ch == "\x00":
        return "contains a NUL character (U+0000), which is not accepted"
    return f"contains a lone surrogate (U+{ord(ch):04X}), which is not a character"


def shown(text: str) -> str:
    """``text`` fit to be echoed: refused characters replaced by U+FFFD."""
    return _BAD_CHAR.sub("\ufffd", text)


def pointer(parent: str, key: object) -> str:
    """``parent`` + one JSON-pointer step (RFC 6901 escaping; refused characters shown as
    U+FFFD, so that the pointer itself can be echoed)."""
    return f"{parent}/{shown(str(key)).replace('~', '~0').replace('/', '~1')}"


def _walk(value: Any, path: str, out: list[dict[str, str]]) -> None:
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            out.append({"path": path or "/", "message": problem})
    elif isinstance(value, dict):
        for k, v in value.items():
            where = pointer(path, k)
            problem = text_problem(k) if isinstance(k, str) else None
            if problem:
                out.append({"path": where, "message": f"the key {problem}"})
            _walk(v, where, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, pointer(path, i), out)
    elif isinstance(value, float) and not math.isfinite(value):
        out.append({"path": path or "/", "message": "a number too large to represent"})
    elif isinstance(value, Unrepresentable):
        out.append({"path": path or "/", "message": value.message})


def json_problems(value: Any, text: str | None = None, *, at: str = "") -> list[dict[str, str]]:
    """Every place in a JSON value that is refused, as ``{"path": JSON pointer, "message"}``
    (pointers start with ``at``, the value's own place).

    ``text``: the value's JSON as ``to_json`` wrote it, if already made. The common case — no
    suspect escape in it — costs one regex search; only a suspect value is walked.
    """
    if text is None:
        try:
            text = to_json(value)
        except ValueError:  # a non-finite number
            text = None
    if text is not None and _SUSPECT.search(text) is None:
        return []
    out: list[dict[str, str]] = []
    _walk(value, at, out)
    return out


def locate(value: Any, *, at: str = "") -> list[dict[str, str]]:
    """Every refused place in a JSON value, always walking it (``json_problems`` walks only
    a suspect one); also finds the Unrepresentable stand-ins of a lenient parse."""
    out: list[dict[str, str]] = []
    _walk(value, at, out)
    return out


def field_problems(**fields: str | None) -> list[dict[str, str]]:
    """The refused plain-text fields among ``fields`` (None = absent), e.g. a reason or an xid."""
    out = []
    for name, text in fields.items():
        problem = text_problem(text) if text is not None else None
        if problem:
            out.append({"path": f"/{name}", "message": problem})
    return out


class Unrepresentable:
    """Stands in, while locating problems, for a number literal Python cannot hold: an integer
    of more digits than ``int()`` converts, or a float beyond the double range."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


MAX_INT_DIGITS = 4300  # CPython's default limit for int <-> str conversion


def lenient_int(literal: str) -> int | Unrepresentable:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return Unrepresentable(
            f"an integer of {digits} digits: more than the {MAX_INT_DIGITS} accepted"
        )
    return int(literal)


def lenient_float(literal: str) -> float | Unrepresentable:
    value = float(literal)
    if not math.isfinite(value):
        shown = literal if len(literal) <= 24 else literal[:20] + "…"
        return Unrepresentable(f"the number {shown} is too large to represent")
    return value
