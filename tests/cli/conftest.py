"""CLI tests: in-process through typer's CliRunner (the same click command `switchback` runs),
and as real subprocesses, piped and on a pseudo-terminal of a given width."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from switchback.cli.main import app
from switchback.engine import Engine
from switchback.model import load_app
from switchback.store import open_store

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
SWITCHBACK = [sys.executable, "-m", "switchback.cli"]


class Runner(CliRunner):
    def run(self, *args: str, **kw: Any) -> Any:
        """`switchback ARGS` in process."""
        return self.invoke(app, list(args), prog_name="switchback", **kw)


@pytest.fixture
def runner() -> Runner:
    return Runner()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBACK_", "QUICKSTART_"))}
    return {**env, **extra}


def piped(*args: str, cwd: Path, columns: int = 80, **env: str) -> subprocess.CompletedProcess[str]:
    """`switchback ARGS` with its output into a pipe (COLUMNS set, as a terminal would)."""
    return subprocess.run(
        [*SWITCHBACK, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env=clean_env(COLUMNS=str(columns), **env),
    )  # fmt: skip


def on_terminal(*args: str, cwd: Path, columns: int = 80, **env: str) -> tuple[int, str]:
    """`switchback ARGS` on a pseudo-terminal ``columns`` wide; its exit status and what the
    terminal received (stdout and stderr), escape sequences removed."""
    import re

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    environ = clean_env(TERM="xterm", **env)
    environ.pop("COLUMNS", None)
    proc = subprocess.Popen(
        [*SWITCHBACK, *args], cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=environ,
        close_fds=True,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(60)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


@dataclass
class Store:
    """A quickstart store with transactions in several states, made by the real engine."""

    data: Path
    inventory: Path
    completed: str
    parked: str
    conflict: str


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    data, inventory = tmp_path / "data", tmp_path / "inventory"
    monkeypatch.setenv("QUICKSTART_DIR", str(inventory))

    async def fill() -> Store:
        engine = Engine(load_app(QUICKSTART), open_store(data))
        await engine.open()
        try:
            await engine.store.set_meta("app_dir", str(QUICKSTART))
            req = {"site": "tokyo-1", "prefix": "10.1.0.0/24"}
            done = await engine.run("provision", req, actor="t")
            conflict = await engine.run("provision", req, actor="t")
            (inventory / "MAINTENANCE").touch()
            parked = await engine.run(
                "provision", {"site": "osaka-1", "prefix": "10.2.0.0/24"}, actor="t"
            )
            (inventory / "MAINTENANCE").unlink()
        finally:
            await engine.close()
        return Store(data, inventory, done.xid, parked.xid, conflict.xid)

    return asyncio.run(fill())
