"""Webhooks from git servers: GitHub- and Gitea-format ``push`` and ``pull_request`` events, the
signature that proves who sent them, and what each one triggers.

What the HTTP layer does with a request to ``POST /hooks/git/{project}``, in order
(:func:`receive` does the first three):

1. **verify** the body's HMAC-SHA256 with the project's secret: ``X-Hub-Signature-256:
   sha256=<hex>`` (GitHub, Gitea, our own hook) or Gitea's ``X-Gitea-Signature: <hex>``, compared
   in constant time. A missing or bad signature raises :class:`SignatureError` → 401, and
   nothing is parsed, let alone started. SHA-1 (``X-Hub-Signature``) is not accepted.
2. **parse** it into one :class:`GitEvent` whatever the server's dialect
   (:class:`InvalidEvent` → 400 for a body that is not such an event).
3. **decide** (:func:`decide`) against the pipeline's ``triggers``: a push to a deploy branch →
   the whole pipeline; a push elsewhere and a pull request opened or updated → CI only; a
   deleted branch, a tag, a pull request closed, a ping, an unknown event → nothing, with the
   reason (→ 202 with it).
4. start the run with :attr:`GitEvent.delivery` as its idempotency key: a redelivery (the git
   server's "redeliver" button, a retry after a timeout) finds the same run.

A delivery without an id (a hand-made ``curl``) gets ``sha256:<digest of the body>`` as its id:
the same body is the same push, so replaying it still finds the same run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from switchback.identity import Party, Subject
from switchback.valuestream.globs import matches_any
from switchback.valuestream.pipeline import Triggers

ZERO = "0" * 40
HEADS, TAGS = "refs/heads/", "refs/tags/"
# Pull request actions that put new code up for review (GitHub: synchronize; Gitea: synchronized).
PR_CODE_ACTIONS = frozenset({"opened", "reopened", "synchronize", "synchronized"})
MAX_BODY = 25 << 20  # GitHub caps payloads at 25 MB


class WebhookError(Exception):
    """Base of this module's errors; ``status`` is the HTTP answer they call for."""

    status = 400


class SignatureError(WebhookError):
    """Missing or wrong signature: the request is not from the git server (or the secret
    differs). Nothing in the body is looked at."""

    status = 401


class InvalidEvent(WebhookError):
    status = 400


def new_secret() -> str:
    """A webhook secret for a new project (256 bits, hex: pastes into any git server's form)."""
    return secrets.token_hex(32)


