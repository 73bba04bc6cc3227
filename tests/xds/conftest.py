"""Fixtures for xDS tests: a control plane, loopback HTTP apps and real Envoy sidecars."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from switchback.runtime import processes
from switchback.xds.cache import ROUTE, Snapshot
from switchback.xds.client import AdsClient
from switchback.xds.control import ControlPlane
from switchback.xds.pki import Authority
from switchback.xds.resources import NodeSpec, _route_to, route_config
from switchback.xds.sidecar import EnvoyProcess, bootstrap_config


def free_port() -> int:
    # Below the kernel's ephemeral range, as the runtime does: Envoy binds some of these later.
    return processes.free_port()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def _reply(self) -> None:
        app: TestApp = self.server.app  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        redirected_by = self.headers.get("x-switchback-redirected-by")
        app.record(self.path, redirected_by)
        body = json.dumps({"app": app.name, "redirected_by": redirected_by}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _reply
    do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class TestApp:
    """A real HTTP app on loopback that answers with its name."""

    name: str
    server: ThreadingHTTPServer | None = None
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    __test__ = False  # not a pytest test class

    def record(self, path: str, redirected_by: str | None) -> None:
        self.seen.append((path, redirected_by))

    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.app = self  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def app_factory() -> Iterator[Callable[[str], TestApp]]:
    apps: list[TestApp] = []

    def make(name: str) -> TestApp:
        app = TestApp(name)
        app.start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "xds-state.json"


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    """The control plane's CA (persisted: a restarted control plane reuses it)."""
    return Authority(tmp_path / "xds-ca")


@pytest.fixture
async def cp(state_file: Path, authority: Authority) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(state_file=state_file, authority=authority)
    await plane.start()
    yield plane
    await plane.stop(0)


def enrolled_client(
    cp: ControlPlane, node_id: str, metadata: dict[str, Any], tls_dir: Path, **kw: Any
) -> AdsClient:
    """A simulated node registered with `metadata` as its spec, with its own credentials."""
    creds = cp.enroll(node_id, NodeSpec.from_metadata(metadata), tls_dir / node_id)
    assert creds is not None
    return AdsClient(
        f"127.0.0.1:{cp.port}",
        node_id,
        metadata,
        credentials=creds.channel_credentials(),
        **kw,
    )


@dataclass
class Sidecar:
    node_id: str
    envoy: EnvoyProcess
    listen_port: int
    app: TestApp

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"


SidecarFactory = Callable[..., Any]


@pytest.fixture
async def sidecars(tmp_path: Path) -> AsyncIterator[SidecarFactory]:
    """start(cp, node_id, app, role=..., version=..., xds_api="sotw", wait=True) -> Sidecar.

    The sidecar is enrolled with the control plane (registered spec, its own certificate)."""
    started: list[EnvoyProcess] = []

    async def start(
        cp: ControlPlane,
        node_id: str,
        app: TestApp,
        role: str = "apigw",
        version: str = "current",
        outbound: dict[str, int] | None = None,
        xds_api: str = "sotw",
        wait: bool = True,
    ) -> Sidecar:
        listen = free_port()
        spec = NodeSpec(
            kind="sidecar",
            listen_port=listen,
            app_port=app.port,
            outbound=outbound or {},
            labels={"role": role, "version": version, "environment": "test"},
        )
        workdir = tmp_path / node_id
        tls = cp.enroll(node_id, spec, workdir / "tls")
        assert cp.port is not None
        envoy = EnvoyProcess(
            node_id,
            bootstrap_config(node_id, "127.0.0.1", cp.port, spec, xds_api=xds_api, tls=tls),
            workdir=workdir,
        )
        started.append(envoy)
        envoy.start()
        if wait:
            await asyncio.to_thread(envoy.wait_ready)
        return Sidecar(node_id, envoy, listen, app)

    yield start
    for envoy in started:
        envoy.stop()


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll a condition with a deadline (no sleeps standing in for synchronisation)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.01)


def envoy_stat(sc: Sidecar, name: str) -> int:
    r = sc.envoy.admin_get(f"/stats?filter=^{name}$&format=json")
    for s in r.json().get("stats", []):
        if s.get("name") == name:
            return int(s.get("value") or 0)
    raise KeyError(f"{sc.node_id}: no Envoy stat {name}")


def push_bad_route(cp: ControlPlane, node_id: str) -> Snapshot:
    """Bypass the typed API (which refuses what Envoy would refuse) and push a config Envoy
    NACKs: the `inbound` route to a cluster that does not exist."""
    snap = cp.cache.snapshot(node_id)
    assert snap is not None
    bad_routes = {"inbound": route_config("inbound", [_route_to("no-such-cluster")])}
    bad = Snapshot(cp.state.next_version(), {**snap.resources, ROUTE: bad_routes})
    cp.cache.set_snapshot(node_id, bad)
    return bad
