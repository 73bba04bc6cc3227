"""The git wrappers against real repositories: a mirror that follows a path or a file:// URL,
refs, commits, files at a commit, clean checkouts of an exact commit and their removal, and each
kind of bad input as its own error."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from switchback.valuestream import (
    FileNotInCommit,
    Mirror,
    NoPipelineFile,
    RepoUnavailable,
    UnknownRef,
    WorkDirError,
    ls_remote,
    resolve_remote,
)
from switchback.valuestream.git import GitTimeout, git

from .conftest import PIPELINE, WorkRepo, run_git


@pytest.fixture
async def mirror(bare: Path, tmp_path: Path) -> Mirror:
    m = Mirror(bare, tmp_path / "data" / "git" / "app.git")
    await m.fetch()
    return m


async def test_a_mirror_resolves_branches_tags_and_commit_ids(
    work: WorkRepo, bare: Path, tmp_path: Path
) -> None:
    first = work.head()
    second = work.commit({"app/hello.py": "def a(ctx):\n    return 2\n"}, "second")
    work.git("tag", "-a", "v1", "-m", "release 1", first)  # annotated: resolves to the commit
    work.git("push", "--quiet", "origin", "main", "v1")
    m = Mirror(f"file://{bare}", tmp_path / "mirror.git")
    await m.fetch()
    assert await m.resolve("main") == second
    assert await m.resolve("refs/heads/main") == second
    assert await m.resolve("v1") == first
    assert await m.resolve(first) == first
    assert await m.resolve(first[:10]) == first


async def test_fetch_follows_the_remote_new_commits_and_deleted_branches(
    work: WorkRepo, bare: Path, mirror: Mirror
) -> None:
    work.git("push", "--quiet", "origin", "main:feature")
    await mirror.fetch()
    assert await mirror.resolve("feature") == work.head()
    newer = work.commit({"README.md": "# changed\n"}, "newer")
    work.git("push", "--quiet", "origin", "main", ":feature")
    await mirror.fetch()
    assert await mirror.resolve("main") == newer
    with pytest.raises(UnknownRef):
        await mirror.resolve("feature")


async def test_a_commit_s_message_author_and_time(work: WorkRepo, mirror: Mirror) -> None:
    info = await mirror.commit("main")
    assert info.sha == work.head()
    assert info.message == "first commit\n\nwith a body"
    assert info.subject == "first commit"
    assert (info.author_name, info.author_email) == ("Alice Liddell", "alice@example.com")
    assert info.author == "Alice Liddell <alice@example.com>"
    assert (info.committer_name, info.committer_email) == ("Bob", "bob@example.com")
    assert info.committed_at == 1_700_000_000.0
    assert info.parents == ()


async def test_a_file_at_a_commit_without_a_checkout(
    work: WorkRepo, bare: Path, mirror: Mirror
) -> None:
    first = work.head()
    work.commit({".switchback/pipeline.yaml": None}, "drop the pipeline")
    work.git("push", "--quiet", "origin", "main")
    await mirror.fetch()
    assert await mirror.read_pipeline(first) == PIPELINE
    assert (await mirror.read_file(first, "app/hello.py")).startswith(b"def a(ctx)")
    with pytest.raises(NoPipelineFile, match="has no pipeline file"):
        await mirror.read_pipeline("main")
    with pytest.raises(FileNotInCommit, match=r"no file 'app/nope\.py'"):
        await mirror.read_file(first, "app/nope.py")
    with pytest.raises(FileNotInCommit):  # a folder is not a file
        await mirror.read_file(first, "app")


@pytest.mark.parametrize("ref", ["nope", "0" * 40, "-rf", "main..HEAD", "a b", "main~1", ""])
async def test_an_unknown_or_invalid_ref_is_unknown_ref(mirror: Mirror, ref: str) -> None:
    with pytest.raises(UnknownRef):
        await mirror.resolve(ref)


@pytest.mark.parametrize(
    "url",
    [
        "/nonexistent/repo.git",
        "file:///nonexistent/repo.git",
        "http://127.0.0.1:1/x.git",
        "ext::sh -c touch% /tmp/switchback-ext-pwned",  # a URL that would run a command
    ],
)
async def test_a_repository_that_cannot_be_fetched(tmp_path: Path, url: str) -> None:
    m = Mirror(url, tmp_path / "mirror.git")
    with pytest.raises(RepoUnavailable, match="cannot fetch"):
        await m.fetch()
    with pytest.raises(RepoUnavailable):
        await m.resolve("main")  # nothing fetched: said so, not "unknown ref"
    with pytest.raises(RepoUnavailable, match="cannot read repository"):
        await ls_remote(url)
    assert not Path("/tmp/switchback-ext-pwned").exists()  # the ext:: URL ran nothing


async def test_a_folder_that_is_not_a_repository(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepoUnavailable):
        await Mirror(tmp_path / "plain", tmp_path / "m.git").fetch()


async def test_resolve_without_a_copy(work: WorkRepo, bare: Path) -> None:
    work.git("tag", "-a", "v1", "-m", "one")
    work.git("push", "--quiet", "origin", "v1")
    assert await resolve_remote(str(bare), "main") == work.head()
    assert await resolve_remote(str(bare), "v1") == work.head()  # peeled, not the tag object
    with pytest.raises(UnknownRef):
        await resolve_remote(str(bare), "nope")


async def test_a_checkout_is_the_exact_commit_and_its_removal_leaves_nothing(
    work: WorkRepo, bare: Path, mirror: Mirror, tmp_path: Path
) -> None:
    first = work.head()
    work.commit({"app/hello.py": "changed\n"}, "second")
    work.git("push", "--quiet", "origin", "main")
    await mirror.fetch()
    dest = await mirror.checkout(first, tmp_path / "runs" / "r1" / "src")
    assert (dest / "app" / "hello.py").read_text().startswith("def a(ctx)")
    assert run_git("rev-parse", "HEAD", cwd=dest) == first
    assert run_git("status", "--porcelain", cwd=dest) == ""
    assert dest in await mirror.worktrees()
    (dest / "build-output.txt").write_text("what a CI step wrote")
    (dest / "app" / "hello.py").write_text("modified by a step")
    assert await mirror.remove_checkout(dest) is True
    assert not dest.exists()
    assert await mirror.worktrees() == []
    assert await mirror.remove_checkout(dest) is False  # an UNDO that runs twice


async def test_a_checkout_deleted_by_hand_is_forgotten(mirror: Mirror, tmp_path: Path) -> None:
    dest = await mirror.checkout("main", tmp_path / "w")
    run_git("worktree", "list", cwd=dest)  # the mirror knows it
    shutil.rmtree(dest)
    assert await mirror.remove_checkout(dest) is False
    assert await mirror.worktrees() == []
    again = await mirror.checkout("main", dest)  # the same place can be used again
    assert (again / "README.md").exists()


async def test_checkout_refuses_a_folder_in_use(mirror: Mirror, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(WorkDirError, match="not empty"):
        await mirror.checkout("main", busy)
    with pytest.raises(WorkDirError, match="not a work dir"):
        await mirror.remove_checkout(busy)  # never deletes a folder that is not its own
    assert (busy / "keep.txt").read_text() == "mine"


async def test_commits_between_two_deployments(work: WorkRepo, bare: Path, mirror: Mirror) -> None:
    first = work.head()
    a = work.commit({"a.txt": "a"}, "a")
    b = work.commit({"b.txt": "b"}, "b")
    work.git("push", "--quiet", "origin", "main")
    await mirror.fetch()
    assert await mirror.commits_between(first, "main") == [b, a]
    assert await mirror.commits_between(None, "main") == [b, a, first]


async def test_a_git_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    # `git hash-object --stdin` waits for stdin that never ends within the timeout.
    fifo = tmp_path / "never"
    os.mkfifo(fifo)
    with pytest.raises(GitTimeout, match="took longer than"):
        await git("hash-object", str(fifo), timeout=0.5)


async def test_fetch_of_a_pull_request_ref(work: WorkRepo, bare: Path, mirror: Mirror) -> None:
    proposed = work.commit({"pr.txt": "proposed"}, "a proposal")
    work.git("push", "--quiet", "origin", f"{proposed}:refs/pull/7/head")
    work.git("reset", "--quiet", "--hard", "HEAD~1")
    await mirror.fetch("+refs/pull/7/head:refs/pull/7/head")
    assert await mirror.resolve("refs/pull/7/head") == proposed
    with pytest.raises(UnknownRef, match="has no"):
        await mirror.fetch("+refs/pull/8/head:refs/pull/8/head")
