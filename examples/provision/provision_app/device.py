"""Block 1: config A on a network device over NETCONF. DO ``push_config`` / UNDO ``remove_config``;
block 2: ``verify`` (reads both systems back, changes nothing).

Config A is an ``ietf-interfaces`` interface on the device's running datastore whose description
names the transaction (``switchback xid=<xid> vm=<instance>``): that is how a re-run recognises its
own work and how the UNDO knows what it may remove. The DO uses ``operation="create"``, which the
device refuses atomically if the interface exists, so a name already in use by someone else is a
conflict, never an overwrite. The UNDO removes the interface only if it carries this xid, and is
done when the interface is already absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from xml.sax.saxutils import escape

from provision_app import ec2 as ec2_blocks
from provision_app.settings import (
    DeviceSettings,
    device,
    ec2_client,
    host_key_b64,
    never_reached,
)
from switchback.engine import BlockContext

IF_NS = "urn:ietf:params:xml:ns:yang:ietf-interfaces"
IANA_NS = "urn:ietf:params:xml:ns:yang:iana-if-type"
NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"


class DeviceError(RuntimeError):
    """The device refused or could not be reached; the message carries the device's own words."""


@contextmanager
def session(dev: DeviceSettings) -> Iterator[Any]:
    from ncclient import manager

    kwargs: dict[str, Any] = {
        "host": dev.host,
        "port": dev.port,
        "username": dev.username,
        "key_filename": dev.key_filename,
        "hostkey_verify": dev.hostkey_verify,
        "allow_agent": False,
        "look_for_keys": False,
        "timeout": dev.timeout,
    }
    if dev.hostkey_verify and dev.known_hosts:
        kwargs["hostkey_b64"] = host_key_b64(dev.known_hosts, dev.host, dev.port)
    try:
        m = manager.connect(**kwargs)
    except Exception as exc:
        raise DeviceError(
            f"{dev.name} ({dev.host}:{dev.port}) unreachable: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        yield m
    finally:
        try:
            m.close_session()
        except Exception:  # the session may already be gone; the answer we needed is in hand
            pass


def _interface_xml(name: str, *, operation: str, description: str | None = None) -> str:
    body = f"<name>{escape(name)}</name>"
    if description is not None:
        body += (
            f"<description>{escape(description)}</description>"
            f'<type xmlns:ianaift="{IANA_NS}">ianaift:ethernetCsmacd</type>'
            "<enabled>true</enabled>"
        )
    return (
        f'<config xmlns="{NC_NS}" xmlns:nc="{NC_NS}">'
        f'<interfaces xmlns="{IF_NS}">'
        f'<interface nc:operation="{operation}">{body}</interface>'
        "</interfaces></config>"
    )


def read_interface(m: Any, name: str) -> dict[str, Any] | None:
    """The interface's config on the running datastore, or None when absent."""
    flt = f'<interfaces xmlns="{IF_NS}"><interface><name>{escape(name)}</name></interface></interfaces>'
    reply = m.get_config(source="running", filter=("subtree", flt))
    ns = {"if": IF_NS}
    for node in reply.data_ele.findall(".//if:interface", ns):
        if node.findtext("if:name", namespaces=ns) == name:
            return {
                "name": name,
                "description": node.findtext("if:description", default="", namespaces=ns),
                "enabled": node.findtext("if:enabled", default="", namespaces=ns),
            }
    return None


def _owner(config: dict[str, Any] | None) -> str | None:
    match = re.search(r"\bxid=([0-9A-Za-z-]+)", (config or {}).get("description", ""))
    return match.group(1) if match else None


def _refused(dev: DeviceSettings, rpc: str, exc: Exception) -> DeviceError:
    tag = getattr(exc, "tag", None)
    words = f"{tag}: {exc}" if tag else f"{type(exc).__name__}: {exc}"
    return DeviceError(f"{dev.name} refused {rpc}: {words}")


def push_config(ctx: BlockContext) -> dict[str, Any]:
    from ncclient.operations import RPCError

    dev = device(ctx.request["device"])
    name = ctx.request["interface"]
    vm = ctx.outputs["create_vm"]
    description = f"switchback xid={ctx.xid} vm={vm['instance_id']} ip={vm.get('private_ip')}"
    if ctx.request.get("description"):
        description += f" {ctx.request['description']}"
    with session(dev) as m:
        try:
            m.edit_config(
                target="running",
                config=_interface_xml(name, operation="create", description=description),
            )
        except RPCError as exc:
            if exc.tag != "data-exists":
                raise _refused(dev, "edit-config", exc) from exc
            current = read_interface(m, name)
            if _owner(current) != ctx.xid:
                raise DeviceError(
                    f"{dev.name}: interface {name} already exists and is not this transaction's "
                    f"(description: {(current or {}).get('description')!r})"
                ) from exc
            ctx.log.info("interface %s on %s is already this transaction's", name, dev.name)
        except Exception as exc:
            raise _refused(dev, "edit-config", exc) from exc
        current = read_interface(m, name)
    if _owner(current) != ctx.xid:
        raise DeviceError(f"{dev.name}: interface {name} not found after edit-config: {current}")
    return {"device": dev.name, "interface": name, "description": description}


def remove_config(ctx: BlockContext) -> dict[str, Any]:
    from ncclient.operations import RPCError

    if never_reached(ctx):
        return {
            "device": ctx.request["device"],
            "interface": ctx.request["interface"],
            "removed": False,
            "note": f"the DO never reached the device: {ctx.error['message']}",  # type: ignore[index]
        }
    dev = device(ctx.request["device"])
    name = ctx.request["interface"]
    with session(dev) as m:
        try:
            current = read_interface(m, name)
        except Exception as exc:
            raise _refused(dev, "get-config", exc) from exc
        if current is None:
            return {"device": dev.name, "interface": name, "removed": False, "note": "absent"}
        owner = _owner(current)
        if owner != ctx.xid:
            # Not ours (a conflicting DO failed on someone else's interface): leave it alone.
            return {
                "device": dev.name,
                "interface": name,
                "removed": False,
                "note": f"left untouched: belongs to {owner or 'someone else'}",
            }
        try:
            m.edit_config(target="running", config=_interface_xml(name, operation="delete"))
        except RPCError as exc:
            if exc.tag != "data-missing":  # removed meanwhile: the goal is reached
                raise _refused(dev, "edit-config", exc) from exc
        except Exception as exc:
            raise _refused(dev, "edit-config", exc) from exc
    return {"device": dev.name, "interface": name, "removed": True}


def verify(ctx: BlockContext) -> dict[str, Any]:
    """Read both systems back: the VM runs and the device carries config A for it."""
    vm = ctx.outputs["create_vm"]
    ec2 = ec2_client()
    reservations = ec2.describe_instances(InstanceIds=[vm["instance_id"]])["Reservations"]
    instance = reservations[0]["Instances"][0]
    state = instance["State"]["Name"]
    if state not in ec2_blocks.LIVE:
        raise ec2_blocks.VmError(f"instance {vm['instance_id']} is {state}")
    dev = device(ctx.request["device"])
    with session(dev) as m:
        try:
            current = read_interface(m, ctx.request["interface"])
        except Exception as exc:
            raise _refused(dev, "get-config", exc) from exc
    if _owner(current) != ctx.xid or vm["instance_id"] not in (current or {}).get(
        "description", ""
    ):
        raise DeviceError(f"{dev.name}: config A missing or changed: {current}")
    return {
        "instance_id": vm["instance_id"],
        "state": state,
        "private_ip": instance.get("PrivateIpAddress"),
        "device": dev.name,
        "interface": ctx.request["interface"],
        "description": current["description"] if current else None,
    }
