"""Release fixtures: a controller with the ping app deployed as v1 (real processes: the app's
roles, their Envoy sidecars, service proxies, the ingress), stopped at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from switchback.release.client import ControllerClient
from switchback.runtime import processes

PING = Path(__file__).resolve().parents[2] / "examples" / "ping"


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerClient]:
    ctl = ControllerClient(tmp_path / "data")
    ctl.up(PING, env="production", version="v1")
    try:
        yield ctl
    finally:
        info = ctl.info if (tmp_path / "data" / "controller.json").exists() else None
        ctl.down()
        if info and processes.alive(info["pid"]):  # a controller that would not stop
            processes.stop(info["pid"])


@pytest.fixture
async def urls(controller: ControllerClient) -> AsyncIterator[dict[str, str]]:
    yield await controller.urls("production")
