"""Block 0: a VM on AWS. DO ``create_vm`` / UNDO ``delete_vm``.

The xid is the key of everything: the instance is tagged ``switchback:xid=<xid>`` in the same call
that creates it (``TagSpecifications`` are atomic with ``RunInstances``) and ``ClientToken`` is the
xid, so a re-run of the DO (in doubt after a crash, a retry, a rollforward) finds or gets back the
same instance instead of creating a second one. The UNDO looks instances up by that tag, so it
works even when the DO's output was never stored (a crash between the EC2 call and the commit).
"""

from __future__ import annotations

from typing import Any

from provision_app.settings import TAG_SCENARIO, TAG_XID, ec2_client
from switchback.engine import BlockContext

LIVE = ("pending", "running")
GONE = ("shutting-down", "terminated")
NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")


class VmError(RuntimeError):
    """The VM is not in a state the block can work with (a person must look)."""


def instances_of(ec2: Any, xid: str) -> list[dict[str, Any]]:
    """Every instance tagged with this xid, whatever its state."""
    found: list[dict[str, Any]] = []
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": f"tag:{TAG_XID}", "Values": [xid]}]
    ):
        for reservation in page["Reservations"]:
            found.extend(reservation["Instances"])
    return found


def _summary(instance: dict[str, Any]) -> dict[str, Any]:
    return {
        "instance_id": instance["InstanceId"],
        "state": instance["State"]["Name"],
        "private_ip": instance.get("PrivateIpAddress"),
        "image_id": instance.get("ImageId"),
        "instance_type": instance.get("InstanceType"),
    }


def create_vm(ctx: BlockContext) -> dict[str, Any]:
    req = ctx.request
    ec2 = ec2_client()
    mine = instances_of(ec2, ctx.xid)
    live = [i for i in mine if i["State"]["Name"] in LIVE]
    if live:
        instance = live[0]
        ctx.log.info("instance %s of this transaction exists: reused", instance["InstanceId"])
    elif mine:
        states = {i["InstanceId"]: i["State"]["Name"] for i in mine}
        raise VmError(f"the instance of this transaction is no longer usable: {states}")
    else:
        tags = [
            {"Key": TAG_XID, "Value": ctx.xid},
            {"Key": TAG_SCENARIO, "Value": ctx.scenario},
            {"Key": "Name", "Value": req["vm_name"]},
        ]
        params: dict[str, Any] = {
            "ImageId": req["image_id"],
            "InstanceType": req.get("instance_type", "t3.micro"),
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": ctx.xid,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if req.get("subnet_id"):
            params["SubnetId"] = req["subnet_id"]
        instance = ec2.run_instances(**params)["Instances"][0]
    instance_id = instance["InstanceId"]
    ec2.get_waiter("instance_running").wait(
        InstanceIds=[instance_id], WaiterConfig={"Delay": 1, "MaxAttempts": 90}
    )
    running = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return _summary(running)


def _tagged_xid(instance: dict[str, Any]) -> str | None:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == TAG_XID), None)


def _described(ec2: Any, instance_id: str) -> dict[str, Any] | None:
    """The instance, or None when EC2 no longer knows it (AWS forgets a terminated instance
    after a while; a restarted emulator forgets everything)."""
    from botocore.exceptions import ClientError

    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in NOT_FOUND:
            return None
        raise
    return next((i for r in reservations for i in r["Instances"]), None)


def delete_vm(ctx: BlockContext) -> dict[str, Any]:
    """Terminate every instance of this transaction: found by its xid tag, plus the one the DO's
    output names if it carries that tag too (a tag query may lag behind a fresh instance).
    Only instances tagged with this xid are touched; none left = done."""
    from botocore.exceptions import ClientError

    ec2 = ec2_client()
    ids = {
        i["InstanceId"] for i in instances_of(ec2, ctx.xid) if i["State"]["Name"] != "terminated"
    }
    notes = []
    named = ctx.output.get("instance_id") if isinstance(ctx.output, dict) else None
    if named and named not in ids:
        instance = _described(ec2, named)
        if instance is None:
            notes.append(f"{named} already gone")
        elif _tagged_xid(instance) != ctx.xid:
            notes.append(f"{named} left untouched: not this transaction's")
        elif instance["State"]["Name"] != "terminated":
            ids.add(named)
    if not ids:
        notes.append(f"no live instance tagged {TAG_XID}={ctx.xid}")
        return {"terminated": [], "note": "; ".join(notes)}
    try:
        ec2.terminate_instances(InstanceIds=sorted(ids))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in NOT_FOUND:
            raise
        # One vanished between the look-up and the call: terminate those still there.
        ids = {i for i in ids if _described(ec2, i) is not None}
        if ids:
            ec2.terminate_instances(InstanceIds=sorted(ids))
    if ids:
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=sorted(ids), WaiterConfig={"Delay": 1, "MaxAttempts": 90}
        )
    return {"terminated": sorted(ids), **({"note": "; ".join(notes)} if notes else {})}
