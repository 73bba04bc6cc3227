"""`up` again after a release and a stop: the same current version serves; a build name used
before starts cleanly; a failed `up` leaves nothing running and says why; every process logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from switchback.release.client import ControllerClient
from switchback.runtime import processes

from .conftest import PING


def processes_of(data: Path) -> list[str]:
    """Every live process whose command line names ``data`` (controller, apps, Envoys)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(str(data).encode() in a for a in argv):
            found.append(f"{entry.name}: {b' '.join(argv).decode(errors='replace')[:200]}")
    return found


async def release(ctl: ControllerClient, version: str) -> dict:
    r = await ctl.call(
        "POST", "/releases",
        {"environment": "production", "version": version, "app_dir": str(PING), "wait": True},
    )  # fmt: skip
    assert r["status"] == "completed", r
    return r


async def served_by(url: str) -> str | None:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{url}/ping", json={})
    assert r.status_code == 200, r.text
    return r.headers.get("x-switchback-version")


async def test_up_after_a_release_and_down_serves_the_same_version(
    controller: ControllerClient,
) -> None:
    await release(controller, "v2")
    public = (await controller.urls())["public"]
    controller.down()
    assert processes_of(controller.data) == []
    # `up` names v1 (as `make up` does): what ran, v2, runs again, on the same public port.
    controller.up(PING, env="production", version="v1")
    assert (await controller.urls())["public"] == public
    assert await served_by(public) == "v2"
    env = (await controller.call("GET", "/status"))["environments"]["production"]
    assert env["current"] == "v2" and {i["build"] for i in env["instances"]} == {"v2"}
    assert env["redirects"] == {}  # retiring v1 removed its redirect rules
    # ... and it can release again, to a build name used before.
    await release(controller, "v1")
    assert await served_by(public) == "v1"


async def test_a_stale_redirect_left_by_an_older_version_never_routes_a_new_instance_away(
    tmp_path: Path,
) -> None:
    """A data folder from before the fix: a release's redirect rules survived the retirement of
    their build. Restored at start, they must not route a new instance of that name away."""
    data = tmp_path / "data"
    data.mkdir()
    stale = [
        [{"environment": "production", "role": role, "version": "v1"}, f"production.{role}-new"]
        for role in ("apigw", "scenario", "transaction")
    ]
    (data / "xds-state.json").write_text(
        json.dumps({"version": 1, "endpoints": {}, "redirects": stale})
    )
    ctl = ControllerClient(data)
    try:
        ctl.up(PING, env="production", version="v1", timeout=120)
        assert await served_by((await ctl.urls())["public"]) == "v1"
        assert json.loads((data / "xds-state.json").read_text())["redirects"] == []
    finally:
        ctl.down()
    assert processes_of(data) == []


def test_a_failed_up_stops_everything_it_started_and_shows_the_log(tmp_path: Path) -> None:
    app = tmp_path / "broken"
    (app / "scenarios").mkdir(parents=True)
    # Valid for `up`, but its block module cannot be imported: every instance exits at start.
    (app / "scenarios" / "ping.yaml").write_text(
        "name: ping\npath: /ping\nblocks:\n  - name: pong\n    do: missing_module:pong\n"
    )
    data = tmp_path / "data"
    res = subprocess.run(
        [sys.executable, "-m", "switchback.cli", "up", str(app), "--data", str(data)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert res.returncode != 0
    # The error says which instance failed and shows the end of its log, which says why.
    assert "exited before it was ready" in res.stderr, res.stderr
    assert "missing_module" in res.stderr, res.stderr
    assert processes_of(data) == []  # no controller, Envoy or app left running
    info = data / "controller.json"
    assert not info.exists() or not processes.alive(json.loads(info.read_text())["pid"])


async def test_the_controller_and_every_instance_log_json_lines(
    controller: ControllerClient,
) -> None:
    await served_by((await controller.urls())["public"])
    controller_log = [
        json.loads(line) for line in (controller.data / "controller.log").read_text().splitlines()
    ]
    messages = {e["msg"] for e in controller_log}
    assert {"controller starting", "controller ready", "environment up"} <= messages
    assert all(e["role"] == "controller" for e in controller_log)
    logs = controller.data / "runtime" / "logs"
    apigw = [
        json.loads(line) for line in (logs / "production.apigw.v1.0.log").read_text().splitlines()
    ]
    apigw += [
        json.loads(line) for line in (logs / "production.apigw.v1.1.log").read_text().splitlines()
    ]
    assert "gateway ready" in {e["msg"] for e in apigw}
    # The access log: the call above, on one of the two apigw instances.
    assert any(e["logger"] == "switchback.access" and e.get("path") == "/ping" for e in apigw), (
        apigw
    )
    for role in ("scenario", "transaction"):
        lines = (logs / f"production.{role}.v1.0.log").read_text().splitlines()
        assert "gateway ready" in {json.loads(line)["msg"] for line in lines}
