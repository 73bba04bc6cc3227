"""Approval policies: every problem with a clear message, on their own and against a directory."""

from __future__ import annotations

import pytest

from switchback.identity import (
    ApprovalPolicy,
    Directory,
    Group,
    InvalidIdentityData,
    User,
    validate_policy,
)

from .conftest import org


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"approvers": []}, "approvers: no approver: list user names and group:NAME entries"),
        ({"approvers": ["alice"], "required": 0}, "required: must be at least 1"),
        ({"approvers": ["alice"], "required": True}, "required: True is not a whole number"),
        ({"approvers": ["alice", "bob"], "required": 3}, "required: is 3 but the policy names only 2 approver(s)"),
        ({"approvers": ["alice", "alice"]}, "approvers[1]: 'alice' listed twice (first at approvers[0])"),
        ({"approvers": ["group:"]}, "approvers[0]: 'group:' is not a group name"),
        ({"approvers": ["a b"]}, "approvers[0]: 'a b' is not a user name"),
        ({"approvers": ["alice"], "timeout": 0}, "timeout: 0 is not a positive number of seconds"),
        ({"approvers": ["alice"], "on_timeout": "approve"}, "on_timeout: 'approve' is not allowed: a gate that opens when nobody answers is a timer"),
        ({"approvers": ["alice"], "on_timeout": "ignore"}, "on_timeout: 'ignore' is not one of reject or suspend"),
        ({"approvers": ["alice"], "allow_self_approval": "yes"}, "allow_self_approval: must be true or false"),
    ],
)  # fmt: skip
def test_a_bad_policy_says_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidIdentityData) as exc:
        ApprovalPolicy(**kwargs)  # type: ignore[arg-type]
    assert any(str(i).startswith(message) for i in exc.value.issues), exc.value.issues


def test_a_policy_with_groups_may_require_more_than_it_names() -> None:
    policy = ApprovalPolicy(["group:release-managers"], required=2, on_timeout="suspend")
    assert policy.deadline(100.0) == 100.0 + 30 * 86400  # GitHub's 30 days by default
    assert validate_policy(policy, org()) == []


def test_validation_against_a_directory() -> None:
    d = Directory(
        [
            User("alice", roles={"approver"}),
            User("bob", roles={"viewer"}),
            User("carol", roles={"approver"}, disabled=True),
            User("dan", roles={"viewer"}),
        ],
        [Group("devs", members=["dan"]), Group("empty", roles={"approver"})],
    )

    def issues(approvers: list[str], required: int = 1) -> list[str]:
        return [str(i) for i in validate_policy(ApprovalPolicy(approvers, required=required), d)]

    assert issues(["zed", "group:nope"]) == [
        "approvers[0]: unknown user 'zed'",
        "approvers[1]: unknown group 'nope'",
    ]
    assert issues(["bob"]) == [
        "approvers[0]: 'bob' could never vote: voting takes the approver or admin role "
        "(bob has viewer)"
    ]
    assert issues(["group:devs"]) == [
        "approvers[0]: no member of group 'devs' can vote: voting takes the approver or admin "
        "role (give it to the group or to its members)"
    ]
    # A disabled approver is not a mistake in the policy, but does not count.
    assert issues(["alice", "carol"], required=2) == [
        "required: is 2 but only 1 user(s) can vote under this policy: alice"
    ]
    assert issues(["group:empty"]) == [
        "required: is 1 but only 0 user(s) can vote under this policy"
    ]
    assert issues(["alice", "carol"]) == []
