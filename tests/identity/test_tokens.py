"""Tokens: random with a prefix, stored as sha256 hashes, compared in constant time; expiry from
what people write."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchback.identity import (
    TOKEN_PREFIX,
    bearer_token,
    hash_token,
    matches,
    new_token,
    parse_expiry,
)
from switchback.identity.tokens import hash_problem


def test_new_tokens_are_prefixed_random_and_long() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for t in tokens:
        assert re.fullmatch(r"sbt_[A-Za-z0-9_-]{43}", t), t  # 32 random bytes, base64url
    assert TOKEN_PREFIX == "sbt_"


def test_a_token_is_stored_as_its_sha256() -> None:
    # sha256("abc") is the FIPS 180-2 test vector.
    assert hash_token("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert hash_problem(hash_token(new_token())) is None


@given(st.text(min_size=1))
def test_matches_only_its_own_hash(token: str) -> None:
    stored = hash_token(token)
    assert matches(token, stored)
    assert not matches(token + "x", stored)
    assert not matches(token, "sha256:" + "0" * 64)


def test_hash_problems_never_repeat_the_text() -> None:
    secret = new_token()
    for text in (secret, "sha256:ABC", "md5:" + "0" * 32, "sha256:" + "0" * 63):
        problem = hash_problem(text)
        assert problem is not None and text not in problem
    assert "this is a token, not its hash" in (hash_problem(secret) or "")
    assert not matches(secret, secret), "a token in the hash field matches nothing"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer ", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        (date(2026, 1, 31), datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T12:30:00Z", datetime(2026, 1, 31, 12, 30, tzinfo=UTC)),
        ("2026-01-31T12:30:00+02:00", datetime(2026, 1, 31, 10, 30, tzinfo=UTC)),
        (datetime(2026, 1, 31, 12, 30), datetime(2026, 1, 31, 12, 30, tzinfo=UTC)),
        ("never", None),
        (None, None),
    ],
)
def test_absolute_expiries(value: object, expected: datetime | None) -> None:
    got = parse_expiry(value)
    assert got == (expected.timestamp() if expected else None)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("12h", 43200), ("90d", 90 * 86400), ("2w", 14 * 86400)]
)
def test_durations_only_where_relative_is_allowed(text: str, seconds: int) -> None:
    assert parse_expiry(text, now=NOW, relative=True) == NOW + seconds
    with pytest.raises(ValueError, match="is not an expiry"):
        parse_expiry(text)  # in a file, "90d" would mean a different day on every read


@pytest.mark.parametrize("value", ["soon", "2026-13-01", "", 42, ["2026-01-01"]])
def test_bad_expiries_name_the_accepted_forms(value: object) -> None:
    with pytest.raises(ValueError, match=r"use a date \(2026-01-31\)"):
        parse_expiry(value, relative=True)
