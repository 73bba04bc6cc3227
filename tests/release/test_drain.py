"""Draining by what matters: a release under keep-alive load does not wait for its drain limit
(idle keep-alive connections inside the platform close themselves), and a drain that does hit
its limit says so in the step's output and in `release status`."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

from switchback.release.client import ControllerClient
from switchback.runtime.traffic import Traffic, analyse

from .conftest import PING

LOAD = {"connections": 10, "rate": 100}


def block(r: dict, name: str) -> dict:
    return next(b for b in r["blocks"] if b["name"] == name)


async def test_a_release_under_keepalive_load_drains_before_its_limit(
    controller: ControllerClient, urls: dict[str, str]
) -> None:
    traffic = Traffic(urls["public"], **LOAD)
    traffic.start()
    await traffic.wait_for_samples(50)
    r = await controller.call(
        "POST",
        "/releases",
        {"environment": "production", "version": "v2", "app_dir": str(PING), "wait": True},
    )  # fmt: skip  (the default drain limit: 30 s)
    samples = await traffic.stop()
    assert r["status"] == "completed", r
    drained = block(r, "drain_old")["output"]
    assert drained["still_connected"] == {}, drained  # before: idle pools held it to the limit
    assert drained["timed_out"] is False and drained["seconds"] < 30, drained
    assert r["warnings"] == []
    redirect = block(r, "redirect_old")
    report = analyse(samples, redirect["ended_at"], "v1", "v2", promote_at=redirect["started_at"])
    assert report.failed == 0, report.failures
    assert report.served_by_old_after == 0


async def test_an_abort_under_keepalive_load_drains_the_new_version_before_its_limit(
    controller: ControllerClient, urls: dict[str, str]
) -> None:
    traffic = Traffic(urls["public"], **LOAD)
    traffic.start()
    await traffic.wait_for_samples(50)
    r = await controller.call(
        "POST", "/releases",
        {"environment": "production", "version": "v2", "app_dir": str(PING), "wait": True,
         "approval": "switch"},
    )  # fmt: skip
    assert r["status"] == "waiting", r  # the old sidecars forward to v2 now
    r = await controller.call("POST", f"/releases/{r['xid']}/abort", {"reason": "test"})
    samples = await traffic.stop()
    assert r["status"] == "rolled_back", r
    undone = block(r, "deploy_new")["undo_output"]
    assert undone["timed_out"] is False and undone["still_connected"] == {}, undone
    assert [s for s in samples if not s.ok] == []


async def test_a_drain_that_hits_its_limit_says_so(
    controller: ControllerClient, urls: dict[str, str]
) -> None:
    status = await controller.call("GET", "/status")
    old = next(
        i
        for i in status["environments"]["production"]["instances"]
        if i["id"] == "production.scenario.v1.0"
    )
    # A client that is not one of ours keeps an idle connection open to an old sidecar.
    with socket.create_connection(("127.0.0.1", old["sidecar_port"])) as foreign:
        foreign.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert foreign.recv(4096).startswith(b"HTTP/1.1 200")
        r = await controller.call(
            "POST", "/releases",
            {"environment": "production", "version": "v2", "app_dir": str(PING), "wait": True,
             "drain_timeout": 1},
        )  # fmt: skip
    assert r["status"] == "completed", r
    drained = block(r, "drain_old")["output"]
    assert drained["timed_out"] is True, drained
    assert list(drained["still_connected"]) == ["production.scenario.v1.0"]
    assert r["warnings"] and "drain hit its limit" in r["warnings"][0]
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "switchback.cli", "release", "status", "--data", str(controller.data)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "drain_old: drain hit its limit" in res.stdout, res.stdout
    assert "production.scenario.v1.0" in res.stdout
