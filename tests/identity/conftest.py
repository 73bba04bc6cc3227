"""Shared material for the identity tests: a small organisation, written once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from switchback.identity import ApprovalPolicy, Directory, Group, Token, User, hash_token

ALICE_TOKEN = "sbt_alice-laptop-0000000000000000000000000000000"
ALICE_OLD_TOKEN = "sbt_alice-old-00000000000000000000000000000000"
BOB_TOKEN = "sbt_bob-0000000000000000000000000000000000000000"
CAROL_TOKEN = "sbt_carol-000000000000000000000000000000000000000"


def org(**policy_kwargs: object) -> Directory:
    """alice: operator, and approver through release-managers (her own list);
    bob: viewer, approver through release-managers (the group lists him);
    carol: approver, disabled; dave: viewer only; erin: admin."""
    policies = [ApprovalPolicy(["alice", "group:release-managers"], name="production")]
    return Directory(
        users=[
            User(
                "alice",
                display_name="Alice Liddell",
                email="alice@example.com",
                roles={"operator"},
                groups=["release-managers"],
                chat={"matrix": "@alice:localhost", "slack": "U0ALICE"},
                tokens=[
                    Token("laptop", hash_token(ALICE_TOKEN)),
                    Token("old", hash_token(ALICE_OLD_TOKEN), expires_at=1_000.0),
                ],
            ),
            User(
                "bob",
                email="bob@example.com",
                roles={"viewer"},
                tokens=[Token("ci", hash_token(BOB_TOKEN))],
            ),
            User(
                "carol",
                roles={"approver"},
                disabled=True,
                tokens=[Token("t", hash_token(CAROL_TOKEN))],
            ),
            User(
                "dave",
                email="dave@example.com",
                roles={"viewer"},
                chat={"matrix": "@dave:localhost"},
            ),
            User("erin", roles={"admin"}),
        ],
        groups=[Group("release-managers", roles={"approver"}, members=["bob"])],
        policies=policies,
    )


@pytest.fixture
def directory() -> Directory:
    return org()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path
