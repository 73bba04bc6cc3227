"""The directory: tokens found by hash (several per user, with expiry), disabled users, chat and
email mapping, SWITCHBACK_ADMIN_TOKENS as admins, and every inconsistency reported at once."""

from __future__ import annotations

import pytest

from switchback.gateway.auth import TokenSet
from switchback.identity import (
    ApprovalPolicy,
    Directory,
    Group,
    InvalidIdentityData,
    Party,
    Role,
    Token,
    Unauthenticated,
    User,
    hash_token,
    new_token,
)

from .conftest import ALICE_OLD_TOKEN, ALICE_TOKEN, BOB_TOKEN, CAROL_TOKEN


def test_authenticate_finds_the_user_and_names_the_token(directory: Directory) -> None:
    alice = directory.authenticate(f"Bearer {ALICE_TOKEN}", now=500.0)
    assert alice is not None
    assert alice.name == "alice" and alice.token == "laptop"
    assert alice.roles == {Role.OPERATOR, Role.APPROVER}
    bob = directory.authenticate(f"bearer {BOB_TOKEN}")
    assert bob is not None and (bob.name, bob.token) == ("bob", "ci")


def test_a_user_has_several_tokens_so_that_it_can_rotate(directory: Directory) -> None:
    old = directory.authenticate(f"Bearer {ALICE_OLD_TOKEN}", now=999.0)
    new = directory.authenticate(f"Bearer {ALICE_TOKEN}", now=999.0)
    assert old is not None and new is not None
    assert (old.name, old.token) == ("alice", "old")
    assert (new.name, new.token) == ("alice", "laptop")


def test_an_expired_token_no_longer_authenticates(directory: Directory) -> None:
    assert directory.authenticate(f"Bearer {ALICE_OLD_TOKEN}", now=1_000.0) is None
    with pytest.raises(Unauthenticated) as exc:
        directory.identify(ALICE_OLD_TOKEN, now=1_000.0)
    assert str(exc.value) == "token 'old' of alice expired at 1970-01-01T00:16:40Z"
    assert ALICE_OLD_TOKEN not in str(exc.value)
    # The other token of the same user goes on working.
    assert directory.authenticate(f"Bearer {ALICE_TOKEN}", now=1_000.0) is not None


def test_a_disabled_user_cannot_authenticate(directory: Directory) -> None:
    assert directory.authenticate(f"Bearer {CAROL_TOKEN}") is None
    with pytest.raises(Unauthenticated, match=r"^carol is disabled$"):
        directory.identify(CAROL_TOKEN)


@pytest.mark.parametrize(
    "header",
    [None, "", f"Basic {BOB_TOKEN}", "Bearer ", f"Bearer {BOB_TOKEN}x", "Bearer \udcff"],
)
def test_anything_else_is_nobody(directory: Directory, header: str | None) -> None:
    assert directory.authenticate(header) is None
    assert directory.actor(header) is None


def test_unknown_token_message_never_contains_the_token(directory: Directory) -> None:
    secret = new_token()
    with pytest.raises(Unauthenticated) as exc:
        directory.identify(secret)
    assert str(exc.value) == "unknown token" and secret not in str(exc.value)


def test_admin_tokens_answer_as_token_set_did() -> None:
    """SWITCHBACK_ADMIN_TOKENS keeps working: the same cases as tests/gateway's TokenSet test."""
    tokens = {"alice": "s3cret", "bob": "other"}
    old, new = TokenSet(tokens), Directory.from_admin_tokens(tokens)
    for header in (
        "Bearer s3cret",
        "bearer other",
        "Bearer s3cre",
        "Basic s3cret",
        "Bearer ",
        None,
    ):
        assert new.actor(header) == old.actor(header), header
    alice = new.authenticate("Bearer s3cret")
    assert alice is not None and alice.roles == {Role.ADMIN}
    assert alice.origin == "SWITCHBACK_ADMIN_TOKENS" and alice.token == "SWITCHBACK_ADMIN_TOKENS"


