"""The identity package's errors. Every message is meant to be shown to a person as it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from switchback.yamlfile import path_text


@dataclass(frozen=True)
class Issue:
    """One problem with identity data, at a path inside it (``("users", 0, "groups", 1)``).

    The loader maps the path to a file and line; ``related`` is the path of the other half of a
    conflict (the first of two users with the same name), shown as "first at line N" there."""

    path: tuple[Any, ...]
    message: str
    related: tuple[Any, ...] | None = None

    def under(self, *prefix: Any) -> Issue:
        """The same issue seen from a containing document (``policies[2]`` + ``required``)."""
        related = (*prefix, *self.related) if self.related is not None else None
        return Issue((*prefix, *self.path), self.message, related)

    def __str__(self) -> str:
        text = f"{path_text(self.path)}: {self.message}" if self.path else self.message
        return text + (f" (first at {path_text(self.related)})" if self.related is not None else "")


class IdentityError(Exception):
    """Base of this package's errors."""


class InvalidIdentityData(IdentityError, ValueError):
    """Users, groups, tokens or a policy that do not hold together; ``issues`` lists them all."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(str(i) for i in issues))


class Unauthenticated(IdentityError):
    """A token that does not identify anyone now: unknown, expired, or its user disabled. The
    message never contains the token."""


class Forbidden(IdentityError):
    """The principal is known but may not do this. The message says which role is needed."""

    def __init__(self, message: str, *, principal: str, action: str) -> None:
        self.principal = principal
        self.action = action
        super().__init__(message)


class UnknownAction(IdentityError, ValueError):
    """A programming error: an action missing from the permission table. Never allowed."""
