"""The runtime around a release: in-flight transactions on the old version, a controller that
dies with kill -9 and comes back, the CLI's status view."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from switchback.release.client import ControllerClient
from switchback.runtime import processes
from switchback.runtime.traffic import Traffic
from tests.eventually import eventually_async

from .conftest import PING


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger"
    monkeypatch.setenv("PING_LEDGER", str(path))  # inherited by the controller and every instance
    return path


async def _tx(client: httpx.AsyncClient, url: str, xid: str, token: str) -> dict:
    r = await client.get(f"{url}/transactions/{xid}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


async def test_in_flight_transactions_finish_or_are_taken_over(
    ledger: Path, controller: ControllerClient
) -> None:
    urls = await controller.urls()
    token = controller.info["app_token"]
    async with httpx.AsyncClient(timeout=30) as client:
        short = (await client.post(f"{urls['public']}/slow", json={"seconds": 1.5})).json()["xid"]
        long = (await client.post(f"{urls['public']}/slow", json={"seconds": 60})).json()["xid"]
        r = await controller.call(
            "POST", "/releases",
            {"environment": "production", "version": "v2", "app_dir": str(PING), "wait": True, "drain_timeout": 1},
        )  # fmt: skip
        assert r["status"] == "completed", r
        assert (await _tx(client, urls["public"], short, token))["status"] == "completed"
        # The long one was cut when v1 was retired: the new version's transaction role takes it
        # over; its block is not idempotent, so it parks for a person instead of running twice.
        deadline = asyncio.get_running_loop().time() + 60
        while (tx := await _tx(client, urls["public"], long, token))["status"] == "running":
            assert asyncio.get_running_loop().time() < deadline, tx
            await asyncio.sleep(0.2)
        assert (tx["status"], tx["reason"]) == ("suspended", "interrupted")
    starts = Counter(
        line.split()[0] for line in ledger.read_text().splitlines() if " do start " in line
    )
    assert starts[short] == 1 and starts[long] == 1  # nothing lost, nothing run twice


async def test_controller_killed_and_restarted_adopts_its_processes(
    controller: ControllerClient,
) -> None:
    urls = await controller.urls()
    before = (await controller.call("GET", "/status"))["environments"]["production"]["instances"]
    traffic = Traffic(urls["public"], connections=4, rate=40)
    traffic.start()
    await traffic.wait_for_samples(10)
    old_pid = controller.info["pid"]
    os.kill(old_pid, signal.SIGKILL)
    processes.reap(old_pid)
    count = len(traffic.samples)
    await traffic.wait_for_samples(count + 20)  # users are served while the controller is dead
    controller.up(PING, env="production", version="v1")  # a new controller re-adopts
    assert controller.info["pid"] != old_pid
    after = (await controller.call("GET", "/status"))["environments"]["production"]["instances"]
    assert [(i["id"], i["app_pid"], i["envoy_pid"]) for i in after] == [
        (i["id"], i["app_pid"], i["envoy_pid"]) for i in before
    ]

    # Every Envoy (sidecars, service proxies, ingress) reconnected with the credentials it was
    # spawned with: the restarted controller loaded the same CA and registrations.
    async def all_back_in_sync() -> bool:
        nodes = (await controller.call("GET", "/xds/nodes"))["nodes"]
        return len(nodes) == len(after) + 3 and all(n["connected"] and n["in_sync"] for n in nodes)

    await eventually_async(all_back_in_sync, timeout=30, what="every Envoy ACKing the restart")
    # ... and can still release (the sidecars reconnected to the same xDS port).
    r = await controller.call(
        "POST", "/releases",
        {"environment": "production", "version": "v2", "app_dir": str(PING), "wait": True, "drain_timeout": 2},
    )  # fmt: skip
    assert r["status"] == "completed", r
    samples = await traffic.stop()
    assert [s for s in samples if not s.ok] == []


def test_release_cli_status_and_parked_release(controller: ControllerClient) -> None:
    env = {**os.environ, "COLUMNS": "250"}
    base = [sys.executable, "-m", "switchback.cli"]
    data = ["--data", str(controller.data)]
    res = subprocess.run([*base, "release", "start", "--version", "v2", "--app", str(PING), "--smoke", "exit 3", *data],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert res.returncode == 2, res.stdout + res.stderr  # parked at the smoke test
    assert "smoke test failed (exit 3)" in res.stdout and "suspended" in res.stdout
    st = subprocess.run(
        [*base, "release", "status", *data], capture_output=True, text=True, env=env, timeout=60
    )
    assert st.returncode == 0, st.stderr
    assert "current v1, new v2" in st.stdout and "apigw-standby" in st.stdout
    ab = subprocess.run([*base, "release", "abort", "--reason", "smoke failed", *data],
                        capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert ab.returncode == 0, ab.stdout + ab.stderr
    assert "rolled_back" in ab.stdout
    status = json.loads(json.dumps(asyncio.run(controller.call("GET", "/status"))))
    assert {i["build"] for i in status["environments"]["production"]["instances"]} == {"v1"}
