"""`switchback up` against an outside probe: nobody without a node's credentials can take its
traffic over the controller's xDS port, and what it leaves on disk is private."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import grpc
import httpx

from switchback.release.client import ControllerClient
from switchback.runtime import processes
from switchback.xds.cache import CLUSTER
from switchback.xds.client import AdsClient
from tests.eventually import eventually_async
from tests.xds.conftest import TestApp

from .conftest import PING


async def _public_served_by_v1(url: str, n: int = 20) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for i in range(n):
            r = await client.post(f"{url}/ping", json={"n": i})
            assert r.status_code == 200, r.text
            assert r.headers["x-switchback-version"] == "v1"


async def _nodes(controller: ControllerClient) -> dict[str, dict]:
    return {n["id"]: n for n in (await controller.call("GET", "/xds/nodes"))["nodes"]}


async def test_xds_hijack_of_a_sidecar_is_refused(
    controller: ControllerClient, urls: dict[str, str]
) -> None:
    """The probe's attack: open an ADS stream to the controller's xDS port, claim a live apigw
    sidecar's node id with our own app_port. Refused; public traffic stays on the app."""
    before = await _nodes(controller)
    victim = next(n for n in before.values() if n["metadata"].get("role") == "apigw")
    evil = TestApp("attacker")
    evil.start()
    try:
        md = {**victim["metadata"], "app_port": evil.port}
        target = f"127.0.0.1:{controller.info['xds_port']}"
        ca = (controller.data / "xds-ca" / "ca.crt").read_bytes()  # public: no secret in it
        for creds in (None, grpc.ssl_channel_credentials(ca)):
            hijacker = AdsClient(target, victim["id"], md, credentials=creds)
            await hijacker.start()
            try:
                await hijacker.wait_for(lambda c: c.ended.is_set(), timeout=10)
            finally:
                await hijacker.stop()
            assert hijacker.error is not None
            assert hijacker.error.code() == grpc.StatusCode.UNAVAILABLE
            assert hijacker.resources[CLUSTER] == {}
        after = await _nodes(controller)
        for key in ("connected", "in_sync", "metadata", "version", "peer"):
            assert after[victim["id"]][key] == victim[key], key
        await _public_served_by_v1(urls["public"])
        assert evil.seen == []
    finally:
        evil.stop()


async def test_up_leaves_a_private_data_dir(
    controller: ControllerClient, urls: dict[str, str]
) -> None:
    """Everything `switchback up` and what it spawns (controller, Envoys, app instances, their
    SQLite stores) created under the data dir: dirs 0700, files 0600."""
    await _public_served_by_v1(urls["public"], 3)  # the stores have written something
    root = controller.data
    wrong: dict[str, str] = {}
    seen: set[str] = set()
    for dirpath, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            p = Path(dirpath) / name
            mode = stat.S_IMODE(p.lstat().st_mode)
            rel = str(p.relative_to(root))
            seen.add(rel)
            want = 0o700 if p.is_dir() else 0o600
            if mode != want:
                wrong[rel] = oct(mode)
    assert wrong == {}, wrong
    # What the probe found world-readable is among what was checked.
    for must in ("controller.json", "xds-state.json", "xds-ca/ca.key", "runtime/runtime.json",
                 "controller/switchback.db", "apps/production/switchback.db",
                 "apps/production/switchback.db-wal", "controller.log"):  # fmt: skip
        assert must in seen, must
    assert any(s.endswith("bootstrap.yaml") for s in seen)
    assert any(s.endswith("tls/node.key") for s in seen)
    assert any(s.startswith("runtime/logs/") for s in seen)


async def test_envoys_without_credentials_are_replaced_at_restart(
    controller: ControllerClient, urls: dict[str, str]
) -> None:
    """After an upgrade from a version without xDS credentials, the running Envoys cannot
    reconnect: the restarted controller replaces every Envoy it has no registration for."""
    runtime = json.loads((controller.data / "runtime" / "runtime.json").read_text())
    env = runtime["environments"]["production"]
    old_pids = {i["id"]: i["envoy_pid"] for i in env["instances"]}
    old_pids |= {p["node_id"]: p["pid"] for p in env["proxies"].values()}
    pid = controller.info["pid"]
    os.kill(pid, signal.SIGKILL)
    processes.reap(pid)
    state_file = controller.data / "xds-state.json"
    state = json.loads(state_file.read_text())
    assert set(state["nodes"]) == set(old_pids)
    state["nodes"] = {}  # as a version without credentials left it
    state_file.write_text(json.dumps(state))
    controller.up(PING, env="production", version="v1")

    async def all_replaced_and_in_sync() -> bool:
        nodes = await _nodes(controller)
        return set(nodes) == set(old_pids) and all(
            n["connected"] and n["in_sync"] for n in nodes.values()
        )

    await eventually_async(all_replaced_and_in_sync, timeout=60, what="every Envoy replaced")
    runtime = json.loads((controller.data / "runtime" / "runtime.json").read_text())
    env = runtime["environments"]["production"]
    new_pids = {i["id"]: i["envoy_pid"] for i in env["instances"]}
    new_pids |= {p["node_id"]: p["pid"] for p in env["proxies"].values()}
    assert set(new_pids) == set(old_pids)
    assert all(new_pids[n] != old_pids[n] for n in old_pids), (old_pids, new_pids)
    assert not any(processes.alive(p) for p in old_pids.values())
    # The replaced instances' apps start again (a restart the operator sees once, at the upgrade).
    public = (await controller.urls())["public"]

    async def served() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            return (await client.post(f"{public}/ping", json={})).status_code == 200

    await eventually_async(served, timeout=60, what="the app serving again")
    await _public_served_by_v1(public)
