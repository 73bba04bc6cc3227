"""A small async client of the controller's API (for scripts, benchmarks and tests; the CLI
has its own synchronous calls)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from switchback.release.controller import read_info


class ControllerError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{status}: {body}")


class ControllerClient:
    def __init__(self, data: Path) -> None:
        self.data = data.resolve()

    def up(
        self, app_dir: Path, env: str = "production", version: str = "v1", timeout: float = 240
    ) -> None:
        """`switchback up` as a subprocess (starts the controller if needed)."""
        res = subprocess.run(
            [sys.executable, "-m", "switchback.cli", "up", str(app_dir), "--env", env, "--version", version,
             "--data", str(self.data)],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        if res.returncode != 0:
            raise ControllerError(res.returncode, res.stdout + res.stderr)

    def down(self, timeout: float = 120, *, forget: bool = False) -> None:
        """`switchback down` (``forget``: the next `up` deploys afresh)."""
        subprocess.run(
            [sys.executable, "-m", "switchback.cli", "down", "--data", str(self.data),
             *(["--forget"] if forget else [])],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    @property
    def info(self) -> dict[str, Any]:
        info = read_info(self.data)
        if not info:
            raise ControllerError(0, f"no controller in {self.data}")
        return info

    async def call(
        self, method: str, path: str, body: Any = None, timeout: float | None = 300
    ) -> Any:
        info = self.info
        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.request(
                method,
                info["url"] + path,
                json=body,
                headers={"Authorization": f"Bearer {info['token']}"},
            )
        data = r.json() if r.content else None
        if r.status_code >= 400:
            raise ControllerError(r.status_code, data)
        return data

    async def urls(self, env: str = "production") -> dict[str, str]:
        status = await self.call("GET", "/status")
        return status["environments"][env]["urls"]

    async def wait_release(
        self, xid: str, statuses: tuple[str, ...], timeout: float = 120
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            r = await self.call("GET", f"/releases/{xid}")
            if r["status"] in statuses:
                return r
            if loop.time() > deadline:
                raise TimeoutError(f"release {xid} is {r['status']} at {r['step']}")
            await asyncio.sleep(0.1)
