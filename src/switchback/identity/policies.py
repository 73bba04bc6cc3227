"""Approval policies as data: who may approve, how many must, whether one may approve one's own
change, and what happens when nobody answers in time.

The rules (``docs/identity.md`` explains them with examples):

* **Who may vote.** A voter needs both a place in the policy (named, or a member of a named
  ``group:NAME``) *and* a role that carries ``approvals.vote`` (``approver`` or ``admin``). The
  policy usually lives in the app's repository (the pipeline file), which any committer can edit;
  the users file is the platform's. Requiring both means nobody becomes an approver by a commit,
  and a role never bypasses a policy — an admin who is not named cannot vote either. A disabled
  user votes nowhere.
* **Self-approval** — the voter is the commit's author or whoever triggered the run, matched by
  user name, email (case-insensitively) or chat id — is refused unless the policy says
  ``allow_self_approval: true`` (GitHub's ``prevent_self_review``, GitLab's rule that the trigger
  user may not approve).
* **Counting** (as GitHub's required reviewers and Tekton's approval gate do): one reject by an
  eligible voter rejects; otherwise ``required`` approvals by distinct voters approve. One vote
  per person: the same vote again (a double click, a chat retry) changes nothing, a different
  one is refused, and nobody votes once the approval is decided.
* **Timeout**: after ``timeout`` seconds (30 days by default, GitHub's limit for a waiting
  deployment) the approval expires. ``on_timeout`` says what the run does then: ``reject`` (the
  default: treated as a rejection, the run takes its failure path, as GitHub and Tekton do) or
  ``suspend`` (the run parks for an operator, who rolls it forward to wait again or rolls it
  back). ``approve`` is refused on purpose: a gate that opens when nobody answers is a timer, and
  waiting would bypass the policy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

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
APPROVE, REJECT = "approve", "reject"
State = Literal["pending", "approved", "rejected"]

# The shape of a policy in a YAML file (users file, pipeline file); values are checked by
# ApprovalPolicy.issues() so that the messages can explain the rules.
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


# -- the subject of an approval ------------------------------------------------------------------

_GIT_IDENT = re.compile(r"^\s*(.*?)\s*<([^<>]*)>\s*$")


@dataclass(frozen=True)
class Party:
    """Someone the subject names (a commit's author, who triggered a run), as far as known:
    a switchback user name, an email, chat ids."""

    name: str | None = None
    email: str | None = None
    chat: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chat", MappingProxyType(dict(self.chat)))

    @classmethod
    def from_git(cls, ident: str) -> Party:
        """From git's ``Name <email>`` (the name is a person's, not a user name: not kept)."""
        m = _GIT_IDENT.match(ident)
        return cls(email=m.group(2) or None) if m else cls(email=ident.strip() or None)

    @classmethod
    def of(cls, principal: Principal) -> Party:
        return cls(name=principal.name, email=principal.email, chat=principal.chat)

    def describe(self) -> str:
        return self.name or self.email or next(iter(self.chat.values()), "someone unknown")


@dataclass(frozen=True)
class Subject:
    """What is being approved, as far as the rules need it: who made the change, who set it in
    motion."""

    author: Party | None = None  # the commit's author
    triggered_by: Party | None = None  # who pushed, ran the pipeline or started the release

    def parties(self) -> list[tuple[str, Party]]:
        out = [("the commit's author", self.author), ("who triggered the run", self.triggered_by)]
        return [(role, p) for role, p in out if p is not None]


def same_person(principal: Principal, party: Party) -> str | None:
    """How ``party`` is ``principal`` ("user name", "email", "matrix id", ...), or None."""
    if party.name and party.name == principal.name:
        return "user name"
    if party.email and principal.email and party.email.casefold() == principal.email.casefold():
        return "email"
    for network, chat_id in party.chat.items():
        if principal.chat.get(network) == chat_id:
            return f"{network} id"
    return None


# -- voting --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


def can_vote(policy: ApprovalPolicy, principal: Principal, subject: Subject) -> Verdict:
    """Whether ``principal`` may vote on an approval of ``subject`` under ``policy``, and why."""
    who = principal.name
    if principal.disabled:
        return Verdict(False, f"{who} is disabled")
    entry = policy.entry_for(principal)
    if entry is None:
        named = ", ".join(policy.approvers)
        return Verdict(False, f"{who} is not an approver in this policy (approvers: {named})")
    if not principal.can(Action.APPROVALS_VOTE):
        return Verdict(
            False,
            f"{who} is named ({entry}) but may not vote: voting takes the approver or admin "
            f"role ({who} has {roles_text(principal.roles)})",
        )
    if not policy.allow_self_approval:
        for role, party in subject.parties():
            how = same_person(principal, party)
            if how:
                return Verdict(
                    False,
                    f"self-approval: {who} is {role} (same {how}) and this policy does not "
                    "allow self-approval",
                )
    return Verdict(True, f"{who} may vote (named as {entry})")


@dataclass(frozen=True)
class Vote:
    voter: str  # a user name
    decision: str  # approve | reject
    at: float = 0.0
    comment: str | None = None

    def __post_init__(self) -> None:
        if self.decision not in (APPROVE, REJECT):
            raise ValueError(f"a vote is {APPROVE!r} or {REJECT!r}, not {self.decision!r}")


def tally(policy: ApprovalPolicy, votes: Iterable[Vote]) -> State:
    """``rejected`` if anyone rejected; ``approved`` once ``required`` distinct voters approved;
    else ``pending``. Votes are counted as cast (checked by :func:`cast` when they were)."""
    approvers: set[str] = set()
    for v in votes:
        if v.decision == REJECT:
            return "rejected"
        approvers.add(v.voter)
    return "approved" if len(approvers) >= policy.required else "pending"


@dataclass(frozen=True)
class Cast:
    """The outcome of one attempt to vote: ``votes`` and ``state`` as they are now, ``changed``
    if a vote was added (False for a refusal and for a repeat of the same vote)."""

    verdict: Verdict
    votes: tuple[Vote, ...]
    state: State
    changed: bool

    @property
    def ok(self) -> bool:
        return self.verdict.ok


def cast(
    policy: ApprovalPolicy,
    votes: Sequence[Vote],
    principal: Principal,
    subject: Subject,
    decision: str,
    *,
    comment: str | None = None,
    at: float | None = None,
) -> Cast:
    """Add ``principal``'s vote to ``votes`` if the rules allow it. A repeat of the voter's own
    vote is accepted and changes nothing (the first comment stays); a different second vote is
    refused; so is any vote once the approval is decided."""
    if decision not in (APPROVE, REJECT):
        raise ValueError(f"a vote is {APPROVE!r} or {REJECT!r}, not {decision!r}")
    votes = tuple(votes)
    state = tally(policy, votes)
    mine = next((v for v in votes if v.voter == principal.name), None)
    if mine is not None:
        if mine.decision == decision:
            return Cast(
                Verdict(True, f"{principal.name} already voted {decision}"), votes, state, False
            )
        refusal = f"{principal.name} already voted ({mine.decision}); a vote cannot be changed"
        return Cast(Verdict(False, refusal), votes, state, False)
    if state != "pending":
        return Cast(Verdict(False, f"the approval is already {state}"), votes, state, False)
    verdict = can_vote(policy, principal, subject)
    if not verdict:
        return Cast(verdict, votes, state, False)
    new = (*votes, Vote(principal.name, decision, time.time() if at is None else at, comment))
    return Cast(verdict, new, tally(policy, new), True)
