"""Voting under an approval policy: who may vote, one vote per person, and the count.

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
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from switchback.identity.policies import APPROVE, ApprovalPolicy
from switchback.identity.principals import Principal
from switchback.identity.roles import Action, roles_text

REJECT = "reject"
State = Literal["pending", "approved", "rejected"]
_GIT_IDENT = re.compile(r"^\s*(.*?)\s*<([^<>]*)>\s*$")


# -- the subject of an approval ------------------------------------------------------------------


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
        """A user as a party (who triggered a run from the API, the CLI or chat)."""
        return cls(name=principal.name, email=principal.email, chat=principal.chat)


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
