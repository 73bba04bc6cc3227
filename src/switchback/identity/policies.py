"""Approval policies as data: who may approve, how many must, whether one may approve one's own
change, and what happens when nobody answers in time. ``voting.py`` applies them to votes;
``docs/identity.md`` explains the rules with examples.

A policy is checked twice: on its own when it is built (:func:`policy_issues`: at least one
approver, ``required`` ≥ 1, a positive timeout, a known ``on_timeout``) and against a directory
(:func:`validate_policy`: unknown users and groups, people who could never vote, more approvals
required than people who can give them).

**Timeout**: after ``timeout`` seconds (30 days by default, GitHub's limit for a waiting
deployment) the approval expires. ``on_timeout`` says what the run does then: ``reject`` (the
default: treated as a rejection, the run takes its failure path, as GitHub and Tekton do) or
``suspend`` (the run parks for an operator, who rolls it forward to wait again or rolls it
back). ``approve`` is refused on purpose: a gate that opens when nobody answers is a timer, and
waiting would bypass the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from switchback.identity.errors import InvalidIdentityData, Issue
from switchback.identity.principals import NAME, Principal
from switchback.identity.roles import Action, roles_text

if TYPE_CHECKING:
    from switchback.identity.directory import Directory

GROUP_PREFIX = "group:"
DEFAULT_TIMEOUT = 30 * 86400.0
ON_TIMEOUT: Mapping[str, str] = MappingProxyType(
    {
        "reject": "the approval expires and counts as a rejection: the run takes its failure path",
        "suspend": "the approval expires and the run parks for an operator (rollforward waits "
        "again, rollback aborts)",
    }
)
APPROVE = "approve"  # the on_timeout value refused (and a vote's decision, in voting.py)

# The shape of a policy in a YAML file (users file, pipeline file); values are checked by
# policy_issues() so that the messages can explain the rules.
POLICY_SHAPE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["approvers"],
    "properties": {
        "approvers": {"type": "array", "items": {"type": "string"}},
        "required": {"type": "integer"},
        "allow_self_approval": {"type": "boolean"},
        "timeout": {"type": "number"},
        "on_timeout": {"type": "string"},
        "description": {"type": "string"},
    },
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class ApprovalPolicy:
    """``approvers``: user names and ``group:NAME`` entries. Raises :class:`InvalidIdentityData`
    listing every problem that can be seen without a directory; :func:`validate_policy` checks
    the names against one."""

    approvers: tuple[str, ...]
    required: int = 1
    allow_self_approval: bool = False
    timeout: float = DEFAULT_TIMEOUT
    on_timeout: str = "reject"
    name: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        approvers = self.approvers
        object.__setattr__(
            self, "approvers", (approvers,) if isinstance(approvers, str) else tuple(approvers)
        )
        issues = policy_issues(self)
        if issues:
            raise InvalidIdentityData(issues)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], name: str | None = None) -> ApprovalPolicy:
        """From a file's mapping (its keys checked against :data:`POLICY_SHAPE` first)."""
        keys = ("approvers", "required", "allow_self_approval", "timeout", "on_timeout")
        return cls(
            **{k: data[k] for k in keys if k in data},
            name=name if name is not None else data.get("name"),
            description=data.get("description"),
        )

    @property
    def users(self) -> frozenset[str]:
        return frozenset(a for a in self.approvers if not a.startswith(GROUP_PREFIX))

    @property
    def groups(self) -> frozenset[str]:
        n = len(GROUP_PREFIX)
        return frozenset(a[n:] for a in self.approvers if a.startswith(GROUP_PREFIX))

    def entry_for(self, principal: Principal) -> str | None:
        """The approvers entry that names ``principal`` (its name first, then a group), or None."""
        if principal.name in self.users:
            return principal.name
        for a in self.approvers:
            if a.startswith(GROUP_PREFIX) and a[len(GROUP_PREFIX) :] in principal.groups:
                return a
        return None

    def deadline(self, opened_at: float) -> float:
        return opened_at + self.timeout

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name} if self.name else {}
        out.update(
            approvers=list(self.approvers),
            required=self.required,
            allow_self_approval=self.allow_self_approval,
            timeout=self.timeout,
            on_timeout=self.on_timeout,
        )
        return out


