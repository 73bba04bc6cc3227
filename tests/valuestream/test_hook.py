"""The post-receive hook, for real: `git push` to a bare repository with the hook installed posts
a signed push event to a loopback HTTP receiver run by the test, which checks the signature and
the delivery id with the same code the platform will use; the pusher sees the answer."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from switchback.valuestream import (
    HookConflict,
    RepoUnavailable,
    Triggers,
    install_hook,
    parse_event,
    receive,
    verify_signature,
)
from switchback.valuestream.hook import hook_source

from .conftest import WorkRepo, git_env, run_git

SECRET = "s3cret-for-the-test"


@dataclass
class Received:
    path: str
    headers: Message  # case-insensitive, as the platform's server reads them
    body: bytes


@dataclass
class Receiver:
    """A loopback HTTP server standing in for the platform's webhook endpoint."""

    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 202
    answer: dict[str, str] = field(default_factory=lambda: {"message": "run r-1 started"})
    release: threading.Event = field(default_factory=threading.Event)  # a slow server waits on it
    slow: bool = False


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(Received(self.path, self.headers, body))
            if state.slow:
                state.release.wait(30)
            raw = json.dumps(state.answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # a free port, chosen by the kernel
    server.daemon_threads = True
    state = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def push(work: WorkRepo, *refspecs: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "push", "origin", *refspecs],
        cwd=work.path,
        env=git_env(SWITCHBACK_PUSHER="carol"),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_push_posts_a_signed_event_and_the_pusher_sees_the_answer(
    work: WorkRepo, bare: Path, receiver: Receiver
) -> None:
    installed = await install_hook(bare, receiver.url, SECRET, project="shop")
    assert installed.endpoint == f"{receiver.url}/hooks/git/shop"
    before = work.head()
    after = work.commit({"app/hello.py": "def a(ctx):\n    return 2\n"}, "change a line")
    done = push(work, "main")
    assert done.returncode == 0, done.stderr
    assert "remote: switchback: main: run r-1 started" in done.stderr
    [request] = receiver.requests
    assert request.path == "/hooks/git/shop"
    verify_signature(SECRET, request.body, request.headers)  # the platform's own check
    assert request.headers["X-Gitea-Signature"] == request.headers["X-Hub-Signature-256"][7:]
    assert request.headers["X-GitHub-Delivery"] == request.headers["X-Gitea-Delivery"]
    got = receive("shop", SECRET, request.headers, request.body, Triggers(("main",)))
    event = got.event
    assert (event.kind, event.ref, event.before, event.after) == (
        "push",
        "refs/heads/main",
        before,
        after,
    )
    assert event.delivery == request.headers["X-GitHub-Delivery"]
    assert event.head_message == "change a line"
    assert event.head_author is not None and event.head_author.email == "alice@example.com"
    assert event.sender is not None and event.sender.login == "carol"
    assert got.trigger.what == "pipeline" and got.trigger.commit == after


async def test_each_ref_is_one_delivery_with_its_own_id(
    work: WorkRepo, bare: Path, receiver: Receiver
) -> None:
    await install_hook(bare, receiver.url, SECRET, project="shop")
    work.commit({"x.txt": "x"}, "x")
    work.git("tag", "v1")
    done = push(work, "main", "main:feature/a", "v1")
    assert done.returncode == 0, done.stderr
    events = [parse_event("shop", r.headers, r.body) for r in receiver.requests]
    assert sorted(e.ref or "" for e in events) == [
        "refs/heads/feature/a",
        "refs/heads/main",
        "refs/tags/v1",
    ]
    assert len({e.delivery for e in events}) == 3
    created = next(e for e in events if e.branch == "feature/a")
    assert created.before == "0" * 40
    # a new branch lists the commits no other branch had
    receiver.requests.clear()
    work.git("checkout", "--quiet", "-b", "feature/b")
    own = work.commit({"b.txt": "b"}, "only on feature/b")
    assert push(work, "feature/b").returncode == 0
    [request] = receiver.requests
    body = json.loads(request.body)
    assert [c["id"] for c in body["commits"]] == [own] and body["head_commit"]["id"] == own
    # and a deletion is a push with after = 000…
    receiver.requests.clear()
    assert push(work, ":feature/a").returncode == 0
    [deletion] = [parse_event("shop", r.headers, r.body) for r in receiver.requests]
    assert deletion.deleted and deletion.branch == "feature/a"


async def test_a_refused_delivery_is_shown_and_the_push_stays(
    work: WorkRepo, bare: Path, receiver: Receiver
) -> None:
    await install_hook(bare, receiver.url, "another secret", project="shop")
    receiver.status, receiver.answer = 401, {"title": "bad signature"}
    new = work.commit({"x.txt": "x"}, "x")
    done = push(work, "main")
    assert done.returncode == 0
    assert "switchback: main: refused (HTTP 401): bad signature" in done.stderr
    assert run_git("rev-parse", "main", cwd=bare) == new


async def test_an_unreachable_server_does_not_hold_the_push(
    work: WorkRepo, bare: Path, tmp_path: Path
) -> None:
    await install_hook(bare, "http://127.0.0.1:1", SECRET, project="shop", timeout=5)
    new = work.commit({"x.txt": "x"}, "x")
    done = push(work, "main")
    assert done.returncode == 0
    assert "could not reach http://127.0.0.1:1" in done.stderr
    assert "the push itself went through" in done.stderr
    assert run_git("rev-parse", "main", cwd=bare) == new


async def test_a_slow_server_is_given_up_on_at_the_timeout(
    work: WorkRepo, bare: Path, receiver: Receiver
) -> None:
    receiver.slow = True  # answers only when the test lets it (after the push)
    await install_hook(bare, receiver.url, SECRET, project="shop", timeout=1)
    work.commit({"x.txt": "x"}, "x")
    done = push(work, "main")  # returns although the server has not answered
    assert done.returncode == 0
    assert "switchback: main: could not reach" in done.stderr and "timed out" in done.stderr
    assert len(receiver.requests) == 1


async def test_installing_again_updates_and_another_hook_is_kept(
    work: WorkRepo, bare: Path, receiver: Receiver
) -> None:
    first = await install_hook(bare, "http://127.0.0.1:1", SECRET)
    assert first.endpoint.endswith("/hooks/git/app")  # the folder's name without .git
    assert stat.S_IMODE(first.config.stat().st_mode) == 0o600  # the secret: owner only
    assert os.access(first.hook, os.X_OK)
    again = await install_hook(bare, receiver.url, SECRET, project="shop")
    assert again.hook == first.hook and again.replaced is None
    assert json.loads(again.config.read_text())["url"] == receiver.url
    # someone else's hook is not overwritten unless asked, and is kept then
    again.hook.write_text("#!/bin/sh\necho theirs\n")
    with pytest.raises(HookConflict, match="not switchback's"):
        await install_hook(bare, receiver.url, SECRET)
    replaced = await install_hook(bare, receiver.url, SECRET, replace=True)
    assert replaced.replaced is not None and "theirs" in replaced.replaced.read_text()


async def test_core_hooks_path_is_honoured(
    work: WorkRepo, bare: Path, receiver: Receiver, tmp_path: Path
) -> None:
    hooks = tmp_path / "shared-hooks"
    run_git("config", "core.hooksPath", str(hooks), cwd=bare)
    installed = await install_hook(bare, receiver.url, SECRET, project="shop")
    assert installed.hook == hooks / "post-receive"
    work.commit({"x.txt": "x"}, "x")
    assert "run r-1 started" in push(work, "main").stderr


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"url": "ftp://example.com"}, "not an http"),
        ({"secret": ""}, "empty secret"),
        ({"project": "a b"}, "not a project name"),
        ({"timeout": 0}, "timeout must be positive"),
    ],
)
async def test_bad_settings_are_refused(bare: Path, kwargs: dict[str, object], error: str) -> None:
    args: dict[str, object] = {"url": "http://127.0.0.1:1", "secret": SECRET, **kwargs}
    with pytest.raises(ValueError, match=error):
        await install_hook(bare, **args)  # type: ignore[arg-type]


async def test_only_into_a_bare_repository(work: WorkRepo) -> None:
    with pytest.raises(RepoUnavailable, match="not a bare git repository"):
        await install_hook(work.path, "http://127.0.0.1:1", SECRET)


def test_the_hook_uses_nothing_newer_than_python_3_6() -> None:
    source = hook_source()
    ast.parse(source, feature_version=(3, 6))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported <= {
        "hashlib",
        "hmac",
        "json",
        "os",
        "subprocess",
        "sys",
        "time",
        "urllib",
        "uuid",
    }