def test_chat_ids_and_emails_map_to_users(directory: Directory) -> None:
    assert getattr(directory.by_chat("matrix", "@alice:localhost"), "name", None) == "alice"
    assert getattr(directory.by_chat("slack", "U0ALICE"), "name", None) == "alice"
    assert directory.by_chat("slack", "@alice:localhost") is None  # ids belong to a network
    assert getattr(directory.by_email("ALICE@Example.com"), "name", None) == "alice"
    assert getattr(directory.find(Party(email="bob@example.com")), "name", None) == "bob"
    assert (
        getattr(directory.find(Party(chat={"matrix": "@dave:localhost"})), "name", None) == "dave"
    )
    assert directory.find(Party(email="nobody@example.com")) is None


def test_eligible_voters_are_named_and_hold_the_role(directory: Directory) -> None:
    policy = directory.policy("production")
    assert policy is not None
    # carol holds approver but is disabled and not named; erin is admin but not named.
    assert sorted(p.name for p in directory.eligible_voters(policy)) == ["alice", "bob"]


def _issues(**kwargs: object) -> list[str]:
    directory, issues = Directory.check(**kwargs)  # type: ignore[arg-type]
    assert directory is None
    with pytest.raises(InvalidIdentityData):
        Directory(**kwargs)  # type: ignore[arg-type]
    return [str(i) for i in issues]


def test_every_inconsistency_is_reported_at_once() -> None:
    token = hash_token("sbt_shared")
    issues = _issues(
        users=[
            User("alice", email="a@x.org", groups=["ops", "nope"], chat={"matrix": "@a:x"},
                 tokens=[Token("t", token), Token("t", hash_token("sbt_other"))]),
            User("bob", email="A@X.org", chat={"matrix": "@a:x", "irc": "bob"},
                 tokens=[Token("t", token)]),
            User("alice"),
            User("bad name"),
            User("eve", email="not-an-email", chat={"slack": "eve"}, tokens=[Token("t", "sbt_leaked")]),
        ],
        groups=[Group("ops", members=["zed", "bob", "bob"]), Group("ops")],
        policies=[ApprovalPolicy(["alice"], name="p"), ApprovalPolicy(["bob"], name="p"),
                  ApprovalPolicy(["bob"])],
    )  # fmt: skip
    expected = [
        "users[0].groups[1]: unknown group 'nope'",
        "users[0].tokens[1].name: alice has two tokens named 't' (first at users[0].tokens[0].name)",
        "users[1].email: email 'A@X.org' is also alice's (first at users[0].email)",
        "users[1].chat.matrix: matrix id '@a:x' is also alice's (first at users[0].chat.matrix)",
        "users[1].chat.irc: unknown chat network 'irc' (matrix, slack)",
        "users[1].tokens[0].hash: the same token as alice's token 't' (first at users[0].tokens[0].hash)",
        "users[2].name: duplicate user name 'alice' (first at users[0])",
        "users[3].name: 'bad name' is not a valid user name",
        "users[4].email: 'not-an-email' is not an email address",
        "users[4].chat.slack: 'eve' is not a Slack member id like U024BE7LH",
        "users[4].tokens[0].hash: this is a token, not its hash",
        "groups[0].members[0]: unknown user 'zed'",
        "groups[0].members[2]: member 'bob' listed twice (first at groups[0].members[1])",
        "groups[1].name: duplicate group name 'ops' (first at groups[0])",
        "policies[1].name: duplicate policy name 'p' (first at policies[0])",
        "policies[0].approvers[0]: 'alice' could never vote",
        "policies[2]: a policy in a directory needs a name",
    ]
    for e in expected:
        assert any(i.startswith(e) for i in issues), (e, issues)
    assert "sbt_leaked" not in " ".join(issues)


def test_warnings_point_at_tokens_to_rotate_and_users_without_roles() -> None:
    d = Directory(
        [
            User("alice", roles={"viewer"}, tokens=[
                Token("gone", hash_token("sbt_1"), expires_at=100.0),
                Token("soon", hash_token("sbt_2"), expires_at=100.0 + 3 * 86400),
                Token("fine", hash_token("sbt_3"), expires_at=100.0 + 30 * 86400),
                Token("forever", hash_token("sbt_4")),
            ]),
            User("idle"),
        ]
    )  # fmt: skip
    warnings = [str(w) for w in d.warnings(now=200.0)]
    assert warnings == [
        "users[0].tokens[0]: alice's token 'gone' expired at 1970-01-01T00:01:40Z: remove it",
        "users[0].tokens[1]: alice's token 'soon' expires at 1970-01-04T00:01:40Z: rotate it",
        "users[1]: idle has no role: it can do nothing",
    ]
