"""Gateway fixtures: real `switchback serve` processes on free loopback ports.

Readiness is awaited by polling /readyz; every process started is stopped at the end (SIGTERM,
then SIGKILL if it does not leave within the graceful timeout).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchback.runtime import processes

ROOT = Path(__file__).resolve().parents[2]
SWITCHBACK = Path(sys.executable).parent / "switchback"
TEST_APP = Path(__file__).parent / "apps" / "gwtest"
QUICKSTART = ROOT / "examples" / "quickstart"
TOKENS = {"alice": "alice-secret-token-1", "bob": "bob-secret-token-2"}
TOKENS_ENV = ",".join(f"{k}={v}" for k, v in TOKENS.items())


def free_port() -> int:
    # Below the kernel's ephemeral range, as the runtime does: Envoy binds some of these later.
    return processes.free_port()


def auth(name: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


JSON = {"Content-Type": "application/json"}


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    flags: Path
    data: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**auth(), **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def wait_ready(self, timeout: float = 30.0, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited ({self.proc.returncode}):\n{self.log.read_text()}"
                )
            try:
                if self.client.get(path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # polling interval, not synchronisation
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.client.close()


def start_server(
    tmp: Path,
    *,
    app: Path = TEST_APP,
    role: str = "all",
    data: Path | None = None,
    flags: Path | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    name: str | None = None,
    ready_path: str = "/readyz",
) -> Server:
    port = free_port()
    data = data or tmp / "data"
    flags = flags or tmp / "flags"
    flags.mkdir(parents=True, exist_ok=True)
    log = tmp / f"{name or role}-{port}.log"
    full_env = {
        **os.environ,
        "SWITCHBACK_ADMIN_TOKENS": TOKENS_ENV,
        "GWTEST_FLAG_DIR": str(flags),
        "QUICKSTART_DIR": str(tmp / "inventory"),
        **(env or {}),
    }
    cmd = [str(SWITCHBACK), "serve", str(app), "--port", str(port), "--data", str(data),
           "--role", role, "--graceful-timeout", "3", *(args or [])]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=tmp)
    server = Server(proc, f"http://127.0.0.1:{port}", log, flags, data)
    try:
        server.wait_ready(path=ready_path)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `role=all` server with the test app, shared by a module's tests (they run in order)."""
    s = start_server(tmp_path_factory.mktemp("gw"), args=["--max-body", "4096"])
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def fail_flag(server: Server) -> Iterator[Path]:
    """While this fixture is active, the test app's `charge` block fails."""
    flag = server.flags / "fail"
    flag.write_text("1")
    try:
        yield flag
    finally:
        flag.unlink(missing_ok=True)
