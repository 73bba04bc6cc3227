"""Calls longer than a proxy's default timeout, through every hop of a deployed environment
(ingress → service proxy → apigw sidecar → apigw → its outbound sidecar listener → scenario
sidecar → scenario role): whatever bound is hit answers in switchback's JSON, never with a bare
proxy error. Envoy's default route timeout (15 s) used to answer `504 upstream request timeout`
in text/plain, with no xid, while the transaction went on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchback.release.client import ControllerClient
from switchback.runtime import processes

LONGCALLS = Path(__file__).resolve().parent / "apps" / "longcalls"


@pytest.fixture
def longcalls(tmp_path: Path) -> Iterator[ControllerClient]:
    ctl = ControllerClient(tmp_path / "data")
    ctl.up(LONGCALLS, env="production", version="v1")
    try:
        yield ctl
    finally:
        info = ctl.info if (tmp_path / "data" / "controller.json").exists() else None
        ctl.down()
        if info and processes.alive(info["pid"]):
            processes.stop(info["pid"])


async def test_calls_longer_than_15_s_get_the_gateways_json_answer(
    longcalls: ControllerClient,
) -> None:
    url = (await longcalls.urls())["public"]
    async with httpx.AsyncClient(base_url=url, timeout=90) as client:
        held = await client.post("/hold", json={"device": "leaf1"})
        assert held.status_code == 424, held.text  # parked, and it keeps the device's lock
        holder = held.json()["xid"]
        # Both take about 20 s: a block that runs that long, a call that waits that long for
        # the lock the parked transaction holds (lock_timeout: 20).
        slow, locked = await asyncio.gather(
            client.post("/sleep", json={"seconds": 20}),
            client.post("/use", json={"device": "leaf1"}),
        )
    assert slow.headers["content-type"] == "application/json", slow.text
    assert slow.status_code == 200, slow.text
    assert slow.json()["status"] == "completed" and slow.json()["xid"]
    assert slow.json()["result"] == {"slept": 20}
    assert locked.headers["content-type"] == "application/json", locked.text
    assert locked.status_code == 409, locked.text
    detail = locked.json()["detail"]
    assert detail["lock"] == "device:leaf1" and detail["holder"] == holder
    assert detail["waited_seconds"] == 20
