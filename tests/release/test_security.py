"""`switchback up` against an outside probe: nobody without a node's credentials can take its
traffic over the controller's xDS port, and what it leaves on disk is private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import grpc
import httpx

from switchback.release.client import ControllerClient
from switchback.xds.cache import CLUSTER
from switchback.xds.client import AdsClient
from tests.xds.conftest import TestApp


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