def policy_issues(policy: ApprovalPolicy) -> list[Issue]:
    """Problems visible in the policy alone (paths relative to it)."""
    out: list[Issue] = []
    if not policy.approvers:
        out.append(Issue(("approvers",), "no approver: list user names and group:NAME entries"))
    first: dict[str, int] = {}
    for j, entry in enumerate(policy.approvers):
        name = entry[len(GROUP_PREFIX) :] if str(entry).startswith(GROUP_PREFIX) else entry
        if not isinstance(entry, str) or not NAME.match(name):
            what = "group name" if str(entry).startswith(GROUP_PREFIX) else "user name"
            out.append(Issue(("approvers", j), f"{entry!r} is not a {what}"))
        elif entry in first:
            out.append(
                Issue(("approvers", j), f"{entry!r} listed twice", ("approvers", first[entry]))
            )
        first.setdefault(entry, j)
    if not isinstance(policy.required, int) or isinstance(policy.required, bool):
        out.append(Issue(("required",), f"{policy.required!r} is not a whole number"))
    elif policy.required < 1:
        out.append(Issue(("required",), "must be at least 1: a gate nobody must pass is no gate"))
    elif policy.approvers and not policy.groups and policy.required > len(policy.users):
        out.append(
            Issue(
                ("required",),
                f"is {policy.required} but the policy names only {len(policy.users)} approver(s)",
            )
        )
    if not isinstance(policy.allow_self_approval, bool):
        out.append(Issue(("allow_self_approval",), "must be true or false"))
    if not _is_number(policy.timeout) or policy.timeout <= 0:
        out.append(Issue(("timeout",), f"{policy.timeout!r} is not a positive number of seconds"))
    if policy.on_timeout == APPROVE:
        out.append(
            Issue(
                ("on_timeout",),
                "'approve' is not allowed: a gate that opens when nobody answers is a timer, and "
                "waiting would bypass the policy; use reject or suspend",
            )
        )
    elif policy.on_timeout not in ON_TIMEOUT:
        choices = " or ".join(ON_TIMEOUT)
        out.append(Issue(("on_timeout",), f"{policy.on_timeout!r} is not one of {choices}"))
    return out


def validate_policy(policy: ApprovalPolicy, directory: Directory) -> list[Issue]:
    """Problems of ``policy`` against the users and groups of ``directory``: unknown names, named
    users who could never vote, more approvals required than people who can give them."""
    out: list[Issue] = []
    eligible: set[str] = set()
    for j, entry in enumerate(policy.approvers):
        if entry.startswith(GROUP_PREFIX):
            group = entry[len(GROUP_PREFIX) :]
            if group not in directory.groups:
                out.append(Issue(("approvers", j), f"unknown group {group!r}"))
                continue
            members = [p for m in sorted(directory.members(group)) if (p := directory.user(m))]
            voters = {p.name for p in members if p.can(Action.APPROVALS_VOTE)}
            if members and not voters and not all(p.disabled for p in members):
                out.append(
                    Issue(
                        ("approvers", j),
                        f"no member of group {group!r} can vote: voting takes the approver or "
                        "admin role (give it to the group or to its members)",
                    )
                )
            eligible |= voters
            continue
        principal = directory.user(entry)
        if principal is None:
            out.append(Issue(("approvers", j), f"unknown user {entry!r}"))
        elif principal.can(Action.APPROVALS_VOTE):
            eligible.add(entry)
        elif not principal.disabled:
            out.append(
                Issue(
                    ("approvers", j),
                    f"{entry!r} could never vote: voting takes the approver or admin role "
                    f"({entry} has {roles_text(principal.roles)})",
                )
            )
    if not out and len(eligible) < policy.required:
        who = f": {', '.join(sorted(eligible))}" if eligible else ""
        out.append(
            Issue(
                ("required",),
                f"is {policy.required} but only {len(eligible)} user(s) can vote under this "
                f"policy{who}",
            )
        )
    return out
