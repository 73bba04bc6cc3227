"""The directory: who is who, as one immutable value.

Built from users, groups and policies (by the loader from ``SWITCHBACK_USERS`` and
``SWITCHBACK_ADMIN_TOKENS``, or by hand in tests); every inconsistency — an unknown group, two
users with one email or chat id, a token hash given twice, a policy naming nobody who can vote — is
found at once and reported as a list of :class:`Issue`. A directory is never changed: a reload
builds a new one (``loader.LiveDirectory``), so a request sees one consistent view.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TypeVar

from switchback.identity.errors import InvalidIdentityData, Issue, Unauthenticated
from switchback.identity.policies import ApprovalPolicy, validate_policy
from switchback.identity.principals import ADMIN_TOKENS_ORIGIN, Group, Principal, User
from switchback.identity.roles import Action, Role
from switchback.identity.tokens import (
    Token,
    bearer_token,
    digest_of_hash,
    expiry_text,
    hash_problem,
    hash_token,
    token_digest,
)
from switchback.identity.voting import Party

EXPIRY_WARNING = 7 * 86400.0  # `switchback users check` warns this long before a token expires


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    expires_at: float | None
    principal: Principal  # with .token set to this token's name


def admin_token_users(tokens: Mapping[str, str]) -> list[User]:
    """``SWITCHBACK_ADMIN_TOKENS`` (parsed: name → token): each name an admin with that token."""
    return [
        User(
            name=name,
            roles=frozenset({Role.ADMIN}),
            tokens=(Token(ADMIN_TOKENS_ORIGIN, hash_token(token)),),
            origin=ADMIN_TOKENS_ORIGIN,
        )
        for name, token in tokens.items()
    ]


class Directory:
    """Users (as resolved :class:`Principal`), groups, tokens by hash, named policies."""

    def __init__(
        self,
        users: Iterable[User] = (),
        groups: Iterable[Group] = (),
        policies: Iterable[ApprovalPolicy] = (),
    ) -> None:
        issues = self._assemble(list(users), list(groups), list(policies))
        if issues:
            raise InvalidIdentityData(issues)

    @classmethod
    def check(
        cls,
        users: Iterable[User] = (),
        groups: Iterable[Group] = (),
        policies: Iterable[ApprovalPolicy] = (),
    ) -> tuple[Directory | None, list[Issue]]:
        """Like the constructor, but returns the issues (paths ``users[i]...``, ``groups[i]...``,
        ``policies[i]...`` index the given sequences) instead of raising."""
        directory = cls.__new__(cls)
        issues = directory._assemble(list(users), list(groups), list(policies))
        return (None if issues else directory), issues

    @classmethod
    def from_admin_tokens(cls, tokens: Mapping[str, str]) -> Directory:
        return cls(admin_token_users(tokens))

    # -- building ------------------------------------------------------------------------------

    def _assemble(
        self, users: list[User], groups: list[Group], policies: list[ApprovalPolicy]
    ) -> list[Issue]:
        issues: list[Issue] = []
        self._users_list = users
        group_at = _first_of(groups, lambda g: g.name, "groups", "group name", issues)
        self._groups = MappingProxyType({name: groups[i] for name, i in group_at.items()})
        user_at = self._check_people(users, groups, issues)
        self._users = MappingProxyType(
            {name: Principal.resolve(users[i], self._groups) for name, i in user_at.items()}
        )
        members: dict[str, set[str]] = {g: set(self._groups[g].members) for g in self._groups}
        for p in self._users.values():
            for g in p.groups:
                members.setdefault(g, set()).add(p.name)
        self._members = {g: frozenset(m) for g, m in members.items()}
        kept = [(i, u) for i, u in enumerate(users) if user_at[u.name] == i]  # not duplicates
        self._index_contacts(kept, issues)
        self._index_tokens(kept, issues)
        policy_at = _first_of(policies, lambda p: p.name, "policies", "policy name", issues)
        self._policies = MappingProxyType({n: policies[i] for n, i in policy_at.items() if n})
        for i, policy in enumerate(policies):
            if not policy.name:
                issues.append(Issue(("policies", i), "a policy in a directory needs a name"))
            issues.extend(x.under("policies", i) for x in validate_policy(policy, self))
        return issues

    def _check_people(
        self, users: list[User], groups: list[Group], issues: list[Issue]
    ) -> dict[str, int]:
        """Each user's and group's own issues, duplicates and unknown names; the index of the
        first user of each name."""
        user_at: dict[str, int] = {}
        for i, u in enumerate(users):
            issues.extend(x.under("users", i) for x in u.issues())
            if u.name in user_at:
                message = f"duplicate user name {u.name!r}"
                if users[user_at[u.name]].origin != u.origin:
                    message = (
                        f"user {u.name!r} is defined both in the users file and in "
                        f"{ADMIN_TOKENS_ORIGIN}"
                    )
                issues.append(Issue(("users", i, "name"), message, ("users", user_at[u.name])))
            user_at.setdefault(u.name, i)
            for k, group in enumerate(u.groups):
                if group not in self._groups:
                    issues.append(Issue(("users", i, "groups", k), f"unknown group {group!r}"))
        for i, g in enumerate(groups):
            issues.extend(x.under("groups", i) for x in g.issues())
            for k, member in enumerate(g.members):
                if member not in user_at:
                    issues.append(Issue(("groups", i, "members", k), f"unknown user {member!r}"))
        return user_at

    def _index_contacts(self, users: list[tuple[int, User]], issues: list[Issue]) -> None:
        """Emails and chat ids → users; each may belong to one user only (chat and self-approval
        matching would be ambiguous otherwise)."""
        self._by_email: dict[str, Principal] = {}
        self._by_chat: dict[tuple[str, str], Principal] = {}
        seen: dict[object, tuple[tuple[object, ...], str]] = {}

        def once(key: object, path: tuple[object, ...], name: str, what: str) -> None:
            if key in seen:
                first, owner = seen[key]
                issues.append(Issue(path, f"{what} is also {owner}'s", first))
            seen.setdefault(key, (path, name))

        for i, u in users:
            principal = self._users[u.name]
            if u.email:
                once(u.email.casefold(), ("users", i, "email"), u.name, f"email {u.email!r}")
                self._by_email.setdefault(u.email.casefold(), principal)
            for network, chat_id in u.chat.items():
                path = ("users", i, "chat", network)
                once((network, chat_id), path, u.name, f"{network} id {chat_id!r}")
                self._by_chat.setdefault((network, chat_id), principal)

    def _index_tokens(self, users: list[tuple[int, User]], issues: list[Issue]) -> None:
        """Token digest → (expiry, principal naming the token); a hash belongs to one entry."""
        self._tokens: dict[bytes, _Entry] = {}
        token_at: dict[bytes, tuple[int, int]] = {}
        for i, u in users:
            names: dict[str, int] = {}
            for k, t in enumerate(u.tokens):
                path = ("users", i, "tokens", k)
                if t.name in names:
                    first = ("users", i, "tokens", names[t.name], "name")
                    issues.append(
                        Issue((*path, "name"), f"{u.name} has two tokens named {t.name!r}", first)
                    )
                names.setdefault(t.name, k)
                problem = hash_problem(t.hash)
                if problem:
                    issues.append(Issue((*path, "hash"), problem))
                    continue
                digest = digest_of_hash(t.hash)
                if digest in token_at:
                    i2, k2 = token_at[digest]
                    owner, token = self._users_list[i2].name, self._users_list[i2].tokens[k2].name
                    issues.append(
                        Issue(
                            (*path, "hash"),
                            f"the same token as {owner}'s token {token!r}",
                            ("users", i2, "tokens", k2, "hash"),
                        )
                    )
                    continue
                token_at[digest] = (i, k)
                principal = replace(self._users[u.name], token=t.name)
                self._tokens[digest] = _Entry(digest, t.expires_at, principal)

    # -- who is who ----------------------------------------------------------------------------

    @property
    def users(self) -> Mapping[str, Principal]:
        return self._users

    @property
    def groups(self) -> Mapping[str, Group]:
        return self._groups

    @property
    def policies(self) -> Mapping[str, ApprovalPolicy]:
        return self._policies

    @property
    def token_count(self) -> int:
        return len(self._tokens)

    def user(self, name: str) -> Principal | None:
        return self._users.get(name)

    def members(self, group: str) -> frozenset[str]:
        """User names in ``group``: those it lists and those that list it."""
        return self._members.get(group, frozenset())

    def by_email(self, email: str) -> Principal | None:
        return self._by_email.get(email.casefold())

    def by_chat(self, network: str, chat_id: str) -> Principal | None:
        """The user a chat id maps to (``by_chat("matrix", "@alice:localhost")``), or None."""
        return self._by_chat.get((network, chat_id))

    def find(self, party: Party) -> Principal | None:
        """The user ``party`` is, by user name, email or chat id (first that matches)."""
        if party.name and (p := self.user(party.name)):
            return p
        if party.email and (p := self.by_email(party.email)):
            return p
        return next((p for n, c in party.chat.items() if (p := self.by_chat(n, c))), None)

    def policy(self, name: str) -> ApprovalPolicy | None:
        return self._policies.get(name)

    def eligible_voters(self, policy: ApprovalPolicy) -> list[Principal]:
        """Who could vote under ``policy`` before self-approval is considered (an inbox, a chat
        message's mentions)."""
        return [
            p
            for p in self._users.values()
            if policy.entry_for(p) is not None and p.can(Action.APPROVALS_VOTE)
        ]

    # -- tokens --------------------------------------------------------------------------------

    def _lookup(self, token: str, now: float | None) -> tuple[Principal | None, str]:
        digest = token_digest(token)
        entry = self._tokens.get(digest)
        # The dict finds the entry by the token's SHA-256: its timing can tell at most how much
        # of a hash the caller chose matches a stored one, and turning that into a token is a
        # preimage search. The constant-time comparison keeps even that from being a
        # secret-dependent `==` of our own.
        if entry is None or not hmac.compare_digest(digest, entry.digest):
            return None, "unknown token"
        principal = entry.principal
        if entry.expires_at is not None:
            if (time.time() if now is None else now) >= entry.expires_at:
                when = expiry_text(entry.expires_at)
                return None, f"token {principal.token!r} of {principal.name} expired at {when}"
        if principal.disabled:
            return None, f"{principal.name} is disabled"
        return principal, ""

    def authenticate(
        self, authorization: str | None, *, now: float | None = None
    ) -> Principal | None:
        """The principal of an ``Authorization: Bearer <token>`` header; None for no header, an
        unknown or expired token, or a disabled user. The principal's ``token`` names the token."""
        token = bearer_token(authorization)
        return None if token is None else self._lookup(token, now)[0]

    def actor(self, authorization: str | None) -> str | None:
        """The user name for the header, or None: the call ``gateway.auth.TokenSet`` answers."""
        principal = self.authenticate(authorization)
        return None if principal is None else principal.name

    def identify(self, token: str, *, now: float | None = None) -> Principal:
        """The principal of a bare token; :class:`Unauthenticated` says why not (unknown,
        expired, disabled). For tools; the hot path is :meth:`authenticate`."""
        principal, why = self._lookup(token, now)
        if principal is None:
            raise Unauthenticated(why)
        return principal

    def token_of(self, principal: Principal) -> Token | None:
        """The :class:`Token` (name, hash, expiry) a principal from :meth:`authenticate` used."""
        for u in self._users_list:
            if u.name == principal.name:
                return next((t for t in u.tokens if t.name == principal.token), None)
        return None

    # -- advice --------------------------------------------------------------------------------

    def warnings(self, now: float | None = None) -> list[Issue]:
        """Things that work but deserve a look: expired tokens, tokens about to expire, users
        with no role (they can sign in and do nothing)."""
        now = time.time() if now is None else now
        out: list[Issue] = []
        for i, u in enumerate(self._users_list):
            if u.origin:
                continue
            principal = self._users.get(u.name)
            if principal and not principal.roles and not principal.disabled:
                out.append(Issue(("users", i), f"{u.name} has no role: it can do nothing"))
            for k, t in enumerate(u.tokens):
                if t.expires_at is None:
                    continue
                when = expiry_text(t.expires_at)
                if t.expired(now):
                    message = f"{u.name}'s token {t.name!r} expired at {when}: remove it"
                elif t.expires_at - now < EXPIRY_WARNING:
                    message = f"{u.name}'s token {t.name!r} expires at {when}: rotate it"
                else:
                    continue
                out.append(Issue(("users", i, "tokens", k), message))
        return out


T = TypeVar("T")


def _first_of(
    items: list[T], key: Callable[[T], str | None], section: str, what: str, issues: list[Issue]
) -> dict[str, int]:
    """Index of the first item per key; later ones reported as duplicates."""
    at: dict[str, int] = {}
    for i, item in enumerate(items):
        name = key(item)
        if name is None:
            continue
        if name in at:
            issues.append(
                Issue((section, i, "name"), f"duplicate {what} {name!r}", (section, at[name]))
            )
        at.setdefault(name, i)
    return at