# -- signatures ----------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    name = name.lower()
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: the ``X-Hub-Signature-256`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, headers: Mapping[str, str]) -> str:
    """Return the header that was checked, or raise :class:`SignatureError` saying why. The
    first signature header present decides (a bad ``X-Hub-Signature-256`` is not rescued by
    another header)."""
    if not secret:
        raise SignatureError("this project has no webhook secret: every delivery is refused")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    hub = _header(headers, "X-Hub-Signature-256")
    if hub is not None:
        algorithm, _, given = hub.strip().partition("=")
        if algorithm != "sha256" or not given:
            raise SignatureError("X-Hub-Signature-256 is not of the form sha256=<hex>")
        if not hmac.compare_digest(given.lower().encode(), expected.encode()):
            raise SignatureError("X-Hub-Signature-256 does not match the body and the secret")
        return "X-Hub-Signature-256"
    gitea = _header(headers, "X-Gitea-Signature") or _header(headers, "X-Gogs-Signature")
    if gitea is not None:
        if not hmac.compare_digest(gitea.strip().lower().encode(), expected.encode()):
            raise SignatureError("X-Gitea-Signature does not match the body and the secret")
        return "X-Gitea-Signature"
    if _header(headers, "X-Hub-Signature") is not None:
        raise SignatureError(
            "only a SHA-1 signature (X-Hub-Signature) was sent; SHA-1 is not accepted: set the "
            "webhook's secret so that the server sends X-Hub-Signature-256"
        )
    raise SignatureError("no signature: set the webhook's secret (X-Hub-Signature-256)")


# -- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    login: str | None = None  # the git server's user name
    email: str | None = None
    name: str | None = None  # a person's name as written in a commit

    def party(self) -> Party:
        return Party(name=self.login or None, email=self.email or None)


@dataclass(frozen=True)
class PullRequest:
    number: int
    action: str
    head_commit: str
    head_ref: str  # the branch proposed
    base_ref: str  # the branch it would merge into
    title: str = ""


@dataclass(frozen=True)
class GitEvent:
    """One delivery, whatever the git server's dialect."""

    project: str
    kind: str  # push | pull_request | ping | any other event name (triggers nothing)
    delivery: str  # the idempotency key of the run it starts
    source: Literal["github", "gitea", "unknown"] = "unknown"
    ref: str | None = None  # refs/heads/main, refs/tags/v1
    before: str | None = None
    after: str | None = None  # the commit to run
    sender: Person | None = None  # who pushed or acted
    head_message: str | None = None
    head_author: Person | None = None
    forced: bool = False
    pull_request: PullRequest | None = None

    @property
    def branch(self) -> str | None:
        ref = self.ref or ""
        return ref[len(HEADS) :] if ref.startswith(HEADS) else None

    @property
    def tag(self) -> str | None:
        ref = self.ref or ""
        return ref[len(TAGS) :] if ref.startswith(TAGS) else None

    @property
    def deleted(self) -> bool:
        return self.kind == "push" and self.after == ZERO

    def subject(self) -> Subject:
        """Who the approval rules must keep apart from the voters: the head commit's author (as
        the event tells it; a run reads it again from git) and the sender."""
        author = self.head_author.party() if self.head_author else None
        return Subject(author=author, triggered_by=self.sender.party() if self.sender else None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "branch": self.branch, "tag": self.tag}


def _event_name(
    headers: Mapping[str, str],
) -> tuple[str | None, Literal["github", "gitea", "unknown"]]:
    gitea = _header(headers, "X-Gitea-Event") or _header(headers, "X-Gogs-Event")
    if gitea:
        return gitea.strip(), "gitea"
    github = _header(headers, "X-GitHub-Event")
    if github:
        return github.strip(), "github"
    return None, "unknown"


def delivery_id(headers: Mapping[str, str], body: bytes) -> str:
    for name in ("X-GitHub-Delivery", "X-Gitea-Delivery", "X-Gogs-Delivery"):
        value = _header(headers, name)
        if value and value.strip():
            return value.strip()[:200]
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _person(data: Any, *, name_is_login: bool = False) -> Person | None:
    """A user object of either dialect; GitHub's ``pusher`` is ``{name: <login>, email}``."""
    if not isinstance(data, dict):
        return None
    login = (
        data.get("login") or data.get("username") or (data.get("name") if name_is_login else None)
    )
    return Person(
        login=_str(login), email=_str(data.get("email")), name=_str(data.get("full_name"))
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _sha(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) not in (40, 64):
        raise InvalidEvent(f"{what} is not a commit id: {value!r}")
    try:
        int(value, 16)
    except ValueError:
        raise InvalidEvent(f"{what} is not a commit id: {value!r}") from None
    return value.lower()


def parse_event(project: str, headers: Mapping[str, str], body: bytes) -> GitEvent:
    """The event in ``body`` (already verified). :class:`InvalidEvent` if it is not JSON, or
    not the event its header names."""
    if len(body) > MAX_BODY:
        raise InvalidEvent(f"the body is {len(body)} bytes: more than {MAX_BODY}")
    name, source = _event_name(headers)
    delivery = delivery_id(headers, body)
    if name is None:
        raise InvalidEvent("no event name (X-GitHub-Event or X-Gitea-Event)")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"the body is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidEvent("the body is not a JSON object")
    base = {"project": project, "kind": name, "delivery": delivery, "source": source}
    if name == "push":
        return _push(base, data)
    if name == "pull_request":
        return _pull_request(base, data)
    return GitEvent(**base, sender=_person(data.get("sender")))


def _push(base: dict[str, Any], data: dict[str, Any]) -> GitEvent:
    ref = data.get("ref")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise InvalidEvent(f"push event: 'ref' is not a ref: {ref!r}")
    head = data.get("head_commit") if isinstance(data.get("head_commit"), dict) else None
    commits = data.get("commits") if isinstance(data.get("commits"), list) else []
    if head is None and commits and isinstance(commits[-1], dict):
        head = commits[-1]  # Gitea before 1.20 sends no head_commit
    author = head.get("author") if head else None
    return GitEvent(
        **base,
        ref=ref,
        before=_sha(data.get("before", ZERO), "push event: 'before'"),
        after=_sha(data.get("after"), "push event: 'after'"),
        sender=_person(data.get("pusher"), name_is_login=True) or _person(data.get("sender")),
        head_message=_str(head.get("message")) if head else None,
        head_author=Person(
            login=_str(author.get("username")),
            email=_str(author.get("email")),
            name=_str(author.get("name")),
        )
        if isinstance(author, dict)
        else None,
        forced=bool(data.get("forced", False)),
    )


def _pull_request(base: dict[str, Any], data: dict[str, Any]) -> GitEvent:
    pr = data.get("pull_request")
    if not isinstance(pr, dict):
        raise InvalidEvent("pull_request event without 'pull_request'")
    number = data.get("number", pr.get("number"))
    if not isinstance(number, int) or isinstance(number, bool):
        raise InvalidEvent(f"pull_request event: 'number' is not a number: {number!r}")
    head = pr.get("head") if isinstance(pr.get("head"), dict) else {}
    target = pr.get("base") if isinstance(pr.get("base"), dict) else {}
    head_sha = _sha(head.get("sha"), "pull_request event: 'pull_request.head.sha'")
    head_ref = _str(head.get("ref")) or ""
    request = PullRequest(
        number=number,
        action=_str(data.get("action")) or "",
        head_commit=head_sha,
        head_ref=head_ref.removeprefix(HEADS),
        base_ref=(_str(target.get("ref")) or "").removeprefix(HEADS),
        title=_str(pr.get("title")) or "",
    )
    return GitEvent(
        **base,
        ref=f"refs/pull/{number}/head",
        after=head_sha,
        sender=_person(data.get("sender")),
        pull_request=request,
    )


# -- what an event triggers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """``what``: ``pipeline`` (CI, build, every environment), ``ci`` (CI only) or ``nothing``;
    ``reason`` says why, in a sentence the pusher sees."""

    what: Literal["pipeline", "ci", "nothing"]
    reason: str
    commit: str | None = None
    ref: str | None = None

    @property
    def starts_run(self) -> bool:
        return self.what != "nothing"


def decide(event: GitEvent, triggers: Triggers, *, default_branch: str = "main") -> Trigger:
    """What ``event`` triggers under ``triggers`` (``default_branch``: the project's branch,
    the deploy branch when the pipeline names none)."""
    if event.kind == "ping":
        return Trigger("nothing", "ping: the webhook reaches switchback; pushes will start runs")
    if event.kind == "push":
        return _decide_push(event, triggers, default_branch)
    if event.kind == "pull_request" and event.pull_request is not None:
        pr = event.pull_request
        if not triggers.pull_requests:
            return Trigger(
                "nothing", f"pull request #{pr.number}: the pipeline runs no CI on pull requests"
            )
        if pr.action not in PR_CODE_ACTIONS:
            return Trigger(
                "nothing", f"pull request #{pr.number} {pr.action or 'event'}: no new code to test"
            )
        return Trigger(
            "ci",
            f"pull request #{pr.number} ({pr.head_ref} → {pr.base_ref}) {pr.action}: CI only",
            pr.head_commit,
            event.ref,
        )
    return Trigger("nothing", f"{event.kind!r} events trigger nothing (only push and pull_request)")


def _decide_push(event: GitEvent, triggers: Triggers, default_branch: str) -> Trigger:
    if event.tag is not None:
        return Trigger("nothing", f"tag {event.tag!r} pushed: tags trigger nothing")
    branch = event.branch
    if branch is None:
        return Trigger("nothing", f"{event.ref} is not a branch: nothing to run")
    if event.deleted:
        return Trigger("nothing", f"branch {branch!r} deleted: nothing to run")
    deploy = triggers.deploy_branches(default_branch)
    if matches_any(deploy, branch):
        return Trigger("pipeline", f"push to {branch}: the whole pipeline", event.after, event.ref)
    if matches_any(triggers.ci_branches, branch):
        return Trigger(
            "ci",
            f"push to {branch}: CI only (the pipeline deploys from {', '.join(deploy)})",
            event.after,
            event.ref,
        )
    return Trigger("nothing", f"push to {branch}: no trigger names this branch")


@dataclass(frozen=True)
class Received:
    event: GitEvent
    trigger: Trigger
    checked: str  # the signature header that was verified


def receive(
    project: str,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    triggers: Triggers,
    *,
    default_branch: str = "main",
) -> Received:
    """Verify, parse and decide, in that order (see the module's doc)."""
    checked = verify_signature(secret, body, headers)
    event = parse_event(project, headers, body)
    return Received(event, decide(event, triggers, default_branch=default_branch), checked)
