"""CLI (`switchback sidecar bootstrap`, `switchback xds status`), admin HTTP app, other node kinds."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from switchback.cli import sidecar as sidecar_cli
from switchback.cli import xds as xds_cli
from switchback.xds.admin import admin_app, parse_selector
from switchback.xds.control import ControlPlane
from switchback.xds.pki import SERVER_IDENTITY, Authority
from switchback.xds.resources import NodeSpec
from switchback.xds.sidecar import EnvoyProcess, bootstrap_config, find_envoy
from tests.eventually import eventually

from .conftest import enrolled_client, free_port, wait_until

runner = CliRunner()
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    "extra",
    [
        ["--app-port", "8080", "--listen-port", "15000", "--outbound", "scenario=15001"],
        ["--kind", "service-proxy", "--service", "apigw", "--listen-port", "16000"],
        ["--kind", "ingress", "--route", "8000=apigw", "--route", "8001=apigw-standby"],
        ["--app-port", "8080", "--listen-port", "15000", "--xds-api", "delta"],
        ["--app-port", "8080", "--listen-port", "15000", "--insecure"],
    ],
)
def test_bootstrap_cli_is_valid_envoy_config(tmp_path: Path, extra: list[str]) -> None:
    args = ["bootstrap", "--node-id", "n1", "--xds", "127.0.0.1:18000", "--role", "apigw"]
    if "--insecure" not in extra:
        Authority(tmp_path / "ca").enroll_files("n1", tmp_path / "tls")
        args += ["--tls-dir", str(tmp_path / "tls")]
    res = runner.invoke(sidecar_cli.app, args + extra)
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load(res.output)
    assert cfg["node"]["id"] == "n1"
    assert cfg["node"]["metadata"]["role"] == "apigw"
    api_type = "DELTA_GRPC" if "delta" in extra else "GRPC"  # default: state of the world
    assert cfg["dynamic_resources"]["ads_config"]["api_type"] == api_type
    [xds] = cfg["static_resources"]["clusters"]
    if "--insecure" in extra:
        assert "transport_socket" not in xds
    else:
        tls = xds["transport_socket"]["typed_config"]["common_tls_context"]
        assert tls["tls_certificates"][0]["private_key"]["filename"] == str(
            tmp_path / "tls/node.key"
        )
        sans = tls["validation_context"]["match_typed_subject_alt_names"]
        assert sans == [{"san_type": "URI", "matcher": {"exact": SERVER_IDENTITY}}]
    path = tmp_path / "b.yaml"
    path.write_text(res.output)
    proc = subprocess.run(
        [
            find_envoy(),
            "--mode",
            "validate",
            "-c",
            str(path),
            "--disable-hot-restart",
            "-l",
            "error",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bootstrap_cli_rejects_unknown_xds_api() -> None:
    args = ["bootstrap", "--node-id", "n1", "--xds-api", "incremental", "--insecure"]
    res = runner.invoke(sidecar_cli.app, args)
    assert res.exit_code != 0 and "--xds-api" in res.output


def test_bootstrap_cli_needs_credentials(tmp_path: Path) -> None:
    res = runner.invoke(sidecar_cli.app, ["bootstrap", "--node-id", "n1"])
    assert res.exit_code == 2 and "--tls-dir" in res.output, res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(sidecar_cli.app, ["bootstrap", "--node-id", "n1", "--tls-dir", str(empty)])
    assert res.exit_code == 2 and "enroll" in res.output, res.output


def test_find_envoy_prefers_real_binary() -> None:
    path = Path(find_envoy())
    with path.open("rb") as fh:
        assert fh.read(4) == b"\x7fELF"


def test_parse_selector() -> None:
    assert parse_selector("role=apigw, version=current") == {"role": "apigw", "version": "current"}
    assert parse_selector("id=a|b") == {"id": ["a", "b"]}
    assert parse_selector("") == {}


async def test_admin_api(cp: ControlPlane, tmp_path: Path) -> None:
    md = {"kind": "sidecar", "role": "apigw", "version": "current", "listen_port": 1, "app_port": 2}
    client = enrolled_client(cp, "n1", md, tmp_path)
    await client.start()
    try:
        transport = httpx.ASGITransport(app=admin_app(cp, TOKEN))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://admin", headers=AUTH
        ) as http:
            await wait_until(lambda: bool(cp.nodes()), what="node")
            r = await http.put("/services/apigw-new/endpoints", json={"endpoints": ["127.0.0.1:9"]})
            assert r.status_code == 200
            assert (await http.get("/services")).json() == {
                "services": {"apigw-new": [["127.0.0.1", 9]]}
            }
            bad = await http.put("/services/x/endpoints", json={"endpoints": [["nope", 1]]})
            assert bad.status_code == 400
            v = (
                await http.post("/redirect", json={"selector": "role=apigw", "target": "apigw-new"})
            ).json()["version"]
            rep = (
                await http.post(
                    "/wait-acked", json={"selector": {"role": "apigw"}, "version": v, "timeout": 5}
                )
            ).json()
            assert rep["ok"] and rep["acked"] == ["n1"]
            nodes = (await http.get("/nodes", params={"selector": "id=n1"})).json()["nodes"]
            assert nodes[0]["acked_version"] >= v and nodes[0]["connected"]
            rules = (await http.get("/redirects")).json()["redirects"]
            assert rules == [{"selector": {"role": "apigw"}, "target": "apigw-new"}]
            v2 = (await http.post("/redirect/clear", json={"selector": {"role": "apigw"}})).json()[
                "version"
            ]
            assert v2 > v
    finally:
        await client.stop()


@pytest.fixture
async def served_admin(cp: ControlPlane) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(admin_app(cp, TOKEN), port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, what="admin server")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_xds_status_cli(cp: ControlPlane, served_admin: str, tmp_path: Path) -> None:
    md = {"kind": "sidecar", "role": "apigw", "version": "current", "listen_port": 1, "app_port": 2}
    client = enrolled_client(cp, "node-a", md, tmp_path)
    await client.start()
    try:
        assert (await cp.wait_acked(None, timeout=5, expect=["node-a"])).ok

        def invoke(*args: str, token: str | None = TOKEN) -> Any:
            env = {"SWITCHBACK_XDS_TOKEN": token or ""}
            data = ["--data", str(tmp_path / "no-token-here")]
            return runner.invoke(xds_cli.app, [*args, "--admin", served_admin, *data], env=env)

        res = await asyncio.to_thread(invoke, "redirect", "role=apigw", "apigw-new", token=None)
        assert res.exit_code == 1 and "401" in res.output, res.output
        assert cp.redirects() == []  # refused: nothing changed

        res = await asyncio.to_thread(invoke, "status")
        assert res.exit_code == 0, res.output
        assert "node-a" in res.output and "up" in res.output
        assert "sotw" in res.output  # the protocol the node speaks (the simulated client: SotW)
        res = await asyncio.to_thread(invoke, "status", "--json")
        assert '"node-a"' in res.output
        res = await asyncio.to_thread(invoke, "redirect", "role=apigw", "apigw-new")
        assert res.exit_code == 0 and "1 acked" in res.output, res.output
    finally:
        await client.stop()


async def test_service_proxy_and_ingress_nodes(
    cp: ControlPlane, app_factory, tmp_path: Path
) -> None:
    """Service proxies (tcp_proxy, EDS) and an ingress are nodes of the same control plane."""
    a, b = app_factory("a"), app_factory("b")
    await cp.set_endpoints("apigw", [("127.0.0.1", a.port)])
    proxy_port, ingress_port = free_port(), free_port()
    assert cp.port is not None
    specs = {
        "svc-apigw": NodeSpec(kind="service-proxy", service="apigw", listen_port=proxy_port),
        "ingress": NodeSpec(kind="ingress", routes={ingress_port: "apigw"}),
    }
    envoys = []
    for node_id, spec in specs.items():
        tls = cp.enroll(node_id, spec, tmp_path / node_id / "tls")
        config = bootstrap_config(node_id, "127.0.0.1", cp.port, spec, tls=tls)
        envoys.append(EnvoyProcess(node_id, config, workdir=tmp_path / node_id))
    try:
        for e in envoys:
            e.start()
        for e in envoys:
            await asyncio.to_thread(e.wait_ready)
        pinned = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{proxy_port}", limits=httpx.Limits(max_connections=1)
        )
        async with pinned:
            assert (await pinned.get("/")).json()["app"] == "a"
            v = await cp.set_endpoints("apigw", [("127.0.0.1", b.port)])
            assert (await cp.wait_acked(None, v, timeout=5)).ok
            # Like kube-proxy: the established connection stays where it was...
            assert (await pinned.get("/")).json()["app"] == "a"
            # ...new connections go to the new endpoints.
            async with httpx.AsyncClient() as fresh:
                r = await fresh.get(f"http://127.0.0.1:{proxy_port}/")
                assert r.json()["app"] == "b"
                r = await fresh.get(f"http://127.0.0.1:{ingress_port}/")
                assert r.json()["app"] == "b"
        with socket.create_connection(("127.0.0.1", ingress_port), timeout=2):
            pass
    finally:
        for e in envoys:
            e.stop()


async def test_sidecar_enrolls_through_the_admin_api_and_serves(
    cp: ControlPlane, served_admin: str, app_factory, tmp_path: Path
) -> None:
    """The standalone path: `switchback sidecar bootstrap --enroll` registers the node and gets
    its certificate over the admin API (token), and the Envoy it configures connects over mTLS."""
    app = app_factory("mine")
    listen = free_port()
    tls = tmp_path / "tls"
    args = ["bootstrap", "--node-id", "cli-1", "--xds", f"127.0.0.1:{cp.port}", "--role", "apigw",
            "--app-port", str(app.port), "--listen-port", str(listen), "--tls-dir", str(tls),
            "--enroll", "--admin", served_admin, "--data", str(tmp_path / "no-token-here")]  # fmt: skip

    def invoke(token: str) -> Any:
        return runner.invoke(sidecar_cli.app, args, env={"SWITCHBACK_XDS_TOKEN": token})

    res = await asyncio.to_thread(invoke, "")
    assert res.exit_code == 2 and "SWITCHBACK_XDS_TOKEN" in res.output, res.output
    res = await asyncio.to_thread(invoke, "wrong")
    assert res.exit_code == 1 and "401" in res.output, res.output
    assert cp.registered("cli-1") is None
    res = await asyncio.to_thread(invoke, TOKEN)
    assert res.exit_code == 0, res.output
    spec = cp.registered("cli-1")
    assert spec is not None
    assert (spec.kind, spec.listen_port, spec.app_port, spec.labels["role"]) == (
        "sidecar",
        listen,
        app.port,
        "apigw",
    )
    assert stat.S_IMODE((tls / "node.key").stat().st_mode) == 0o600
    envoy = EnvoyProcess("cli-1", yaml.safe_load(res.stdout), workdir=tmp_path / "envoy")
    envoy.start()
    try:
        await asyncio.to_thread(envoy.wait_ready)
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"http://127.0.0.1:{listen}/")).json()["app"] == "mine"
    finally:
        envoy.stop()


def test_xds_serve_keeps_a_private_token_and_refuses_calls_without_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    xds_port, admin_port = free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    env = {k: v for k, v in os.environ.items() if k != "SWITCHBACK_XDS_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchback.cli", "xds", "serve", "--data", str(data),
         "--port", str(xds_port), "--admin-port", str(admin_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def up() -> bool:
        assert proc.poll() is None, f"xds serve exited with {proc.returncode}"
        return httpx.get(f"{admin}/healthz").status_code == 200

    try:
        eventually(up, timeout=60, what="xds serve")
        token = (data / "xds-admin-token").read_text().strip()
        assert stat.S_IMODE((data / "xds-admin-token").stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "xds-ca" / "ca.key").stat().st_mode) == 0o600
        assert httpx.get(f"{admin}/nodes").status_code == 401
        ok = httpx.get(f"{admin}/nodes", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json() == {"nodes": []}
        # The client commands find the token through --data.
        res = runner.invoke(
            xds_cli.app, ["status", "--admin", admin, "--data", str(data)], env={**env}
        )
        assert res.exit_code == 0, res.output
        res = runner.invoke(
            xds_cli.app,
            ["redirect", "role=apigw", "x", "--admin", admin, "--data", str(tmp_path / "none")],
            env={**env, "SWITCHBACK_XDS_TOKEN": ""},
        )
        assert res.exit_code == 1 and "401" in res.output
    finally:
        proc.terminate()
        proc.wait(30)
