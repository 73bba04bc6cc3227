"""Real git repositories made by the tests: a work repo with commits, its bare copy (what a git
server holds), and the pipeline file of the issue's example."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PIPELINE = """\
triggers: {branches: [main]}
ci:
  - {name: unit, run: "python -m pytest -q", timeout: 600}
environments:
  - {name: staging, smoke: "curl -fsS $SWITCHBACK_STANDBY_URL/healthz"}
  - {name: test}
  - name: production
    approval: {approvers: [alice, "group:release-managers"], required: 1, timeout: 86400, on_timeout: reject}
on_failure: rollback
"""

AUTHOR = {"GIT_AUTHOR_NAME": "Alice Liddell", "GIT_AUTHOR_EMAIL": "alice@example.com"}
COMMITTER = {"GIT_COMMITTER_NAME": "Bob", "GIT_COMMITTER_EMAIL": "bob@example.com"}


def git_env(**extra: str) -> dict[str, str]:
    """The environment of a test's git: no user or system config, fixed identities."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, **AUTHOR, **COMMITTER)
    env.update(extra)
    return env


def run_git(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=git_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@dataclass
class WorkRepo:
    path: Path

    def write(self, files: Mapping[str, str | bytes | None]) -> None:
        for name, content in files.items():
            target = self.path / name
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(textwrap.dedent(content))

    def commit(
        self,
        files: Mapping[str, str | bytes | None],
        message: str = "a change",
        *,
        at: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> str:
        self.write(files)
        run_git("add", "--all", cwd=self.path)
        extra = dict(env or {})
        if at is not None:
            extra.update(GIT_AUTHOR_DATE=f"@{at} +0000", GIT_COMMITTER_DATE=f"@{at} +0000")
        run_git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.path, env=extra)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return run_git("rev-parse", ref, cwd=self.path)

    def git(self, *args: str) -> str:
        return run_git(*args, cwd=self.path)


APP_FILES = {
    ".switchback/pipeline.yaml": PIPELINE,
    "app/scenarios/hello.yaml": "name: hello\nblocks: [{name: a, do: 'hello:a'}]\n",
    "app/hello.py": "def a(ctx):\n    return {'ok': True}\n",
    "app/requirements.lock": "httpx==0.28.1 \\\n    --hash=sha256:" + "a" * 64 + "\nrich==13.7.0\n",
    "README.md": "# an app\n",
}


@pytest.fixture
def work(tmp_path: Path) -> WorkRepo:
    """A repository on branch main with one commit: the pipeline file and an app folder."""
    path = tmp_path / "work"
    path.mkdir()
    run_git("init", "--quiet", "-b", "main", cwd=path)
    repo = WorkRepo(path)
    repo.commit(APP_FILES, "first commit\n\nwith a body", at=1_700_000_000)
    return repo


@pytest.fixture
def bare(work: WorkRepo, tmp_path: Path) -> Path:
    """A bare copy of ``work`` (a git server's repository), ``work``'s origin."""
    path = tmp_path / "server" / "app.git"
    path.parent.mkdir()
    run_git("clone", "--quiet", "--bare", str(work.path), str(path), cwd=tmp_path)
    work.git("remote", "add", "origin", str(path))
    return path
