"""Reading identities: the users file (``SWITCHBACK_USERS``) and ``SWITCHBACK_ADMIN_TOKENS``, and
keeping a server's directory current. The only module of this package that does I/O.

Every problem is reported at once, with the file and line (the same YAML-with-lines helpers and
jsonschema mapping as scenario lint: ``switchback.yamlfile``), or with ``SWITCHBACK_ADMIN_TOKENS``
as its place. A problem never echoes a token.

Reload: a :class:`LiveDirectory` looks at the file's modification time, size and inode at most
once a second, from the calls that read it (no thread, no signal: uvicorn does not hand SIGHUP to
the app — by default it would stop the process — and a file swapped by a Kubernetes Secret or a
config-management tool changes with no signal at all). A changed file that does not load is
logged and the previous directory keeps serving: a typo never locks everyone out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from switchback.identity.directory import Directory, admin_token_users
from switchback.identity.errors import IdentityError, InvalidIdentityData, Issue
from switchback.identity.policies import POLICY_SHAPE, ApprovalPolicy
from switchback.identity.principals import ADMIN_TOKENS_ORIGIN, Group, Principal, User
from switchback.identity.roles import Role
from switchback.identity.tokens import Token, parse_expiry
from switchback.yamlfile import Problem, YamlDocument, path_text, read_yaml, shape_problems

USERS_ENV = "SWITCHBACK_USERS"
ADMIN_TOKENS_ENV = ADMIN_TOKENS_ORIGIN
RELOAD_INTERVAL = 1.0  # seconds between two looks at the users file

log = logging.getLogger("switchback.identity")

# A list or mapping key may be left empty (``tokens:`` once its last entry is deleted).
_STRINGS = {"type": ["array", "null"], "items": {"type": "string"}}
_ROLES = {"type": ["array", "null"], "items": {"enum": [r.value for r in Role]}}
USERS_SHAPE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "users": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "display_name": {"type": "string"},
                    "email": {"type": "string"},
                    "roles": _ROLES,
                    "groups": _STRINGS,
                    "chat": {
                        "type": ["object", "null"],
                        "additionalProperties": {"type": "string"},
                    },
                    "disabled": {"type": "boolean"},
                    "tokens": {
                        "type": ["array", "null"],
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name", "hash"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "hash": {"type": "string"},
                                "expires": {},  # a date, a timestamp or a string: parse_expiry
                                "description": {"type": "string"},
                            },
                        },
                    },
                    "description": {"type": "string"},
                },
            },
        },
        "groups": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "roles": _ROLES,
                    "members": _STRINGS,
                    "description": {"type": "string"},
                },
            },
        },
        "policies": {
            "type": ["array", "null"],
            "items": {
                **POLICY_SHAPE,
                "required": ["name", *POLICY_SHAPE["required"]],
                "properties": {"name": {"type": "string"}, **POLICY_SHAPE["properties"]},
            },
        },
    },
}
_SHAPE = Draft202012Validator(USERS_SHAPE)


class UsersFileError(IdentityError):
    """The users file or ``SWITCHBACK_ADMIN_TOKENS`` has problems; ``problems`` lists them all."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def parse_admin_tokens(text: str) -> tuple[dict[str, str], list[Problem]]:
    """``name=token,name2=token2`` → {name: token}, and the problems (never echoing a token)."""
    out: dict[str, str] = {}
    problems: list[Problem] = []
    for n, part in enumerate(p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, token = part.partition("=")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            problems.append(
                Problem(ADMIN_TOKENS_ENV, None, f"entry {n + 1} is not of the form name=token")
            )
        elif name in out:
            problems.append(Problem(ADMIN_TOKENS_ENV, None, f"token name {name!r} appears twice"))
        else:
            out[name] = token
    return out, problems


class _Reader:
    """One reading of the users file: objects built from it and the problems, with lines."""

    def __init__(self, file: str, doc: YamlDocument, admin_names: list[str]) -> None:
        self.file, self.doc = file, doc
        self.data: dict[str, Any] = doc.data or {}
        self.admin_names = admin_names  # the users after the file's come from the environment
        self.problems: list[Problem] = []

    def _items(self, section: str) -> list[dict[str, Any]]:
        return self.data.get(section) or []

    def location(self, path: tuple[Any, ...]) -> tuple[str, int | None]:
        if path[:1] == ("users",) and len(path) > 1 and path[1] >= len(self._items("users")):
            return ADMIN_TOKENS_ENV, None
        return self.file, self.doc.line(*path)

    def context(self, path: tuple[Any, ...]) -> str:
        """``("users", 2, "email")`` → ``user 'bob' email``: problems read as sentences."""
        kinds = {"users": "user", "groups": "group", "policies": "policy"}
        if len(path) < 2 or path[0] not in kinds or not isinstance(path[1], int):
            return path_text(path)
        items = self._items(path[0])
        if path[1] < len(items):
            label = f"{kinds[path[0]]} {items[path[1]].get('name')!r}"
        else:
            label = f"entry {self.admin_names[path[1] - len(items)]!r}"
        rest = path[2:]
        return f"{label} {path_text(rest)}" if rest and rest != ("name",) else label

    def add(self, issue: Issue) -> None:
        file, line = self.location(issue.path)
        context = self.context(issue.path)
        message = f"{context}: {issue.message}" if context else issue.message
        if issue.related is not None:
            other_file, other_line = self.location(issue.related)
            if other_file != file:
                message += f" (first at {other_file}{f':{other_line}' if other_line else ''})"
            elif other_line is not None:
                message += f" (first at line {other_line})"
        self.problems.append(Problem(file, line, message))

    def users(self) -> list[User]:
        out = []
        for i, u in enumerate(self.data.get("users") or []):
            tokens = []
            for k, t in enumerate(u.get("tokens") or []):
                try:
                    expires = parse_expiry(t.get("expires"))
                except ValueError as exc:
                    self.add(Issue(("users", i, "tokens", k, "expires"), str(exc)))
                    expires = None
                tokens.append(Token(t["name"], t["hash"], expires))
            out.append(
                User(
                    name=u["name"],
                    display_name=u.get("display_name"),
                    email=u.get("email"),
                    roles=frozenset(u.get("roles") or ()),
                    groups=tuple(u.get("groups") or ()),
                    chat=u.get("chat") or {},
                    disabled=bool(u.get("disabled", False)),
                    tokens=tuple(tokens),
                )
            )
        return out

    def groups(self) -> list[Group]:
        return [
            Group(
                name=g["name"],
                roles=frozenset(g.get("roles") or ()),
                members=tuple(g.get("members") or ()),
                description=g.get("description"),
            )
            for g in self.data.get("groups") or []
        ]

    def policies(self) -> tuple[list[ApprovalPolicy], list[int], set[int]]:
        """The policies, the file index of each, and the indices of stand-ins: a policy with
        problems of its own is reported and replaced by one with its approvers alone, so that
        its names are checked too."""
        out, at, standins = [], [], set()
        for i, p in enumerate(self._items("policies")):
            try:
                out.append(ApprovalPolicy.from_mapping(p))
            except InvalidIdentityData as exc:
                for issue in exc.issues:
                    self.add(issue.under("policies", i))
                try:
                    out.append(ApprovalPolicy(p["approvers"], name=p["name"]))
                except InvalidIdentityData:
                    continue
                standins.add(i)
            at.append(i)
        return out, at, standins


def _read(
    path: Path, admin_tokens: Mapping[str, str], shown_as: str | None
) -> tuple[Directory | None, list[Problem]]:
    where = shown_as or str(path)
    doc = read_yaml(path, where)
    if isinstance(doc, Problem):
        return None, [doc]
    reader = _Reader(where, doc, list(admin_tokens))
    if doc.data is not None:
        reader.problems.extend(shape_problems(_SHAPE, doc, where, "users file"))
        if reader.problems:
            return None, reader.problems
    users = reader.users() + admin_token_users(admin_tokens)
    groups = reader.groups()
    policies, policy_at, standins = reader.policies()
    directory, issues = Directory.check(users, groups, policies)

    def in_file(path: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        # Policies that did not build are left out of the directory: index the file's list.
        if path is not None and path[:1] == ("policies",) and len(path) > 1:
            return ("policies", policy_at[path[1]], *path[2:])
        return path

    for issue in issues:
        path = in_file(issue.path) or ()
        if path[:1] == ("policies",) and path[1] in standins and path[2:3] == ("required",):
            continue  # a stand-in's count, not the file's
        reader.add(Issue(path, issue.message, in_file(issue.related)))
    problems = sorted(reader.problems, key=lambda p: (p.file != where, p.line or 0))
    return (None if problems else directory), problems


def lint_users(
    path: Path | str | None,
    admin_tokens: Mapping[str, str] | None = None,
    *,
    shown_as: str | None = None,
) -> tuple[Directory | None, list[Problem]]:
    """Read the users file at ``path`` (None: no file) together with the admins of
    ``SWITCHBACK_ADMIN_TOKENS`` (parsed); the directory, or None and every problem."""
    admin_tokens = dict(admin_tokens or {})
    if path is None:
        directory, issues = Directory.check(admin_token_users(admin_tokens))
        problems = [Problem(ADMIN_TOKENS_ENV, None, str(i)) for i in issues]
        return directory, problems
    return _read(Path(path), admin_tokens, shown_as)


def load_users(path: Path | str | None, admin_tokens: Mapping[str, str] | None = None) -> Directory:
    """Like :func:`lint_users`, raising :class:`UsersFileError` if there is any problem."""
    directory, problems = lint_users(path, admin_tokens)
    if directory is None:
        raise UsersFileError(problems)
    return directory


def _stamp(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev


class LiveDirectory:
    """The directory a long-running process holds, kept current with its users file.

    ``current()`` is what every call reads: between two looks at the file (``interval``
    seconds) it costs one clock read. When the file changed, it is re-read; a version with
    problems is logged and left aside (``problems``), the previous directory keeps serving.
    ``authenticate`` and ``actor`` make it a drop-in for ``gateway.auth.TokenSet``."""

    def __init__(
        self,
        users_file: Path | str | None,
        admin_tokens: Mapping[str, str] | None = None,
        *,
        interval: float = RELOAD_INTERVAL,
        clock: Any = time.monotonic,
    ) -> None:
        self.users_file = Path(users_file) if users_file is not None else None
        self._admin = dict(admin_tokens or {})
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # The stamp is taken before the read: a change during the read is seen at the next look.
        self._stamp = _stamp(self.users_file) if self.users_file else None
        self._directory = load_users(self.users_file, self._admin)
        self._next = clock() + interval
        self.problems: list[Problem] = []
        self.loads = 1  # how many versions were loaded (tests and `switchback users` read it)

    def current(self) -> Directory:
        if self.users_file is not None and self._clock() >= self._next:
            self._look()
        return self._directory

    def reload(self) -> list[Problem]:
        """Re-read the file now, changed or not; the problems (empty if it was loaded)."""
        with self._lock:
            if self.users_file is not None:
                self._stamp = _stamp(self.users_file)
            return self._load()

    def _look(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is looking: serve the current directory meanwhile
        try:
            self._next = self._clock() + self._interval
            stamp = _stamp(self.users_file) if self.users_file else None
            if stamp != self._stamp:
                self._stamp = stamp
                self._load()
        finally:
            self._lock.release()

    def _load(self) -> list[Problem]:
        directory, problems = lint_users(self.users_file, self._admin)
        if directory is None:
            self.problems = problems
            log.error(
                "users file not reloaded (the previous version keeps serving): %s",
                "; ".join(str(p) for p in problems),
                extra={"file": str(self.users_file), "problems": len(problems)},
            )
            return problems
        self._directory, self.problems = directory, []
        self.loads += 1
        log.info(
            "users file reloaded",
            extra={"file": str(self.users_file), "users": len(directory.users)},
        )
        return []

    # -- the calls a server makes ------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal | None:
        return self.current().authenticate(authorization)

    def actor(self, authorization: str | None) -> str | None:
        return self.current().actor(authorization)

    def identify(self, token: str) -> Principal:
        return self.current().identify(token)


def open_directory(
    env: Mapping[str, str] | None = None,
    *,
    admin_tokens: Mapping[str, str] | None = None,
    interval: float = RELOAD_INTERVAL,
    clock: Any = time.monotonic,
) -> LiveDirectory:
    """The directory of this process: the users file named by ``SWITCHBACK_USERS`` (if set) and
    the admins of ``SWITCHBACK_ADMIN_TOKENS`` — or of ``admin_tokens`` when the caller already
    has them (the gateway merges its config file's tokens with the environment's). Raises
    :class:`UsersFileError` with every problem."""
    env = os.environ if env is None else env
    if admin_tokens is None:
        admin_tokens, problems = parse_admin_tokens(env.get(ADMIN_TOKENS_ENV, ""))
        if problems:
            raise UsersFileError(problems)
    users_file = env.get(USERS_ENV) or None
    return LiveDirectory(users_file, admin_tokens, interval=interval, clock=clock)
