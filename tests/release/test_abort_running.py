"""`release abort` of a release that is running: it takes effect at the next safe point — a
smoke test is stopped, any other step finishes and the next does not start — and the release is
rolled back; the answer says so. From the point of no return on, it is refused."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from switchback.release.client import ControllerClient, ControllerError
from switchback.runtime import processes
from tests.eventually import eventually_async

from .conftest import PING


async def running_at(ctl: ControllerClient, xid: str, step: str) -> dict:
    async def at_step() -> dict | None:
        r = await ctl.call("GET", f"/releases/{xid}")
        return r if (r["status"], r["step"]) == ("running", step) else None

    return await eventually_async(at_step, timeout=60, what=f"release {xid} running {step}")


async def only_v1_left(ctl: ControllerClient) -> None:
    env = (await ctl.call("GET", "/status"))["environments"]["production"]
    assert env["current"] == "v1" and env["new"] is None
    assert {i["build"] for i in env["instances"]} == {"v1"}


async def test_abort_during_a_long_smoke_test_stops_it_and_rolls_back(
    controller: ControllerClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "smoke.pid"
    r = await controller.call(
        "POST", "/releases",
        {"environment": "production", "version": "v2", "app_dir": str(PING),
         "smoke": f"echo $$ > {pidfile}; exec sleep 600"},
    )  # fmt: skip
    xid = r["xid"]
    await running_at(controller, xid, "smoke")
    smoke_pid = int(
        await eventually_async(lambda: pidfile.read_text().strip(), what="the smoke test's pid")
    )
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "switchback.cli", "release", "abort", "--reason", "too slow",
         "--data", str(controller.data)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the release was running (smoke)" in res.stdout, res.stdout
    assert "the smoke test is stopped" in res.stdout and "rolled_back" in res.stdout
    assert not processes.alive(smoke_pid)
    r = await controller.call("GET", f"/releases/{xid}")
    assert r["status"] == "rolled_back"
    smoke = next(b for b in r["blocks"] if b["name"] == "smoke")
    assert "stopped: the release is being aborted" in smoke["error"]["message"]
    assert [a["action"] for a in r["audit"]][-2:] == ["pause", "rollback"]
    await only_v1_left(controller)


async def test_abort_during_the_deploy_takes_effect_when_the_step_ends(
    controller: ControllerClient,
) -> None:
    r = await controller.call(
        "POST", "/releases",
        {"environment": "production", "version": "v2", "app_dir": str(PING)},
    )  # fmt: skip
    xid = r["xid"]
    await running_at(controller, xid, "deploy_new")
    r = await controller.call("POST", f"/releases/{xid}/abort", {"reason": "changed my mind"})
    assert r["status"] == "rolled_back", r
    assert "the release was running (deploy_new)" in r["note"]
    assert "once deploy_new ends" in r["note"]
    deploy = next(b for b in r["blocks"] if b["name"] == "deploy_new")
    assert deploy["status"] == "undone"
    await only_v1_left(controller)


async def test_abort_while_draining_is_refused(controller: ControllerClient) -> None:
    status = await controller.call("GET", "/status")
    old = next(
        i
        for i in status["environments"]["production"]["instances"]
        if i["id"] == "production.scenario.v1.0"
    )
    # A foreign idle connection keeps the drain of v1 going until its limit.
    with socket.create_connection(("127.0.0.1", old["sidecar_port"])) as foreign:
        foreign.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert foreign.recv(4096).startswith(b"HTTP/1.1 200")
        r = await controller.call(
            "POST", "/releases",
            {"environment": "production", "version": "v2", "app_dir": str(PING),
             "drain_timeout": 20},
        )  # fmt: skip
        xid = r["xid"]
        await running_at(controller, xid, "drain_old")
        try:
            await controller.call("POST", f"/releases/{xid}/abort", {})
        except ControllerError as exc:
            assert exc.status == 409 and "point of no return" in exc.body["error"], exc.body
        else:
            raise AssertionError("an abort while draining was accepted")
    r = await controller.wait_release(xid, ("completed",), timeout=60)
    assert r["status"] == "completed"
