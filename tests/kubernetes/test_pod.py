"""A rendered pod, run on this machine as the kubelet would run it: its Envoy container (the
ConfigMap's bootstrap, the container's args with ``$(VAR)`` expanded from the downward API)
and its app container (the container's command and env, the database URL a PostgreSQL one),
beside our real xDS control plane. No Kubernetes here: what this proves is that the pieces the
manifests wire together fit — the sidecar connects with the pod's name as its node id, the
control plane configures its inbound listener from the bootstrap's metadata, every probe answers
on the port and path the manifest gives, the health listener exposes nothing else, and the
preStop hook drains the sidecar."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchback.kubernetes.manifests import BOOTSTRAP_KEY, Build, Ports, Settings, render
from switchback.runtime import processes
from switchback.runtime.processes import free_port
from switchback.xds.control import ControlPlane
from switchback.xds.sidecar import find_envoy
from tests.engine.conftest import PG_URL, drop_pg_schema, pg_schema
from tests.eventually import eventually_async

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "quickstart"
NS, POD = "podtest", "scenario-v1-6d4f9c7b8-x2x7q"


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], value)


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(state_file=tmp_path / "xds-state.json")
    await plane.start("127.0.0.1", 0)
    try:
        yield plane
    finally:
        await plane.stop(1.0)


async def test_a_rendered_pod_runs_and_answers_its_probes(cp: ControlPlane, tmp_path: Path) -> None:
    assert cp.port is not None
    ports = Ports(http=free_port(), app=free_port(), peer=free_port(), envoy_admin=free_port(),
                  health=free_port())  # fmt: skip
    settings = Settings(app="quickstart", environment=NS, ports=ports, xds_host="127.0.0.1",
                        xds_port=cp.port)  # fmt: skip
    objs = render(settings, Build("v1"))
    dep = next(
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "scenario-v1"
    )
    pod = dep["spec"]["template"]["spec"]
    (envoy,), (app,) = pod["initContainers"], pod["containers"]
    (vol,) = [v for v in pod["volumes"] if "configMap" in v]
    cm = next(o for o in objs if o["metadata"]["name"] == vol["configMap"]["name"])
    downward = {"POD_NAME": POD, "POD_NAMESPACE": NS}

    boot = tmp_path / BOOTSTRAP_KEY
    boot.write_text(cm["data"][BOOTSTRAP_KEY])
    args = [expand(a, downward) for a in envoy["args"]]
    args[args.index("--config-path") + 1] = str(boot)

    secrets = {"SWITCHBACK_DB": f"{PG_URL}?schema={pg_schema(tmp_path)}",
               "SWITCHBACK_ADMIN_TOKENS": "ops=pod-test-token"}  # fmt: skip
    env: dict[str, str] = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for e in app["env"]:
        if "value" in e:
            env[e["name"]] = expand(e["value"], {**downward, **env})
        elif "fieldRef" in e["valueFrom"]:
            env[e["name"]] = downward[e["name"]]
        else:
            env[e["name"]] = secrets[e["name"]]
    command = [sys.executable, "-m", "switchback.cli", *app["command"][1:]]
    command[command.index("/app")] = str(APP)

    envoy_pid = processes.spawn([find_envoy(), *args], tmp_path / "envoy.log")
    app_pid = processes.spawn(command, tmp_path / "app.log", env=env)
    try:
        node = f"{NS}.{POD}"  # the pod's name, through --service-node

        def connected() -> Any:
            return [n for n in cp.nodes() if n.get("id") == node and n.get("connected")]

        await eventually_async(connected, timeout=30, what=f"node {node} on the control plane")
        async with httpx.AsyncClient(timeout=3) as client:

            async def answers(port: int, path: str) -> bool:
                return (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 200

            probes = [
                (c["name"], kind, c[kind]["httpGet"])
                for c in (envoy, app)
                for kind in ("readinessProbe", "livenessProbe", "startupProbe")
            ]
            for container, kind, get in probes:
                await eventually_async(
                    lambda get=get: answers(get["port"], get["path"]),
                    timeout=60,
                    what=f"{container} {kind} {get['path']} on {get['port']}",
                )
            # The app's own answer came through the sidecar (the xDS-configured inbound listener).
            r = await client.get(f"http://127.0.0.1:{ports.http}/healthz")
            assert r.json() == {"status": "ok", "role": "scenario"}
            # The health listener routes its few paths, nothing of the admin API.
            stats = await client.get(f"http://127.0.0.1:{ports.health}/stats/prometheus")
            assert stats.status_code == 200 and "envoy_server_live" in stats.text
            for path in ("/quitquitquit", "/config_dump", "/drain_listeners", "/stats"):
                assert (
                    await client.post(f"http://127.0.0.1:{ports.health}{path}")
                ).status_code == 404
            # The preStop hook (run as the kubelet would: in the pod, its exec command).
            pre = app["lifecycle"]["preStop"]["exec"]["command"]
            pre = [sys.executable, "-m", "switchback.cli", *pre[1:]]
            pre[pre.index("--sleep") + 1] = "0"
            hook = processes.spawn(pre, tmp_path / "prestop.log")

            def returned() -> bool:
                processes.reap(hook)
                return not processes.alive(hook)

            await eventually_async(returned, timeout=30, what="the preStop hook to return")
            r = await client.get(f"http://127.0.0.1:{ports.http}/healthz")
            assert r.status_code == 200 and r.headers["connection"] == "close"  # drained
    finally:
        processes.stop(app_pid, timeout=15)
        processes.stop(envoy_pid, timeout=5)
        drop_pg_schema(tmp_path)
