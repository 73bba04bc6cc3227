"""API tokens: made here, stored only as hashes, found by their hash.

A token is ``sbt_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 random bits). The
prefix makes a leaked token easy to recognise (secret scanners, logs, a paste into the wrong
field). Only ``sha256:<hex>`` of a token is ever written down.

Why a plain SHA-256 and not a password hash (bcrypt, argon2): those are slow and salted to protect
*guessable* secrets — a person's password — from dictionary and precomputed-table attacks. A
256-bit random token cannot be guessed or tabulated: with its hash in hand an attacker still has
to search 2^256 values, so salt and slowness add nothing but cost on every request. GitHub stores
its tokens as SHA-256 digests for the same reason. It also makes lookup a dict access by digest.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

TOKEN_PREFIX = "sbt_"
HASH_PREFIX = "sha256:"
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def new_token() -> str:
    """A new random token. Shown once to its owner; only its hash is kept."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    # surrogateescape: a header with bytes that are not UTF-8 still hashes (to nothing known).
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def hash_token(token: str) -> str:
    """``sha256:<hex>``: the form a token is stored in."""
    return HASH_PREFIX + token_digest(token).hex()


def hash_problem(text: str) -> str | None:
    """Why ``text`` is not a stored token hash, or None if it is one. Never repeats ``text``:
    it may be a token pasted by mistake."""
    if _HASH.match(text):
        return None
    if text.startswith(TOKEN_PREFIX):
        return (
            "this is a token, not its hash: never store a token; store the line "
            "`switchback users token hash` prints for it (and consider this token leaked)"
        )
    return "not a token hash: expected sha256: and 64 lowercase hex digits"


def digest_of_hash(stored: str) -> bytes:
    """The 32 bytes of a ``sha256:<hex>`` hash (checked with :func:`hash_problem` first)."""
    return bytes.fromhex(stored.removeprefix(HASH_PREFIX))


def matches(token: str, stored: str) -> bool:
    """Whether ``token`` is the one whose hash is ``stored``, compared in constant time."""
    return hash_problem(stored) is None and hmac.compare_digest(
        token_digest(token), digest_of_hash(stored)
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return value


@dataclass(frozen=True)
class Token:
    """One of a user's tokens: a name (to tell them apart when rotating), the hash, an optional
    expiry (seconds since the epoch, UTC)."""

    name: str
    hash: str
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


def parse_expiry(
    value: object, *, now: float | None = None, relative: bool = False
) -> float | None:
    """An expiry as seconds since the epoch, from what a person writes.

    Accepted: a date (``2026-01-31``: the token stops working at 00:00 UTC that day), a date and
    time (``2026-01-31T12:00:00Z``; without a zone, UTC), YAML's own date and timestamp values,
    ``never`` (None), and with ``relative`` (the CLI) a duration from ``now``: ``30m``, ``12h``,
    ``90d``, ``2w``. Raises ValueError with a message naming the accepted forms."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "never":
            return None
        m = _RELATIVE.match(text.lower())
        if relative and m:
            if now is None:
                now = datetime.now(UTC).timestamp()
            return now + int(m.group(1)) * _UNITS[m.group(2)]
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parse_expiry(parsed if "T" in text or " " in text else parsed.date())
    forms = "a date (2026-01-31), a date and time (2026-01-31T12:00:00Z)"
    if relative:
        forms += ", a duration (30m, 12h, 90d, 2w)"
    raise ValueError(f"{value!r} is not an expiry: use {forms} or never")


def expiry_text(expires_at: float | None) -> str:
    if expires_at is None:
        return "never"
    return datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_text(seconds: float) -> str:
    """A short human duration: ``3d 4h``, ``25m``, ``40s``."""
    left = timedelta(seconds=max(0, int(seconds)))
    days, rest = left.days, left.seconds
    hours, minutes = rest // 3600, rest % 3600 // 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{rest}s"
