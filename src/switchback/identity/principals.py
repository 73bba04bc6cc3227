"""Users, groups, and the principal a request runs as.

A :class:`User` and a :class:`Group` are what the users file says; a :class:`Principal` is a user
as the directory resolved it — the groups it is in (its own list and the groups that list it as a
member) and its effective roles (its own and those of its groups). Everything that checks
permissions or votes takes a Principal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from switchback.identity.errors import Issue
from switchback.identity.roles import Action, Role, permitted
from switchback.identity.tokens import Token

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
NAME_RULE = "letters, digits, '_', '.', '-' (not first), at most 64"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# Chat networks a user can be mapped from, and the form of an id on each.
CHAT_NETWORKS: Mapping[str, tuple[re.Pattern[str], str]] = MappingProxyType(
    {
        "matrix": (re.compile(r"^@[^:\s]+:\S+$"), "a Matrix user id like @alice:example.org"),
        "slack": (re.compile(r"^[UW][A-Z0-9]{2,}$"), "a Slack member id like U024BE7LH"),
    }
)
ADMIN_TOKENS_ORIGIN = "SWITCHBACK_ADMIN_TOKENS"


def _frozen(value: Any) -> MappingProxyType[str, str]:
    return MappingProxyType(dict(value or {}))


def _roles(value: Iterable[Role | str]) -> frozenset[Role]:
    return frozenset(Role(r) for r in value)


def _names(value: Iterable[str] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _listed_twice(names: tuple[str, ...], key: str, what: str) -> list[Issue]:
    first: dict[str, int] = {}
    out = []
    for j, name in enumerate(names):
        if name in first:
            out.append(Issue((key, j), f"{what} {name!r} listed twice", (key, first[name])))
        first.setdefault(name, j)
    return out


@dataclass(frozen=True)
class User:
    name: str
    display_name: str | None = None
    email: str | None = None
    roles: frozenset[Role] = frozenset()
    groups: tuple[str, ...] = ()  # in the file's order, so that problems point at the right line
    # network → id on it: {"matrix": "@alice:localhost", "slack": "U123ABC"}
    chat: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False
    tokens: tuple[Token, ...] = ()
    # Where the user was defined ("" = the users file; ADMIN_TOKENS_ORIGIN for the environment).
    origin: str = ""

    def __post_init__(self) -> None:
        # Accept lists and plain strings from callers and the loader; keep immutable values.
        object.__setattr__(self, "roles", _roles(self.roles))
        object.__setattr__(self, "groups", _names(self.groups))
        object.__setattr__(self, "chat", _frozen(self.chat))
        object.__setattr__(self, "tokens", tuple(self.tokens))

    def issues(self) -> list[Issue]:
        """Problems with this user's own values (paths relative to the user)."""
        out: list[Issue] = []
        # Names from SWITCHBACK_ADMIN_TOKENS were never restricted: they keep working as they are.
        if not self.origin and not NAME.match(self.name):
            out.append(Issue(("name",), f"{self.name!r} is not a valid user name ({NAME_RULE})"))
        if self.email is not None and not EMAIL.match(self.email):
            out.append(Issue(("email",), f"{self.email!r} is not an email address"))
        for network, chat_id in self.chat.items():
            if network not in CHAT_NETWORKS:
                known = ", ".join(CHAT_NETWORKS)
                out.append(Issue(("chat", network), f"unknown chat network {network!r} ({known})"))
            elif not CHAT_NETWORKS[network][0].match(chat_id):
                form = CHAT_NETWORKS[network][1]
                out.append(Issue(("chat", network), f"{chat_id!r} is not {form}"))
        out.extend(_listed_twice(self.groups, "groups", "group"))
        return out


@dataclass(frozen=True)
class Group:
    name: str
    roles: frozenset[Role] = frozenset()
    members: tuple[str, ...] = ()  # user names, in the file's order
    description: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", _roles(self.roles))
        object.__setattr__(self, "members", _names(self.members))

    def issues(self) -> list[Issue]:
        out = _listed_twice(self.members, "members", "member")
        if not NAME.match(self.name):
            out.append(Issue(("name",), f"{self.name!r} is not a valid group name ({NAME_RULE})"))
        return out


@dataclass(frozen=True)
class Principal:
    """Who a request runs as: a user with its groups and effective roles resolved.

    ``role_sources`` says where each role comes from (``"own"`` or ``"group:NAME"``); ``token``
    names the token that authenticated the request (None when the principal was looked up by
    name or chat id)."""

    name: str
    roles: frozenset[Role] = frozenset()
    display_name: str | None = None
    email: str | None = None
    groups: frozenset[str] = frozenset()
    chat: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False
    role_sources: Mapping[Role, tuple[str, ...]] = field(default_factory=dict)
    token: str | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", _roles(self.roles))
        object.__setattr__(self, "groups", frozenset(self.groups))
        object.__setattr__(self, "chat", _frozen(self.chat))
        object.__setattr__(self, "role_sources", MappingProxyType(dict(self.role_sources)))

    def can(self, action: Action | str) -> bool:
        return permitted(self, action)

    @property
    def label(self) -> str:
        """``Alice Liddell (alice)``, or the name alone."""
        return f"{self.display_name} ({self.name})" if self.display_name else self.name

    @classmethod
    def resolve(cls, user: User, groups: Mapping[str, Group]) -> Principal:
        """``user`` in the groups of ``groups`` it names or that name it as a member."""
        member_of = set(user.groups) | {g.name for g in groups.values() if user.name in g.members}
        sources: dict[Role, list[str]] = {r: ["own"] for r in user.roles}
        for name in sorted(member_of):
            for role in groups[name].roles if name in groups else ():
                sources.setdefault(role, []).append(f"group:{name}")
        return cls(
            name=user.name,
            roles=frozenset(sources),
            display_name=user.display_name,
            email=user.email,
            groups=frozenset(member_of),
            chat=user.chat,
            disabled=user.disabled,
            role_sources={r: tuple(s) for r, s in sources.items()},
            origin=user.origin,
        )
