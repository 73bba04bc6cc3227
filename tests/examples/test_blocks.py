"""The provision blocks called directly against the real peers, for the in-doubt cases that a
test through HTTP cannot time: a DO re-run after a crash, an UNDO whose DO's output was never
stored, an UNDO of config that is not there."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from provision_app import device as device_blocks
from provision_app import ec2 as ec2_blocks
from provision_app import lab, settings
from provision_app.settings import SettingsError

from switchback.engine import BlockContext

REQUEST = {
    "vm_name": "direct-1",
    "image_id": "ami-0123456789abcdef0",
    "device": "leaf8",
    "interface": "vm-direct-1",
}


@pytest.fixture
def peers_env(monkeypatch: pytest.MonkeyPatch, moto: lab.Moto, inventory: Path) -> None:
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PROVISION_DEVICES", str(inventory))


def ctx(xid: str, block: str, phase: str = "do", **kw: Any) -> BlockContext:
    return BlockContext(
        xid=xid, scenario="provision", block=block, attempt=1, request=REQUEST, phase=phase, **kw
    )


def test_create_vm_rerun_in_doubt_reuses_the_instance(peers_env: None, ec2: Any) -> None:
    xid = uuid.uuid4().hex
    first = ec2_blocks.create_vm(ctx(xid, "create_vm"))
    again = ec2_blocks.create_vm(ctx(xid, "create_vm"))  # as after a crash before the commit
    assert again["instance_id"] == first["instance_id"]
    assert [i["InstanceId"] for i in ec2_blocks.instances_of(ec2, xid)] == [first["instance_id"]]
    ec2_blocks.delete_vm(ctx(xid, "create_vm", "undo", output=first))


def test_delete_vm_finds_the_vm_by_its_xid_tag_without_the_dos_output(
    peers_env: None, ec2: Any
) -> None:
    xid = uuid.uuid4().hex
    made = ec2_blocks.create_vm(ctx(xid, "create_vm"))
    # The DO ran but its output never reached the store: the UNDO gets output=None.
    undone = ec2_blocks.delete_vm(ctx(xid, "create_vm", "undo", output=None, error=None))
    assert undone == {"terminated": [made["instance_id"]]}
    states = {i["InstanceId"]: i["State"]["Name"] for i in ec2_blocks.instances_of(ec2, xid)}
    assert states == {made["instance_id"]: "terminated"}
    # Run again (an UNDO in doubt): nothing left to do, no error.
    assert ec2_blocks.delete_vm(ctx(xid, "create_vm", "undo"))["terminated"] == []


def test_config_undo_copes_with_absent_config_and_rerun_of_do(
    peers_env: None, device: lab.NetconfDevice
) -> None:
    xid = uuid.uuid4().hex
    outputs = {"create_vm": {"instance_id": "i-0123456789abcdef0", "private_ip": "10.0.0.5"}}
    absent = device_blocks.remove_config(ctx(xid, "configure_device", "undo"))
    assert absent["removed"] is False and absent["note"] == "absent"
    done = device_blocks.push_config(ctx(xid, "configure_device", outputs=outputs))
    again = device_blocks.push_config(ctx(xid, "configure_device", outputs=outputs))
    assert again == done  # the re-run recognised its own interface
    removed = device_blocks.remove_config(ctx(xid, "configure_device", "undo", output=done))
    assert removed["removed"] is True
    with lab.netconf_session(device) as m:
        assert device_blocks.read_interface(m, "vm-direct-1") is None


def test_delete_vm_of_a_vm_already_gone_is_done(peers_env: None, ec2: Any) -> None:
    """The DO's output names an instance EC2 no longer knows (AWS forgets terminated instances
    after a while; a restarted moto forgets everything): the UNDO's goal is reached."""
    xid = uuid.uuid4().hex
    gone = {"instance_id": "i-0fedcba9876543210", "state": "running"}
    undone = ec2_blocks.delete_vm(ctx(xid, "create_vm", "undo", output=gone))
    assert undone["terminated"] == []
    assert "i-0fedcba9876543210" in undone["note"] and "already gone" in undone["note"]


def test_delete_vm_leaves_an_instance_of_another_transaction_alone(
    peers_env: None, ec2: Any
) -> None:
    """An UNDO touches only what carries its own xid, even if its stored output (corrupted, or
    edited by hand) names another transaction's instance."""
    other = uuid.uuid4().hex
    theirs = ec2_blocks.create_vm(ctx(other, "create_vm"))
    xid = uuid.uuid4().hex
    undone = ec2_blocks.delete_vm(ctx(xid, "create_vm", "undo", output=theirs))
    assert undone["terminated"] == []
    assert "not this transaction's" in undone["note"]
    states = {i["InstanceId"]: i["State"]["Name"] for i in ec2_blocks.instances_of(ec2, other)}
    assert states == {theirs["instance_id"]: "running"}
    ec2_blocks.delete_vm(ctx(other, "create_vm", "undo", output=theirs))


def test_config_undo_after_a_do_that_never_reached_the_device_is_done(
    peers_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The device left the inventory: the DO failed with SettingsError before any connection,
    so its UNDO has nothing to remove (it used to fail, and the rollback with it)."""
    empty = tmp_path / "devices.yaml"
    lab.write_inventory(empty, {})
    monkeypatch.setenv("PROVISION_DEVICES", str(empty))
    xid = uuid.uuid4().hex
    outputs = {"create_vm": {"instance_id": "i-0123456789abcdef0", "private_ip": "10.0.0.5"}}
    with pytest.raises(SettingsError) as failed:
        device_blocks.push_config(ctx(xid, "configure_device", outputs=outputs))
    error = {"type": "SettingsError", "message": str(failed.value)}
    undone = device_blocks.remove_config(ctx(xid, "configure_device", "undo", error=error))
    assert undone["removed"] is False and "never reached" in undone["note"]
    # Any other failure of the DO may have left config A: the UNDO insists on looking.
    with pytest.raises(SettingsError):
        device_blocks.remove_config(
            ctx(xid, "configure_device", "undo", error={"type": "DeviceError", "message": "x"})
        )


def test_request_check_names_the_inventorys_devices(peers_env: None, inventory: Path) -> None:
    assert settings.check_device(REQUEST) == []
    (problem,) = settings.check_device({**REQUEST, "device": "leaf99"})
    assert problem["path"] == "/device"
    assert problem["message"].startswith("no device 'leaf99' in the inventory (have: leaf1, ")
    (problem,) = settings.check_router({"router": "leaf1"})
    assert problem == {
        "path": "/router",
        "message": "'leaf1' is a netconf device, not a frr one (have: none)",
    }
