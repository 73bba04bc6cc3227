"""Fixtures for examples/provision: real peers on loopback and real `switchback serve` processes.

* AWS: moto's server (``moto_server``), boto3 pointed at it through ``AWS_ENDPOINT_URL``.
* Network device: Debian's ``netconfd`` behind its own ``sshd`` (host key, authorized key and
  config in a temporary folder), reached by ncclient over SSH with a key made for the test.

Peers are session-scoped (starting them takes ~1.5 s, and every test uses its own device name
and interface, so they do not see each other's work); every process is started in its own
process group on a free port and its group is killed at the end. Readiness is always polled
with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "provision"
sys.path.insert(0, str(APP))

from provision_app import frr_lab, lab  # noqa: E402

SWITCHBACK = Path(sys.executable).parent / "switchback"
TOKEN = "provision-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
DEVICES = [f"leaf{i}" for i in range(1, 9)]  # names in the inventory, all on the one netconfd


@pytest.fixture(scope="session")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("provision-lab")


@pytest.fixture(scope="session")
def moto(lab_dir: Path) -> Iterator[lab.Moto]:
    m = lab.start_moto(lab_dir)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="session")
def device(lab_dir: Path) -> Iterator[lab.NetconfDevice]:
    why = lab.netconf_available()
    if why:
        if os.geteuid() != 0:
            pytest.skip(f"NETCONF device: {why}")
        pytest.fail(f"NETCONF device: {why} — run `make system-deps`")
    d = lab.start_netconf_device(lab_dir / "leaf")
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def inventory(lab_dir: Path, device: lab.NetconfDevice) -> Path:
    path = lab_dir / "devices.yaml"
    lab.write_inventory(path, {name: device.settings(timeout=10) for name in DEVICES})
    return path


@pytest.fixture(scope="session")
def ec2(moto: lab.Moto) -> Any:
    import boto3

    return boto3.client(
        "ec2",
        endpoint_url=moto.url,
        region_name=moto.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=60.0)

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, headers=ADMIN, **kw)

    def tx(self, xid: str) -> dict[str, Any]:
        r = self.admin("GET", f"/transactions/{xid}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_for(self, xid: str, check: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        tx: dict[str, Any] = {}
        while time.monotonic() < deadline:
            tx = self.tx(xid)
            if check(tx):
                return tx
            time.sleep(0.05)  # polling interval
        raise AssertionError(f"transaction {xid} never matched; last seen: {tx}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited ({self.proc.returncode}):\n{self.log.read_text()}"
                )
            try:
                if self.client.get("/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # polling interval
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def kill9(self) -> None:
        """SIGKILL: no graceful anything, exactly like a crashed host process."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self.client.close()


def start_server(data: Path, moto: lab.Moto, inventory: Path) -> Server:
    return serve_app(data, {**moto.env(), "PROVISION_DEVICES": str(inventory)})


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, moto: lab.Moto, inventory: Path
) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("serve") / "data", moto, inventory)
    try:
        yield s
    finally:
        s.stop()


# ------------------------------------------------------------- FRRouting in a network namespace


@pytest.fixture(scope="session")
def frr_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[frr_lab.FrrRouter]:
    """A real FRR (zebra + staticd) in a network namespace of its own, as the inventory's
    ``edge1``; killed, its namespace deleted and its files removed at the end."""
    why = frr_lab.frr_available()
    if why:
        if os.geteuid() != 0:
            pytest.skip(f"FRR router: {why}")
        pytest.fail(f"FRR router: {why} — run `make system-deps`")
    router = frr_lab.start_frr_router(tmp_path_factory.mktemp("frr-lab"), name="edge1")
    try:
        yield router
    finally:
        router.stop()


@pytest.fixture(scope="session")
def frr_inventory(tmp_path_factory: pytest.TempPathFactory, frr_router: frr_lab.FrrRouter) -> Path:
    path = tmp_path_factory.mktemp("frr-inventory") / "devices.yaml"
    lab.write_inventory(path, {"edge1": frr_router.settings(timeout=10, converge_timeout=2)})
    return path


def serve_app(data: Path, env: dict[str, str]) -> Server:
    """`switchback serve` of the provision app with these settings, ready (stopped if not)."""
    port = lab.free_port()
    log = data.parent / f"serve-{port}.log"
    env = {**os.environ, **env, "SWITCHBACK_ADMIN_TOKENS": f"tester={TOKEN}"}
    cmd = [str(SWITCHBACK), "serve", str(APP), "--port", str(port), "--data", str(data),
           "--graceful-timeout", "3"]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def frr_server(tmp_path_factory: pytest.TempPathFactory, frr_inventory: Path) -> Iterator[Server]:
    """The app served with the FRR router as its only device (no AWS needed for /routes)."""
    s = serve_app(
        tmp_path_factory.mktemp("serve-frr") / "data", {"PROVISION_DEVICES": str(frr_inventory)}
    )
    try:
        yield s
    finally:
        s.stop()
