"""Git, through the ``git`` program: a project's local mirror, refs, commits, files at a commit,
clean checkouts of an exact commit (the ``post-receive`` hook that starts runs: ``hook.py``).
Longer than most modules on purpose: every git command the value stream runs, and how each of
its failures reads, in one place.

Why the program and not a library (GitPython, pygit2, dulwich): ``git`` is the reference
implementation and what users have — their credentials helpers, SSH config, ``safe.directory``,
protocol versions and hooks all work as they do on their own machine, and every error message is
one they can search for. GitPython itself shells out to it; pygit2 brings libgit2's own idea of
transports and credentials. Every call here is one ``git`` process run with asyncio, a timeout,
and an environment that never prompts (a fetch that needs a password fails instead of hanging a
run forever).

A :class:`Mirror` is a bare repository under the data directory (``<data>/git/<project>.git``)
that follows the project's repository: ``fetch()`` copies its branches and tags (pruned, forced:
the remote is the truth). Everything else reads the mirror, never the remote, so a commit's
message, a file at a commit (the pipeline file, without a checkout) and a checkout all see the
same objects. Operations that write to the mirror are serialised by a lock file (``flock``) so
that two runs — even in two processes — never race on git's ref locks.

Errors are typed: :class:`RepoUnavailable` (cannot fetch: a wrong URL, no network, no access),
:class:`UnknownRef`, :class:`FileNotInCommit` (:class:`NoPipelineFile` for the pipeline file),
:class:`GitTimeout`; each says what was asked and what git said.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchback.valuestream.pipeline import PIPELINE_FILE

FETCH_TIMEOUT = 300.0
LOCAL_TIMEOUT = 60.0
MAX_PIPELINE_BYTES = 1 << 20  # a pipeline file is a page of YAML; refuse to read a blob of GBs
ZERO = "0" * 40
SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{")

# Git never asks anyone anything: no terminal prompt, no askpass program, ssh in batch mode.
_QUIET_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/false",
    "SSH_ASKPASS": "/bin/false",
    "LC_ALL": "C",  # messages in one language: mapped to errors below
    "GIT_OPTIONAL_LOCKS": "0",
}
_UNAVAILABLE = (
    "does not appear to be a git repository",
    "could not read from remote repository",
    "repository not found",
    "not found",
    "unable to access",
    "could not resolve host",
    "connection refused",
    "authentication failed",
    "permission denied",
    "no such file or directory",
)


# -- errors --------------------------------------------------------------------------------------


class GitError(Exception):
    """A git command failed; ``stderr`` holds what git said."""

    def __init__(self, message: str, *, stderr: str = "", command: Sequence[str] = ()) -> None:
        self.stderr = stderr.strip()
        self.command = tuple(command)
        super().__init__(message + (f": {self.stderr}" if self.stderr else ""))


class GitNotInstalled(GitError):
    pass


class GitTimeout(GitError):
    pass


class RepoUnavailable(GitError):
    """The repository cannot be read: a wrong URL or path, no network, no access."""


class UnknownRef(GitError):
    """No branch, tag or commit by that name (or not a valid name at all)."""


class FileNotInCommit(GitError):
    def __init__(self, commit: str, path: str, **kw: Any) -> None:
        self.commit, self.path = commit, path
        super().__init__(f"no file {path!r} at commit {commit[:12]}", **kw)


class NoPipelineFile(FileNotInCommit):
    def __init__(self, commit: str, **kw: Any) -> None:
        super().__init__(commit, PIPELINE_FILE, **kw)
        self.args = (
            f"commit {commit[:12]} has no pipeline file ({PIPELINE_FILE}): nothing to run; "
            "add one (docs/pipeline.md)",
        )


class WorkDirError(GitError):
    pass


# -- running git ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    code: int
    stdout: bytes
    stderr: str


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **_QUIET_ENV, **(extra or {})}
    # ssh: never wait for a password or a host key question (unless the user set their own).
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=20")
    # Transports a project URL may name: never ext:: (a URL that runs a command) or fd::.
    env.setdefault("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
    return env


async def git(
    *args: str,
    cwd: Path | str | None = None,
    git_dir: Path | str | None = None,
    timeout: float = LOCAL_TIMEOUT,
    check: bool = True,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> Done:
    """Run one git command; :class:`GitError` on a non-zero exit (unless ``check=False``),
    :class:`GitTimeout` when it takes longer than ``timeout`` (the process is killed)."""
    argv = ["git", *(["--git-dir", str(git_dir)] if git_dir is not None else []), *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=git_env(env),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a timeout kills ssh and helpers too
        )
    except FileNotFoundError as exc:
        raise GitNotInstalled("the git program is not installed (or not on PATH)") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        await _kill(proc)
        raise GitTimeout(f"git {args[0]} took longer than {timeout:g} s", command=argv) from None
    except asyncio.CancelledError:  # the run was cancelled: git goes with it
        await _kill(proc)
        raise
    done = Done(proc.returncode or 0, out, err.decode("utf-8", "replace"))
    if check and done.code != 0:
        raise GitError(f"git {args[0]} failed (exit {done.code})", stderr=done.stderr, command=argv)
    return done


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _unavailable(stderr: str) -> bool:
    text = stderr.lower()
    return any(s in text for s in _UNAVAILABLE)


def check_ref_name(ref: str) -> None:
    """Refuse what cannot be a ref or a commit id before it reaches git (no option injection:
    nothing starting with '-')."""
    if (
        not ref
        or ref.startswith(("-", "/"))
        or ref.endswith(("/", ".lock", "."))
        or _BAD_REF.search(ref)
    ):
        raise UnknownRef(f"{ref!r} is not a valid branch, tag or commit name")


# -- a remote, without a copy --------------------------------------------------------------------


async def ls_remote(url: str, *, timeout: float = FETCH_TIMEOUT) -> dict[str, str]:
    """Every ref of the repository at ``url`` (a URL or a path) → its commit; annotated tags
    peeled (``refs/tags/v1`` → the commit, not the tag object)."""
    try:
        done = await git("ls-remote", "--end-of-options", url, timeout=timeout)
    except GitError as exc:
        if isinstance(exc, GitTimeout | GitNotInstalled):
            raise
        raise RepoUnavailable(f"cannot read repository {url}", stderr=exc.stderr) from None
    refs: dict[str, str] = {}
    for line in done.stdout.decode().splitlines():
        sha, _, name = line.partition("\t")
        if name.endswith("^{}"):
            refs[name[:-3]] = sha  # the peeled commit wins over the tag object
        else:
            refs.setdefault(name, sha)
    return refs


async def resolve_remote(url: str, ref: str) -> str:
    """The commit a branch or tag name (``main``, ``v1.2``, ``refs/heads/main``) points at in
    the repository at ``url``. Commit ids are resolved in a :class:`Mirror` (a remote lists
    refs, not commits)."""
    check_ref_name(ref)
    refs = await ls_remote(url)
    for name in (ref, f"refs/heads/{ref}", f"refs/tags/{ref}"):
        if name in refs:
            return refs[name]
    raise UnknownRef(f"no branch or tag {ref!r} in {url}")


# -- the mirror ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at: float
    committer_name: str
    committer_email: str
    committed_at: float
    message: str

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]

    @property
    def author(self) -> str:
        """git's ``Name <email>`` (what ``identity.Party.from_git`` reads)."""
        return f"{self.author_name} <{self.author_email}>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "parents": list(self.parents),
            "author": {"name": self.author_name, "email": self.author_email},
            "authored_at": self.authored_at,
            "committer": {"name": self.committer_name, "email": self.committer_email},
            "committed_at": self.committed_at,
            "message": self.message,
        }


