"""The README's walkthrough of examples/provision, over HTTP, against real peers: moto's EC2 and
a NETCONF device (netconfd behind sshd). What each test asserts is seen through the peers
themselves — ``describe_instances`` by the xid tag, ``get-config`` on the device — not through
switchback's own records."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from provision_app import lab
from provision_app.device import read_interface
from provision_app.settings import TAG_XID

from tests.examples.conftest import Server, start_server

pytestmark = pytest.mark.timeout(120)


def request(n: int, device: str) -> dict[str, Any]:
    return {
        "vm_name": f"web-{n}",
        "image_id": "ami-0123456789abcdef0",
        "instance_type": "t3.micro",
        "device": device,
        "interface": f"vm-web-{n}",
        "description": f"uplink of web-{n}",
    }


def vms(ec2: Any, xid: str) -> dict[str, str]:
    """Instance id → state, of every instance tagged with this xid (what the UNDO relies on)."""
    pages = ec2.describe_instances(Filters=[{"Name": f"tag:{TAG_XID}", "Values": [xid]}])
    return {
        i["InstanceId"]: i["State"]["Name"] for r in pages["Reservations"] for i in r["Instances"]
    }


def on_device(device: lab.NetconfDevice, interface: str) -> dict[str, Any] | None:
    with lab.netconf_session(device) as m:
        return read_interface(m, interface)


@contextmanager
def locked(device: lab.NetconfDevice) -> Iterator[None]:
    """Another NETCONF session holds <lock> on the running datastore: the device refuses edits."""
    with lab.netconf_session(device) as m:
        m.lock("running")
        try:
            yield
        finally:
            m.unlock("running")


def test_success_creates_the_vm_and_config_a(
    server: Server, ec2: Any, device: lab.NetconfDevice
) -> None:
    r = server.client.post("/foo/bar", json=request(1, "leaf1"))
    assert r.status_code == 200, r.text
    body = r.json()
    xid = body["xid"]
    assert body["status"] == "completed"
    result = body["result"]
    assert result["state"] == "running"
    assert vms(ec2, xid) == {result["instance_id"]: "running"}
    config = on_device(device, "vm-web-1")
    assert config is not None
    assert f"xid={xid}" in config["description"]
    assert result["instance_id"] in config["description"]
    tx = server.tx(xid)
    assert [(b["name"], b["status"]) for b in tx["blocks"]] == [
        ("create_vm", "done"),
        ("configure_device", "done"),
        ("verify", "done"),
    ]


def test_bad_request_creates_nothing(server: Server) -> None:
    r = server.client.post("/foo/bar", json={**request(9, "leaf1"), "image_id": "not-an-ami"})
    assert r.status_code == 422, r.text
    assert [v["path"] for v in r.json()["detail"]["violations"]] == ["/image_id"]


def test_unknown_device_is_refused_before_anything_is_created(server: Server, ec2: Any) -> None:
    """leaf9 is not in the inventory: a 422 naming the devices there, no transaction, no VM
    (it used to create a VM, park at block 1 and fail its rollback)."""
    before = server.admin("GET", "/transactions", params={"limit": 1000}).json()["transactions"]
    running = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["web-19"]}])
    assert running["Reservations"] == []
    r = server.client.post("/foo/bar", json=request(19, "leaf9"))
    assert r.status_code == 422, r.text
    (violation,) = r.json()["detail"]["violations"]
    assert violation["path"] == "/device"
    assert violation["message"].startswith("no device 'leaf9' in the inventory (have: leaf1, ")
    after = server.admin("GET", "/transactions", params={"limit": 1000}).json()["transactions"]
    assert after == before
    running = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["web-19"]}])
    assert running["Reservations"] == []


def test_unreadable_inventory_is_a_503_and_starts_nothing(tmp_path: Path, moto: lab.Moto) -> None:
    server = start_server(tmp_path / "data", moto, tmp_path / "missing.yaml")
    try:
        r = server.client.post("/foo/bar", json=request(20, "leaf1"))
        assert r.status_code == 503, r.text
        assert "cannot read device inventory" in r.json()["detail"]["message"]
        listed = server.admin("GET", "/transactions").json()["transactions"]
        assert listed == []
    finally:
        server.stop()


def test_device_refuses_then_rollback_terminates_the_vm(
    server: Server, ec2: Any, device: lab.NetconfDevice
) -> None:
    with locked(device):
        r = server.client.post("/foo/bar", json=request(2, "leaf2"))
        assert r.status_code == 424, r.text
        body = r.json()
        xid = body["xid"]
        assert body["status"] == "suspended"
        assert body["failed_block"] == "configure_device"
        assert body["error"]["type"] == "DeviceError"
        # The device's own words: yuma's <error-tag> and <error-message> for a locked datastore.
        assert body["error"]["message"] == "leaf2 refused edit-config: in-use: config locked"
        ((vm_id, state),) = vms(ec2, xid).items()
        assert state == "running"
        # Rolled back while the device still refuses edits: the UNDO finds config A absent.
        done = server.admin(
            "POST", f"/transactions/{xid}/rollback", json={"reason": "device busy, give up"}
        )
    assert done.status_code == 200, done.text
    tx = done.json()
    assert tx["status"] == "rolled_back"
    assert [b["status"] for b in tx["blocks"]] == ["undone", "undone", "pending"]
    assert vms(ec2, xid) == {vm_id: "terminated"}
    assert on_device(device, "vm-web-2") is None


def test_device_refuses_then_rollforward_completes(
    server: Server, ec2: Any, device: lab.NetconfDevice
) -> None:
    with locked(device):
        r = server.client.post("/foo/bar", json=request(3, "leaf3"))
        assert r.status_code == 424, r.text
        xid = r.json()["xid"]
        assert "config locked" in r.json()["error"]["message"]
        assert on_device(device, "vm-web-3") is None
    # The device recovered (the lock is gone): run again from the failed block.
    done = server.admin(
        "POST", f"/transactions/{xid}/rollforward", json={"reason": "lock released"}
    )
    assert done.status_code == 200, done.text
    tx = done.json()
    assert tx["status"] == "completed", tx
    vm = tx["result"]
    assert vms(ec2, xid) == {vm["instance_id"]: "running"}, "a re-run must never make a second VM"
    config = on_device(device, "vm-web-3")
    assert config is not None and f"xid={xid}" in config["description"]


def test_config_a_of_someone_else_is_never_overwritten_nor_removed(
    server: Server, ec2: Any, device: lab.NetconfDevice
) -> None:
    first = server.client.post("/foo/bar", json=request(4, "leaf4"))
    assert first.status_code == 200, first.text
    # A second VM for the same interface: the device refuses to create it again.
    r = server.client.post("/foo/bar", json={**request(4, "leaf4"), "vm_name": "web-4b"})
    assert r.status_code == 424, r.text
    xid = r.json()["xid"]
    assert "already exists and is not this transaction's" in r.json()["error"]["message"]
    done = server.admin("POST", f"/transactions/{xid}/rollback", json={"reason": "conflict"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "rolled_back"
    undo = done.json()["blocks"][1]["undo_output"]
    assert undo["removed"] is False and undo["note"].startswith("left untouched"), undo
    assert all(state == "terminated" for state in vms(ec2, xid).values())
    config = on_device(device, "vm-web-4")
    assert config is not None and f"xid={first.json()['xid']}" in config["description"]


class Blackhole:
    """A TCP port that accepts connections and never answers: a device that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_kill9_between_the_blocks_then_rollback_after_restart(
    tmp_path: Path, moto: lab.Moto, ec2: Any, device: lab.NetconfDevice, lab_dir: Path
) -> None:
    # Its own inventory and server: this test kills the server and repoints a device.
    inventory = tmp_path / "devices.yaml"
    hole = Blackhole()
    known_hosts = tmp_path / "known_hosts"  # the device's host key, as if it lived there
    known_hosts.write_text(
        device.known_hosts.read_text().replace(f"]:{device.port} ", f"]:{hole.port} ")
    )
    lab.write_inventory(
        inventory,
        {
            "leaf5": {
                **device.settings(timeout=30),
                "port": hole.port,
                "known_hosts": str(known_hosts),
            }
        },
    )
    data = tmp_path / "data"
    server = start_server(data, moto, inventory)
    try:
        r = server.client.post(
            "/foo/bar", json=request(5, "leaf5"), headers={"Prefer": "respond-async"}
        )
        assert r.status_code == 202, r.text
        xid = r.json()["xid"]
        # Block 0 done (the VM exists), block 1 connected to the device and hangs there.
        assert hole.accepted.wait(30), f"block 1 never reached the device: {server.tx(xid)}"
        tx = server.wait_for(
            xid, lambda t: [b["status"] for b in t["blocks"]][:2] == ["done", "running"]
        )
        ((vm_id, state),) = vms(ec2, xid).items()
        assert state == "running"
        server.kill9()
    finally:
        server.stop()
        hole.close()
    # The device is reachable again but still refuses edits (its datastore is locked), so the
    # re-run of the in-doubt (idempotent) block 1 at start-up fails and the transaction parks.
    lab.write_inventory(inventory, {"leaf5": device.settings(timeout=10)})
    with locked(device):
        server = start_server(data, moto, inventory)
        try:
            tx = server.wait_for(xid, lambda t: t["status"] == "suspended")
            assert tx["failed_block"] == "configure_device"
            assert "config locked" in tx["blocks"][1]["error"]["message"]
            assert any(a["action"] == "rerun_in_doubt" for a in tx["audit"]), tx["audit"]
            done = server.admin("POST", f"/transactions/{xid}/rollback", json={"reason": "crash"})
            assert done.status_code == 200, done.text
            assert done.json()["status"] == "rolled_back"
        finally:
            server.stop()
    assert vms(ec2, xid) == {vm_id: "terminated"}
    assert on_device(device, "vm-web-5") is None
