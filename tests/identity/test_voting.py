"""Voting: who may vote (named, directly or by group, with the approver or admin role, not
disabled, no self-approval unless allowed), one vote per person, N required, a reject rejects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchback.identity import (
    APPROVE,
    REJECT,
    ApprovalPolicy,
    Directory,
    Party,
    Principal,
    Subject,
    User,
    Vote,
    can_vote,
    cast,
    tally,
)

from .conftest import org

POLICY = ApprovalPolicy(["alice", "group:release-managers"], required=1)
NOBODY = Subject()


def voter(directory: Directory, name: str) -> Principal:
    p = directory.user(name)
    assert p is not None
    return p


def test_named_directly_or_through_a_group_may_vote(directory: Directory) -> None:
    alice = can_vote(POLICY, voter(directory, "alice"), NOBODY)
    assert alice and alice.reason == "alice may vote (named as alice)"
    bob = can_vote(POLICY, voter(directory, "bob"), NOBODY)
    assert bob and bob.reason == "bob may vote (named as group:release-managers)"


def test_not_named_is_refused_even_for_an_admin(directory: Directory) -> None:
    verdict = can_vote(POLICY, voter(directory, "erin"), NOBODY)
    assert not verdict
    assert verdict.reason == (
        "erin is not an approver in this policy (approvers: alice, group:release-managers)"
    )


def test_named_without_the_approver_role_is_refused() -> None:
    d = Directory([User("dave", roles={"viewer", "operator"})])
    verdict = can_vote(ApprovalPolicy(["dave"]), voter(d, "dave"), NOBODY)
    assert not verdict
    assert verdict.reason == (
        "dave is named (dave) but may not vote: voting takes the approver or admin role "
        "(dave has viewer, operator)"
    )


def test_a_named_admin_may_vote() -> None:
    d = Directory([User("root", roles={"admin"})])
    assert can_vote(ApprovalPolicy(["root"]), voter(d, "root"), NOBODY)


def test_a_disabled_user_is_refused(directory: Directory) -> None:
    policy = ApprovalPolicy(["carol"])
    verdict = can_vote(policy, voter(directory, "carol"), NOBODY)
    assert not verdict and verdict.reason == "carol is disabled"


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        (Subject(author=Party(name="alice")), "alice is the commit's author (same user name)"),
        (Subject(triggered_by=Party(name="alice")), "alice is who triggered the run (same user name)"),
        (Subject(author=Party.from_git("A. Liddell <ALICE@example.com>")), "alice is the commit's author (same email)"),
        (Subject(triggered_by=Party(chat={"matrix": "@alice:localhost"})), "alice is who triggered the run (same matrix id)"),
        (Subject(author=Party(chat={"slack": "U0ALICE"})), "alice is the commit's author (same slack id)"),
    ],
)  # fmt: skip
def test_self_approval_is_refused(directory: Directory, subject: Subject, reason: str) -> None:
    verdict = can_vote(POLICY, voter(directory, "alice"), subject)
    assert not verdict
    assert verdict.reason == (
        f"self-approval: {reason} and this policy does not allow self-approval"
    )
    allowed = ApprovalPolicy(POLICY.approvers, allow_self_approval=True)
    assert can_vote(allowed, voter(directory, "alice"), subject)


def test_the_trigger_given_as_a_principal_is_matched(directory: Directory) -> None:
    subject = Subject(triggered_by=Party.of(voter(directory, "alice")))
    verdict = can_vote(POLICY, voter(directory, "alice"), subject)
    assert not verdict and "alice is who triggered the run (same user name)" in verdict.reason


def test_someone_else_s_change_is_not_self_approval(directory: Directory) -> None:
    subject = Subject(
        author=Party.from_git("Bob <bob@example.com>"),
        triggered_by=Party(name="bob", chat={"matrix": "@alice:elsewhere"}),
    )
    assert can_vote(POLICY, voter(directory, "alice"), subject)
    # A person's display name is not an identity: "Alice Liddell" could be anyone.
    assert can_vote(
        POLICY, voter(directory, "alice"), Subject(author=Party.from_git("Alice Liddell <x@y>"))
    )


def test_n_approvals_by_distinct_people_are_required() -> None:
    d = org()
    policy = ApprovalPolicy(["alice", "group:release-managers"], required=2)
    first = cast(policy, (), voter(d, "alice"), NOBODY, APPROVE, comment="lgtm", at=1.0)
    assert first.ok and first.changed and first.state == "pending"
    again = cast(policy, first.votes, voter(d, "alice"), NOBODY, APPROVE, comment="lgtm!!", at=2.0)
    assert again.ok and not again.changed and again.votes == first.votes
    assert again.verdict.reason == "alice already voted approve"
    assert again.state == "pending", "a double click is not a second approval"
    second = cast(policy, again.votes, voter(d, "bob"), NOBODY, APPROVE, at=3.0)
    assert second.changed and second.state == "approved"
    assert [(v.voter, v.decision, v.at, v.comment) for v in second.votes] == [
        ("alice", APPROVE, 1.0, "lgtm"),
        ("bob", APPROVE, 3.0, None),
    ]


def test_a_second_different_vote_is_refused() -> None:
    d = org()
    policy = ApprovalPolicy(["alice", "group:release-managers"], required=2)
    first = cast(policy, (), voter(d, "alice"), NOBODY, APPROVE)
    change = cast(policy, first.votes, voter(d, "alice"), NOBODY, REJECT)
    assert not change.ok and not change.changed and change.votes == first.votes
    assert change.verdict.reason == "alice already voted (approve); a vote cannot be changed"


def test_one_reject_rejects_and_closes_the_vote() -> None:
    d = org()
    policy = ApprovalPolicy(["alice", "group:release-managers"], required=2)
    first = cast(policy, (), voter(d, "alice"), NOBODY, APPROVE)
    veto = cast(policy, first.votes, voter(d, "bob"), NOBODY, REJECT, comment="not tonight")
    assert veto.changed and veto.state == "rejected"
    late = cast(policy, veto.votes, voter(d, "alice"), NOBODY, APPROVE)
    assert late.ok and not late.changed, "alice's repeat is still idempotent"
    newcomer = Directory([User("zoe", roles={"approver"})]).user("zoe")
    assert newcomer is not None
    closed = cast(ApprovalPolicy(["zoe", "alice"]), veto.votes, newcomer, NOBODY, APPROVE)
    assert not closed.ok and closed.verdict.reason == "the approval is already rejected"


def test_a_refused_vote_changes_nothing(directory: Directory) -> None:
    result = cast(POLICY, (), voter(directory, "erin"), NOBODY, APPROVE)
    assert not result.ok and not result.changed and result.votes == () and result.state == "pending"
    with pytest.raises(ValueError, match="'approve' or 'reject'"):
        cast(POLICY, (), voter(directory, "alice"), NOBODY, "maybe")


# -- properties ------------------------------------------------------------------------------

VOTERS = ["v0", "v1", "v2", "v3", "v4"]
votes_st = st.lists(
    st.builds(Vote, st.sampled_from(VOTERS), st.sampled_from([APPROVE, REJECT])), max_size=8
)


@given(votes=votes_st, required=st.integers(1, 5), data=st.data())
def test_tally_does_not_depend_on_the_order_of_votes(
    votes: list[Vote], required: int, data: st.DataObject
) -> None:
    policy = ApprovalPolicy(VOTERS, required=required)
    shuffled = data.draw(st.permutations(votes))
    assert tally(policy, votes) == tally(policy, shuffled)


@given(votes=votes_st, required=st.integers(1, 5))
def test_tally_rules(votes: list[Vote], required: int) -> None:
    policy = ApprovalPolicy(VOTERS, required=required)
    state = tally(policy, votes)
    approvers = {v.voter for v in votes if v.decision == APPROVE}
    if any(v.decision == REJECT for v in votes):
        assert state == "rejected"
    else:
        assert state == ("approved" if len(approvers) >= required else "pending")


@given(
    attempts=st.lists(st.tuples(st.sampled_from(VOTERS), st.sampled_from([APPROVE, REJECT]))),
    required=st.integers(1, 5),
)
def test_cast_keeps_one_vote_per_person_and_stops_when_decided(
    attempts: list[tuple[str, str]], required: int
) -> None:
    d = Directory([User(n, roles={"approver"}) for n in VOTERS])
    policy = ApprovalPolicy(VOTERS, required=required)
    votes: tuple[Vote, ...] = ()
    for name, decision in attempts:
        before = tally(policy, votes)
        result = cast(policy, votes, voter(d, name), NOBODY, decision)
        assert result.state == tally(policy, result.votes)
        if result.changed:
            assert before == "pending" and len(result.votes) == len(votes) + 1
        else:
            assert result.votes == votes
        votes = result.votes
        voters = [v.voter for v in votes]
        assert len(voters) == len(set(voters))
