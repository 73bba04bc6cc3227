"""Roles and the one authorization check: effective roles come from the user and its groups;
a refusal names the role it takes; the table fails closed."""

from __future__ import annotations

import pytest

from switchback.identity import (
    PERMISSIONS,
    Action,
    Directory,
    Forbidden,
    Principal,
    Role,
    UnknownAction,
    actions_for,
    authorize,
    permitted,
)


def test_roles_come_from_the_user_and_both_kinds_of_group_membership(directory: Directory) -> None:
    alice, bob = directory.user("alice"), directory.user("bob")
    assert alice is not None and bob is not None
    # alice lists the group herself; the group lists bob: both are members.
    assert alice.roles == {Role.OPERATOR, Role.APPROVER}
    assert bob.roles == {Role.VIEWER, Role.APPROVER}
    assert alice.role_sources[Role.APPROVER] == ("group:release-managers",)
    assert alice.role_sources[Role.OPERATOR] == ("own",)
    assert directory.members("release-managers") == {"alice", "bob"}


def test_a_group_role_is_enough_to_be_authorized(directory: Directory) -> None:
    bob = directory.user("bob")
    assert bob is not None
    authorize(bob, Action.APPROVALS_VOTE)  # only from the group
    authorize(bob, "transactions.read")  # his own role


def test_forbidden_says_which_role_is_needed_and_which_the_principal_has(
    directory: Directory,
) -> None:
    bob = directory.user("bob")
    assert bob is not None
    with pytest.raises(Forbidden) as exc:
        authorize(bob, "transactions.decide")
    assert str(exc.value) == (
        "bob may not transactions.decide (decide on a transaction: rollforward, rollback, "
        "mark compensated, pause, signal): it takes the operator or admin role; "
        "bob has viewer, approver"
    )
    assert exc.value.principal == "bob" and exc.value.action == "transactions.decide"
    with pytest.raises(Forbidden, match="it takes the admin role; nobody has no role"):
        authorize(Principal("nobody"), Action.PROJECTS_ADMIN)


def test_a_disabled_user_may_do_nothing_whatever_its_roles(directory: Directory) -> None:
    carol = directory.user("carol")
    assert carol is not None and Role.APPROVER in carol.roles
    with pytest.raises(Forbidden, match="carol is disabled"):
        authorize(carol, Action.APPROVALS_READ)
    assert not permitted(carol, Action.APPROVALS_READ)
    assert not carol.can("approvals.vote")


def test_an_unknown_action_is_refused_even_for_an_admin() -> None:
    admin = Principal("root", roles={"admin"})
    with pytest.raises(UnknownAction, match=r"'transactions\.delete'"):
        authorize(admin, "transactions.delete")
    with pytest.raises(UnknownAction):
        permitted(admin, "nope")


def test_the_table_keeps_its_promises() -> None:
    assert all(Role.ADMIN in p.roles for p in PERMISSIONS.values()), "admin may do everything"
    assert set(PERMISSIONS) == set(Action), "every action has a row"
    viewer = set(actions_for([Role.VIEWER]))
    assert viewer == {a for a in Action if a.endswith(".read")}, "a viewer reads everything, only"
    # An approver by itself votes and reads approvals: nothing else.
    assert set(actions_for([Role.APPROVER])) == {Action.APPROVALS_READ, Action.APPROVALS_VOTE}
    operator = set(actions_for([Role.OPERATOR]))
    assert viewer <= operator
    assert {Action.TRANSACTIONS_DECIDE, Action.RELEASES_START, Action.RELEASES_DECIDE} <= operator
    assert Action.APPROVALS_VOTE not in operator, "deciding is not approving"
    assert not operator & {Action.PROJECTS_ADMIN, Action.IDENTITY_ADMIN, Action.SYSTEM_ADMIN}
