"""Several worker processes on one PostgreSQL: each is a real `switchback serve --role all --db
URL` on a free loopback port (scenario endpoints, admin API, recovery sweeps). Readiness is
awaited by polling /readyz; every process started is stopped at the end.

PostgreSQL is required: unreachable means these tests fail with the reason, never skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from switchback.runtime import processes
from tests.engine.conftest import PG_URL, drop_pg_schema, pg_schema

SWITCHBACK = Path(sys.executable).parent / "switchback"
TOKEN = "worker-test-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    # Below the kernel's ephemeral range, as the runtime does: Envoy binds some of these later.
    return processes.free_port()


@dataclass
class Worker:
    name: str
    app: Path
    db: str
    tmp: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.tmp / f"{self.name}.log"

    def start(self, timeout: float = 30.0) -> None:
        cmd = [str(SWITCHBACK), "serve", str(self.app), "--port", str(self.port), "--db", self.db,
               "--role", "all", "--graceful-timeout", "2", "--no-access-log"]  # fmt: skip
        env = {**os.environ, "SWITCHBACK_ADMIN_TOKENS": f"tester={TOKEN}", **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.tmp
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # polling interval
        raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture
def pg_db(tmp_path: Path) -> Iterator[str]:
    """A store URL with a schema of this test's own, dropped at the end."""
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for the worker tests ({PG_URL}): {exc}")
    yield f"{PG_URL}?schema={pg_schema(tmp_path)}"
    drop_pg_schema(tmp_path)


@pytest.fixture
def workers(pg_db: str, tmp_path: Path) -> Iterator[Callable[..., list[Worker]]]:
    """``workers(app, n, env)`` starts n workers on the test's schema; all stopped at the end."""
    started: list[Worker] = []

    def make(app: Path, n: int, env: dict[str, str]) -> list[Worker]:
        made = [Worker(f"w{len(started) + i}", app, pg_db, tmp_path, env) for i in range(n)]
        for w in made:
            started.append(w)
            w.start()
        return made

    yield make
    for w in started:
        w.stop()


def query(db: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the store directly (the test's schema) to observe what the workers did."""
    from switchback.store.postgres import parse_url

    conninfo, schema, _ = parse_url(db)
    with psycopg.connect(conninfo, autocommit=True, options=f"-c search_path={schema}") as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def wait_until(what: str, cond: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)  # polling interval
