"""Bearer tokens, compared in constant time. The token's name is the actor of the audit trail."""

from __future__ import annotations

import hashlib
import hmac


class TokenSet:
    def __init__(self, tokens: dict[str, str]) -> None:
        # Hash first so that every comparison is over equal-length values: compare_digest then
        # leaks neither the position of a mismatch nor the length of the stored token.
        self._digests = [(name, hashlib.sha256(t.encode()).digest()) for name, t in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def actor(self, authorization: str | None) -> str | None:
        """The name of the token in an ``Authorization: Bearer ...`` header, or None."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        given = hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        # No early exit: every stored token is compared, whatever matches.
        for name, digest in self._digests:
            if hmac.compare_digest(given, digest):
                found = name
        return found
