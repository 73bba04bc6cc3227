"""Installing switchback's ``post-receive`` hook into a bare repository, so that a plain
``git push`` starts a pipeline run. The hook itself is ``post_receive.py`` (standard library only,
because it runs on the git server); this module writes it and its settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from switchback.valuestream.git import GitError, RepoUnavailable, git, is_bare_repo
from switchback.valuestream.post_receive import MARK as HOOK_MARK

HOOK_TIMEOUT = 10.0
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class HookConflict(GitError):
    """The repository already has a post-receive hook that is not switchback's."""


@dataclass(frozen=True)
class InstalledHook:
    hook: Path  # the script
    config: Path  # its settings (URL, project, secret): owner-only
    endpoint: str  # where it posts
    replaced: Path | None = None  # a previous hook, kept under another name


def hook_source(interpreter: str = "/usr/bin/env python3") -> str:
    """The hook script as installed: ``post_receive.py`` behind a ``#!`` line."""
    source = (Path(__file__).with_name("post_receive.py")).read_text(encoding="utf-8")
    return f"#!{interpreter}\n# {HOOK_MARK}: installed by switchback; reinstall to change\n{source}"


def _write(path: Path, text: str, mode: int) -> None:
    """Atomically, with ``mode`` from the start (the secret is never readable by others)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # whatever the umask took away
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


async def install_hook(
    bare_repo: Path | str,
    url: str,
    secret: str,
    *,
    project: str | None = None,
    timeout: float = HOOK_TIMEOUT,
    interpreter: str = "/usr/bin/env python3",
    replace: bool = False,
) -> InstalledHook:
    """Make a plain ``git push`` to ``bare_repo`` start a run: a ``post-receive`` hook that posts
    each pushed ref to ``<url>/hooks/git/<project>`` (``project`` defaults to the repository's
    folder name without ``.git``), signed with ``secret``, giving up after ``timeout`` seconds.
    Honours ``core.hooksPath``. Installing again updates it; another program's hook is refused
    (:class:`HookConflict`) unless ``replace`` (it is then kept as ``post-receive.before-switchback``)."""
    bare = _absolute(bare_repo)
    if not await is_bare_repo(bare):
        raise RepoUnavailable(f"{bare} is not a bare git repository")
    project = project or bare.name.removesuffix(".git")
    if not PROJECT_NAME.match(project):
        raise ValueError(f"{project!r} is not a project name (letters, digits, '.', '_', '-')")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL of switchback")
    if not secret:
        raise ValueError("an empty secret would sign nothing: give the project's webhook secret")
    if not timeout > 0:
        raise ValueError("the hook's timeout must be positive")
    hooks = (await git("rev-parse", "--git-path", "hooks", cwd=bare)).stdout.decode().strip()
    settings = {"url": url.rstrip("/"), "project": project, "secret": secret, "timeout": timeout}
    return _install(bare / hooks, settings, interpreter, replace)  # an absolute hooks wins


def _absolute(path: Path | str) -> Path:
    return Path(os.path.abspath(path))  # string work only


def _install(
    hooks: Path, settings: dict[str, object], interpreter: str, replace: bool
) -> InstalledHook:
    hooks.mkdir(parents=True, exist_ok=True)
    script, config = hooks / "post-receive", hooks / "switchback.json"
    replaced = None
    if script.exists() and HOOK_MARK not in script.read_text(errors="replace"):
        if not replace:
            raise HookConflict(
                f"{script} exists and is not switchback's: chain it yourself, or replace it "
                "(the old one is kept as post-receive.before-switchback)"
            )
        replaced = script.with_name("post-receive.before-switchback")
        os.replace(script, replaced)
    _write(config, json.dumps(settings, indent=2) + "\n", 0o600)
    _write(script, hook_source(interpreter), 0o755)
    project = urllib.parse.quote(str(settings["project"]), "")
    return InstalledHook(script, config, f"{settings['url']}/hooks/git/{project}", replaced)
