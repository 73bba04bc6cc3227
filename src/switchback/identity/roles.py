"""Roles, the permission table (action → roles) and the one authorization check.

Every API of switchback (gateway, controller, dashboard, chat, CLI) asks ``authorize(principal,
action)`` before it acts; nothing else decides who may do what. The table is the whole truth:
``docs/identity.md`` prints it and a test keeps the two the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from switchback.identity.errors import Forbidden, UnknownAction

if TYPE_CHECKING:
    from switchback.identity.principals import Principal


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


ROLE_DESCRIPTIONS: Mapping[Role, str] = MappingProxyType(
    {
        Role.VIEWER: "reads everything: transactions, releases, environments, pipelines, approvals",
        Role.OPERATOR: "what a viewer does, and decides: transactions (rollforward, rollback, "
        "compensate, pause, signal), releases (start, abort), pipeline runs",
        Role.APPROVER: "votes on approvals whose policy names them, and reads approvals; "
        "nothing else",
        Role.ADMIN: "everything, including projects, environments by hand and identities",
    }
)


class Action(StrEnum):
    TRANSACTIONS_READ = "transactions.read"
    TRANSACTIONS_START = "transactions.start"
    TRANSACTIONS_DECIDE = "transactions.decide"
    RELEASES_READ = "releases.read"
    RELEASES_START = "releases.start"
    RELEASES_DECIDE = "releases.decide"
    ENVIRONMENTS_READ = "environments.read"
    ENVIRONMENTS_ADMIN = "environments.admin"
    PIPELINES_READ = "pipelines.read"
    PIPELINES_RUN = "pipelines.run"
    APPROVALS_READ = "approvals.read"
    APPROVALS_VOTE = "approvals.vote"
    EVENTS_READ = "events.read"
    PROJECTS_READ = "projects.read"
    PROJECTS_ADMIN = "projects.admin"
    IDENTITY_ADMIN = "identity.admin"
    SYSTEM_ADMIN = "system.admin"


@dataclass(frozen=True)
class Permission:
    action: Action
    roles: frozenset[Role]
    what: str  # what the action covers, in the words of the docs and of Forbidden messages


_READ = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN})
_DECIDE = frozenset({Role.OPERATOR, Role.ADMIN})
_ADMIN = frozenset({Role.ADMIN})

# The table. An approver reads approvals (the inbox of what waits for them) but nothing else:
# voting needs a place in the approval's policy as well as this permission (see voting.py).
PERMISSIONS: Mapping[Action, Permission] = MappingProxyType(
    {
        p.action: p
        for p in (
            Permission(Action.TRANSACTIONS_READ, _READ, "list and read transactions, their "
                       "audit trail and plan"),
            Permission(Action.TRANSACTIONS_START, _DECIDE, "start a transaction (a scenario "
                       "call where the gateway asks for a token, `switchback run`)"),
            Permission(Action.TRANSACTIONS_DECIDE, _DECIDE, "decide on a transaction: "
                       "rollforward, rollback, mark compensated, pause, signal"),
            Permission(Action.RELEASES_READ, _READ, "read releases"),
            Permission(Action.RELEASES_START, _DECIDE, "start a release"),
            Permission(Action.RELEASES_DECIDE, _DECIDE, "decide on a release: abort, retry"),
            Permission(Action.ENVIRONMENTS_READ, _READ, "read environments, their versions "
                       "and sidecars"),
            Permission(Action.ENVIRONMENTS_ADMIN, _ADMIN, "create an environment, deploy or "
                       "select a slot by hand (outside a release)"),
            Permission(Action.PIPELINES_READ, _READ, "read pipeline runs, their logs and "
                       "delivery metrics"),
            Permission(Action.PIPELINES_RUN, _DECIDE, "start a pipeline run, decide on one"),
            Permission(Action.APPROVALS_READ, _READ | {Role.APPROVER}, "read approvals"),
            Permission(Action.APPROVALS_VOTE, frozenset({Role.APPROVER, Role.ADMIN}),
                       "vote on an approval whose policy names the voter"),
            Permission(Action.EVENTS_READ, _READ, "follow the event feed"),
            Permission(Action.PROJECTS_READ, _READ, "read projects"),
            Permission(Action.PROJECTS_ADMIN, _ADMIN, "add, change and remove projects and "
                       "their webhook secrets"),
            Permission(Action.IDENTITY_ADMIN, _ADMIN, "read and change users, groups, tokens "
                       "and policies"),
            Permission(Action.SYSTEM_ADMIN, _ADMIN, "operate the platform itself (shut the "
                       "controller down)"),
        )
    }
)  # fmt: skip


def permission(action: Action | str) -> Permission:
    """The table's row for ``action``; :class:`UnknownAction` if there is none (fail closed)."""
    try:
        return PERMISSIONS[Action(action)]
    except ValueError:
        raise UnknownAction(f"unknown action {action!r}: not in the permission table") from None


def actions_for(roles: Iterable[Role | str]) -> list[Action]:
    """Every action the given roles allow, in table order."""
    held = {Role(r) for r in roles}
    return [a for a, p in PERMISSIONS.items() if p.roles & held]


def _ordered(roles: Iterable[Role]) -> list[Role]:
    return sorted(roles, key=list(Role).index)


def roles_text(roles: Iterable[Role]) -> str:
    """``viewer, approver`` in the table's order, or ``no role``."""
    return ", ".join(r.value for r in _ordered(roles)) or "no role"


def _either(roles: Iterable[Role]) -> str:
    names = [r.value for r in _ordered(roles)]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def permitted(principal: Principal, action: Action | str) -> bool:
    """Whether ``principal`` may do ``action`` (a disabled user may do nothing)."""
    return not principal.disabled and bool(permission(action).roles & principal.roles)


def authorize(principal: Principal, action: Action | str) -> None:
    """The one authorization check: returns if ``principal`` may do ``action``, else raises
    :class:`Forbidden` saying which role it takes and which roles the principal has."""
    perm = permission(action)
    if principal.disabled:
        raise Forbidden(
            f"{principal.name} is disabled", principal=principal.name, action=perm.action
        )
    if perm.roles & principal.roles:
        return
    raise Forbidden(
        f"{principal.name} may not {perm.action} ({perm.what}): it takes the "
        f"{_either(perm.roles)} role; {principal.name} has {roles_text(principal.roles)}",
        principal=principal.name,
        action=perm.action,
    )
