"""Webhook deliveries from GitHub and Gitea: the signature (missing, bad, SHA-1 only, the wrong
header rescuing nothing), one GitEvent from either dialect, bad bodies, the delivery id as the
idempotency key, and what each event triggers (with the reason when nothing)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from switchback.identity import ApprovalPolicy, User, can_vote
from switchback.identity.directory import Directory
from switchback.valuestream import (
    InvalidEvent,
    SignatureError,
    Triggers,
    decide,
    new_secret,
    parse_event,
    receive,
    verify_signature,
)
from switchback.valuestream.webhooks import GitEvent, PullRequest, sign

SECRET = "It's a Secret to Everybody"
A, B = "a" * 40, "b" * 40
ZERO = "0" * 40

# Trimmed from the payloads the servers send (GitHub's docs; Gitea 1.21).
GITHUB_PUSH: dict[str, Any] = {
    "ref": "refs/heads/main",
    "before": A,
    "after": B,
    "created": False,
    "deleted": False,
    "forced": False,
    "repository": {"name": "shop", "full_name": "acme/shop"},
    "pusher": {"name": "octocat", "email": "octocat@github.com"},
    "sender": {"login": "octocat", "id": 1},
    "head_commit": {
        "id": B,
        "message": "Fix the checkout",
        "timestamp": "2024-01-02T03:04:05Z",
        "author": {"name": "Alice", "email": "alice@example.com", "username": "alice"},
        "committer": {"name": "GitHub", "email": "noreply@github.com"},
    },
    "commits": [],
}
GITEA_PUSH: dict[str, Any] = {
    "ref": "refs/heads/main",
    "before": A,
    "after": B,
    "commits": [
        {
            "id": B,
            "message": "Fix the checkout\n",
            "author": {"name": "Alice", "email": "alice@example.com", "username": "alice"},
        }
    ],
    "repository": {"name": "shop", "full_name": "acme/shop"},
    "pusher": {
        "id": 2,
        "login": "bob",
        "full_name": "Bob B",
        "email": "bob@example.com",
        "username": "bob",
    },
    "sender": {"id": 2, "login": "bob", "username": "bob"},
}
GITHUB_PR: dict[str, Any] = {
    "action": "opened",
    "number": 7,
    "pull_request": {
        "number": 7,
        "title": "Add a thing",
        "head": {"ref": "feature/thing", "sha": B},
        "base": {"ref": "main", "sha": A},
    },
    "sender": {"login": "octocat"},
}


def delivery(
    event: str,
    payload: dict[str, Any],
    *,
    dialect: str = "github",
    secret: str = SECRET,
    id: str = "d-1",
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    if dialect == "github":
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": id,
            "X-Hub-Signature-256": sign(secret, body),
        }
    else:
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-Gitea-Event": event, "X-Gitea-Delivery": id, "X-Gitea-Signature": digest}
    return headers, body


# -- signatures ----------------------------------------------------------------------------------


def test_github_s_example_signature() -> None:
    # The example in GitHub's docs ("Validating webhook deliveries").
    assert (
        sign(SECRET, b"Hello, World!")
        == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


@pytest.mark.parametrize("dialect", ["github", "gitea"])
def test_a_good_signature_passes(dialect: str) -> None:
    headers, body = delivery("push", GITHUB_PUSH, dialect=dialect)
    checked = verify_signature(SECRET, body, {k.lower(): v for k, v in headers.items()})
    assert checked == ("X-Hub-Signature-256" if dialect == "github" else "X-Gitea-Signature")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda h, b: (h, b + b" "), "does not match"),  # the body changed on the way
        (lambda h, b: ({**h, "X-Hub-Signature-256": sign("wrong", b)}, b), "does not match"),
        (lambda h, b: ({**h, "X-Hub-Signature-256": "sha256="}, b), "not of the form"),
        (lambda h, b: ({**h, "X-Hub-Signature-256": "md5=abc"}, b), "not of the form"),
        (
            lambda h, b: ({k: v for k, v in h.items() if not k.startswith("X-Hub")}, b),
            "no signature",
        ),
        (
            lambda h, b: (
                {"X-Hub-Signature": "sha1=" + hmac.new(SECRET.encode(), b, "sha1").hexdigest()},
                b,
            ),
            "SHA-1 is not accepted",
        ),
        # a bad X-Hub-Signature-256 is not rescued by a good Gitea signature
        (
            lambda h, b: (
                {
                    "X-Hub-Signature-256": sign("wrong", b),
                    "X-Gitea-Signature": sign(SECRET, b)[7:],
                },
                b,
            ),
            "does not match",
        ),
    ],
)
def test_a_missing_or_bad_signature_is_refused(change: Any, reason: str) -> None:
    headers, body = change(*delivery("push", GITHUB_PUSH))
    with pytest.raises(SignatureError, match=reason) as caught:
        verify_signature(SECRET, body, headers)
    assert caught.value.status == 401


def test_a_bad_gitea_signature_is_refused() -> None:
    headers, body = delivery("push", GITEA_PUSH, dialect="gitea", secret="other")
    with pytest.raises(SignatureError, match="X-Gitea-Signature does not match"):
        verify_signature(SECRET, body, headers)


def test_a_project_without_a_secret_accepts_nothing() -> None:
    headers, body = delivery("push", GITHUB_PUSH, secret="")
    with pytest.raises(SignatureError, match="no webhook secret"):
        verify_signature("", body, headers)


def test_a_bad_signature_is_refused_before_the_body_is_read() -> None:
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign("wrong", b"{not json")}
    with pytest.raises(SignatureError):  # not InvalidEvent: nothing was parsed
        receive("shop", SECRET, headers, b"{not json", Triggers())


def test_new_secrets_are_long_and_different() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and len(a) == 64


# -- parsing -------------------------------------------------------------------------------------


def test_a_github_push() -> None:
    event = parse_event("shop", *delivery("push", GITHUB_PUSH))
    assert (event.kind, event.source, event.delivery) == ("push", "github", "d-1")
    assert (event.ref, event.branch, event.tag, event.before, event.after) == (
        "refs/heads/main", "main", None, A, B,
    )  # fmt: skip
    assert event.sender is not None and (event.sender.login, event.sender.email) == (
        "octocat",
        "octocat@github.com",
    )
    assert event.head_message == "Fix the checkout"
    assert event.head_author is not None and event.head_author.email == "alice@example.com"
    assert not event.deleted


def test_a_gitea_push_without_head_commit_takes_the_last_commit() -> None:
    event = parse_event("shop", *delivery("push", GITEA_PUSH, dialect="gitea"))
    assert event.source == "gitea"
    assert event.sender is not None and (event.sender.login, event.sender.name) == ("bob", "Bob B")
    assert event.head_message == "Fix the checkout\n"
    assert event.head_author is not None and event.head_author.login == "alice"


def test_a_pull_request() -> None:
    event = parse_event("shop", *delivery("pull_request", GITHUB_PR))
    assert event.pull_request == PullRequest(7, "opened", B, "feature/thing", "main", "Add a thing")
    assert (event.ref, event.after) == ("refs/pull/7/head", B)


def test_the_subject_keeps_the_author_and_the_pusher_from_approving() -> None:
    event = parse_event("shop", *delivery("push", GITHUB_PUSH))
    policy = ApprovalPolicy(["alice", "octocat", "carol"])
    directory = Directory(
        users=[
            User("alice", email="alice@example.com", roles={"approver"}),
            User("octocat", roles={"approver"}),
            User("carol", roles={"approver"}),
        ]
    )
    verdicts = {
        n: can_vote(policy, directory.user(n), event.subject())
        for n in ("alice", "octocat", "carol")
    }  # type: ignore[arg-type]
    assert "the commit's author" in verdicts["alice"].reason and not verdicts["alice"]
    assert "who triggered the run" in verdicts["octocat"].reason and not verdicts["octocat"]
    assert verdicts["carol"]


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({"X-GitHub-Event": "push"}, b"{not json", "not JSON"),
        ({"X-GitHub-Event": "push"}, b"[1, 2]", "not a JSON object"),
        ({}, b"{}", "no event name"),
        (
            {"X-GitHub-Event": "push"},
            json.dumps({**GITHUB_PUSH, "ref": "main"}).encode(),
            "not a ref",
        ),
        (
            {"X-GitHub-Event": "push"},
            json.dumps({**GITHUB_PUSH, "after": "xyz"}).encode(),
            "not a commit id",
        ),
        (
            {"X-GitHub-Event": "push"},
            json.dumps({**GITHUB_PUSH, "after": "g" * 40}).encode(),
            "not a commit id",
        ),
        (
            {"X-GitHub-Event": "pull_request"},
            json.dumps({"action": "opened"}).encode(),
            "without 'pull_request'",
        ),
        (
            {"X-GitHub-Event": "pull_request"},
            json.dumps({**GITHUB_PR, "number": "7"}).encode(),
            "'number' is not a number",
        ),
    ],
)
def test_a_body_that_is_not_such_an_event(
    headers: dict[str, str], body: bytes, reason: str
) -> None:
    with pytest.raises(InvalidEvent, match=reason) as caught:
        parse_event("shop", headers, body)
    assert caught.value.status == 400


def test_the_delivery_id_is_the_idempotency_key() -> None:
    headers, body = delivery("push", GITHUB_PUSH, id="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert parse_event("shop", headers, body).delivery == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    # a hand-made delivery without an id: the same body is the same key, another body another
    bare = {"X-GitHub-Event": "push"}
    one = parse_event("shop", bare, body).delivery
    assert one == parse_event("shop", bare, body).delivery and one.startswith("sha256:")
    other = json.dumps({**GITHUB_PUSH, "after": A}).encode()
    assert parse_event("shop", bare, other).delivery != one


# -- what an event triggers ----------------------------------------------------------------------


def push(ref: str, after: str = B) -> GitEvent:
    return GitEvent("shop", "push", "d", ref=ref, before=A, after=after)


def pr(action: str) -> GitEvent:
    return GitEvent(
        "shop", "pull_request", "d", ref="refs/pull/7/head", after=B,
        pull_request=PullRequest(7, action, B, "feature/x", "main"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("event", "triggers", "what", "reason"),
    [
        (push("refs/heads/main"), Triggers(("main",)), "pipeline", "the whole pipeline"),
        (push("refs/heads/feature/x"), Triggers(("main",)), "ci", "CI only"),
        (push("refs/heads/release/2"), Triggers(("main", "release/*")), "pipeline", "whole"),
        (push("refs/heads/release/2/fix"), Triggers(("release/*",)), "ci", "CI only"),
        (push("refs/heads/release/old"), Triggers(("release/*", "!release/old")), "ci", "CI only"),
        (
            push("refs/heads/feature/x"),
            Triggers(("main",), ci_branches=()),
            "nothing",
            "no trigger names",
        ),
        (
            push("refs/heads/wip"),
            Triggers(("main",), ci_branches=("feature/**",)),
            "nothing",
            "no trigger",
        ),
        (push("refs/heads/main", ZERO), Triggers(("main",)), "nothing", "branch 'main' deleted"),
        (push("refs/tags/v1"), Triggers(("main",)), "nothing", "tags trigger nothing"),
        (push("refs/notes/commits"), Triggers(("main",)), "nothing", "not a branch"),
        (push("refs/heads/trunk"), Triggers(), "pipeline", "whole"),  # the project's branch
        (push("refs/heads/main"), Triggers(), "ci", "deploys from trunk"),
        (
            pr("opened"),
            Triggers(("main",)),
            "ci",
            "pull request #7 (feature/x → main) opened: CI only",
        ),
        (pr("synchronized"), Triggers(("main",)), "ci", "CI only"),  # Gitea's word
        (pr("closed"), Triggers(("main",)), "nothing", "no new code"),
        (
            pr("opened"),
            Triggers(("main",), pull_requests=False),
            "nothing",
            "no CI on pull requests",
        ),
        (GitEvent("shop", "ping", "d"), Triggers(), "nothing", "webhook reaches switchback"),
        (GitEvent("shop", "issues", "d"), Triggers(), "nothing", "'issues' events trigger nothing"),
    ],
)
def test_what_an_event_triggers(
    event: GitEvent, triggers: Triggers, what: str, reason: str
) -> None:
    trigger = decide(event, triggers, default_branch="trunk")
    assert trigger.what == what
    assert reason in trigger.reason
    assert trigger.starts_run == (what != "nothing")
    if trigger.starts_run:
        assert trigger.commit == B


def test_receive_verifies_parses_and_decides() -> None:
    got = receive("shop", SECRET, *delivery("push", GITHUB_PUSH, id="x-1"), Triggers(("main",)))
    assert (got.checked, got.event.delivery, got.trigger.what) == (
        "X-Hub-Signature-256",
        "x-1",
        "pipeline",
    )
    ping = receive("shop", SECRET, *delivery("ping", {"zen": "Keep it simple."}), Triggers())
    assert ping.trigger.what == "nothing"