_FORMAT = "%H%x00%T%x00%P%x00%an%x00%ae%x00%at%x00%cn%x00%ce%x00%ct%x00%B"


class Mirror:
    """A bare copy of the project's repository at ``path`` that follows ``url``."""

    def __init__(self, url: str | Path, path: Path | str) -> None:
        self.url = str(url)
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Mirror({self.url!r}, {str(self.path)!r})"

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """One writer at a time, across processes (a lock file beside the mirror)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    async def _git(self, *args: str, **kw: Any) -> Done:
        return await git(*args, git_dir=self.path, **kw)

    async def fetch(self, *refspecs: str, timeout: float = FETCH_TIMEOUT) -> None:
        """Create the mirror if needed and bring its branches and tags up to date (plus any
        ``refspecs``, e.g. ``refs/pull/7/head``). :class:`RepoUnavailable` if it cannot.

        The first fetch fills a new bare repository beside ``path`` and renames it into place
        only once it worked: a mirror exists only if it was fetched (what :meth:`resolve` and
        the others rely on to tell "never fetched" from "no such ref")."""
        async with self._locked():
            if _present(self.path / "HEAD"):
                await self._git("config", "remote.origin.url", self.url)  # the project moved
                await self._fetch(self.path, refspecs, timeout)
                return
            new = self.path.with_name(f".{self.path.name}.new")
            await asyncio.to_thread(shutil.rmtree, new, ignore_errors=True)
            try:
                await git("init", "--quiet", "--bare", str(new))
                await git("config", "remote.origin.url", self.url, git_dir=new)
                await git("config", "gc.auto", "0", git_dir=new)  # gc when we say, not mid-run
                await self._fetch(new, refspecs, timeout)
                os.replace(new, self.path)
            finally:
                await asyncio.to_thread(shutil.rmtree, new, ignore_errors=True)

    async def _fetch(self, repo: Path, refspecs: Sequence[str], timeout: float) -> None:
        specs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*", *refspecs]
        try:
            await git(
                "fetch", "--quiet", "--prune", "--no-auto-gc", "origin", *specs,
                git_dir=repo, timeout=timeout,
            )  # fmt: skip
        except GitTimeout:
            raise RepoUnavailable(
                f"cannot fetch {self.url}: no answer within {timeout:g} s"
            ) from None
        except GitError as exc:
            if refspecs and not _unavailable(exc.stderr):
                raise UnknownRef(
                    f"{self.url} has no {', '.join(refspecs)}", stderr=exc.stderr
                ) from None
            raise RepoUnavailable(f"cannot fetch {self.url}", stderr=exc.stderr) from None

    async def resolve(self, ref: str) -> str:
        """The full commit id of ``ref`` (a branch, a tag, a full or abbreviated commit id, as
        fetched last). :class:`UnknownRef` otherwise."""
        check_ref_name(ref)
        self._require()
        done = await self._git(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False
        )
        if done.code != 0:
            hint = " (fetched last; a newer commit needs a fetch)" if SHA.match(ref) else ""
            raise UnknownRef(f"no branch, tag or commit {ref!r} in {self.url}{hint}")
        return done.stdout.decode().strip()

    async def commit(self, ref: str) -> CommitInfo:
        """A commit's author, committer, times and message."""
        sha = await self.resolve(ref)
        done = await self._git("show", "--no-patch", f"--format={_FORMAT}", sha)
        f = done.stdout.decode("utf-8", "replace").split("\x00", 9)
        return CommitInfo(
            sha=f[0],
            tree=f[1],
            parents=tuple(f[2].split()),
            author_name=f[3],
            author_email=f[4],
            authored_at=float(f[5]),
            committer_name=f[6],
            committer_email=f[7],
            committed_at=float(f[8]),
            message=f[9].rstrip("\n"),
        )

    async def commits_between(self, old: str | None, new: str, limit: int = 1000) -> list[str]:
        """Commits reachable from ``new`` and not from ``old`` (None: all), newest first: the
        changes a deployment of ``new`` brings after one of ``old`` (lead time per change)."""
        new = await self.resolve(new)
        spec = [new] if old is None else [new, f"^{await self.resolve(old)}"]
        done = await self._git("rev-list", f"--max-count={limit}", *spec)
        return done.stdout.decode().split()

    async def read_file(self, commit: str, path: str, *, limit: int | None = None) -> bytes:
        """The bytes of ``path`` at ``commit`` (no checkout). :class:`FileNotInCommit`."""
        sha = await self.resolve(commit)
        path = path.strip("/")
        obj = f"{sha}:{path}"
        kind = await self._git("cat-file", "-t", obj, check=False)
        if kind.code != 0 or kind.stdout.strip() != b"blob":
            raise FileNotInCommit(sha, path)
        if limit is not None:
            size = int((await self._git("cat-file", "-s", obj)).stdout)
            if size > limit:
                raise GitError(f"{path} at {sha[:12]} is {size} bytes: more than {limit}")
        return (await self._git("cat-file", "blob", obj)).stdout

    async def read_pipeline(self, commit: str) -> str:
        """The pipeline file's text at ``commit``; :class:`NoPipelineFile` if it has none."""
        try:
            data = await self.read_file(commit, PIPELINE_FILE, limit=MAX_PIPELINE_BYTES)
        except FileNotInCommit as exc:
            raise NoPipelineFile(exc.commit) from None
        return data.decode("utf-8", "replace")

    async def archive(self, commit: str, subdir: str = ".") -> bytes:
        """``git archive`` (tar) of ``subdir`` at ``commit``, paths relative to ``subdir``."""
        sha = await self.resolve(commit)
        # A tree, not the commit: git would add a header naming the commit, and the same tree
        # at two commits would give two archives.
        tree = f"{sha}^{{tree}}" if subdir in (".", "") else f"{sha}:{subdir.strip('/')}"
        kind = await self._git("cat-file", "-t", tree, check=False)
        if kind.code != 0 or kind.stdout.strip() != b"tree":
            raise FileNotInCommit(sha, subdir)
        return (await self._git("archive", "--format=tar", tree, timeout=FETCH_TIMEOUT)).stdout

    # -- checkouts --------------------------------------------------------------------------

    async def checkout(self, commit: str, dest: Path | str) -> Path:
        """A clean work dir at ``dest`` holding exactly ``commit`` (a ``git worktree``, detached:
        objects shared with the mirror, nothing copied). ``dest`` must not exist or be empty.
        Undone by :meth:`remove_checkout`."""
        sha = await self.resolve(commit)
        dest = _absolute(dest)
        _empty_dir_for(dest)
        async with self._locked():
            await self._git("worktree", "prune")  # a work dir deleted by hand frees its name
            await self._git("worktree", "add", "--quiet", "--detach", "--force", str(dest), sha)
        return dest

    async def remove_checkout(self, dest: Path | str) -> bool:
        """Remove a work dir made by :meth:`checkout`, whatever was written into it; True if
        there was one. Idempotent (an UNDO may run twice), and it refuses to delete a folder
        that is not a work dir of this mirror."""
        dest = _absolute(dest)
        async with self._locked():
            removed = _present(dest)
            if removed:
                if not self._is_my_worktree(dest):
                    raise WorkDirError(f"{dest} is not a work dir of {self.path}: not removed")
                await self._git("worktree", "remove", "--force", "--force", str(dest), check=False)
                # git leaves what it could not delete (e.g. a read-only folder a test made)
                await asyncio.to_thread(shutil.rmtree, dest, ignore_errors=True)
                if _present(dest):
                    raise WorkDirError(f"could not remove {dest}")
            await self._git("worktree", "prune")
        return removed

    def _is_my_worktree(self, dest: Path) -> bool:
        marker = dest / ".git"
        if not marker.is_file():
            return False
        text = marker.read_text(errors="replace").strip()
        target = Path(text.removeprefix("gitdir:").strip())
        if not target.is_absolute():
            target = (dest / target).resolve()
        return target.resolve().parent == (self.path / "worktrees").resolve()

    async def worktrees(self) -> list[Path]:
        """The work dirs the mirror knows of (a recovery sweep compares them with live runs)."""
        self._require()
        done = await self._git("worktree", "list", "--porcelain")
        out = []
        for block in done.stdout.decode().split("\n\n"):
            lines = block.splitlines()
            if lines and lines[0].startswith("worktree ") and "bare" not in lines[1:]:
                out.append(Path(lines[0][len("worktree ") :]))
        return out

    def _require(self) -> None:
        if not (self.path / "HEAD").exists():
            raise RepoUnavailable(f"{self.url} was never fetched (no mirror at {self.path})")


def _absolute(path: Path | str) -> Path:
    return Path(os.path.abspath(path))  # string work only


def _present(path: Path) -> bool:
    return os.path.lexists(path)


def _empty_dir_for(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise WorkDirError(f"cannot check out into {dest}: it exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)


async def is_bare_repo(path: Path | str) -> bool:
    done = await git("rev-parse", "--is-bare-repository", git_dir=path, check=False)
    return done.code == 0 and done.stdout.strip() == b"true"
