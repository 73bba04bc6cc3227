"""Connection settings of the provision example, from the environment — never from the repo.

* AWS: boto3's own configuration chain (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, credentials
  from the environment, ``~/.aws`` or an instance role). Nothing AWS-specific is read here.
* Devices: ``PROVISION_DEVICES`` names a YAML inventory, read on every call (edits apply to the
  next block without a restart)::

      devices:
        leaf1:
          host: 192.0.2.10
          port: 830
          username: netops
          key_filename: /etc/switchback/keys/netops   # a path; the key itself never lives here
          known_hosts: /etc/switchback/known_hosts    # host key checked (or hostkey_verify: false)
          timeout: 30                                 # seconds: connect and each RPC
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TAG_XID = "switchback:xid"
TAG_SCENARIO = "switchback:scenario"


class SettingsError(RuntimeError):
    """The configuration does not allow the block to run (a person must fix it)."""


@dataclass(frozen=True)
class DeviceSettings:
    name: str
    host: str
    port: int
    username: str
    key_filename: str | None
    known_hosts: str | None
    hostkey_verify: bool
    timeout: float


def inventory() -> tuple[str, dict[str, dict[str, Any]]]:
    """The inventory's path and its devices by name (read on every call, so the inventory can
    change under a running server)."""
    path = os.environ.get("PROVISION_DEVICES")
    if not path:
        raise SettingsError("PROVISION_DEVICES is not set (path of the device inventory YAML)")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read device inventory {path}: {exc}") from exc
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, dict):
        raise SettingsError(f"device inventory {path} has no `devices:` mapping")
    return path, {str(k): v for k, v in devices.items() if isinstance(v, dict)}


def inventory_entry(name: str) -> tuple[str, dict[str, Any]]:
    """The inventory's path and its entry for device ``name``."""
    path, devices = inventory()
    entry = devices.get(name)
    if not entry:
        raise SettingsError(f"device {name!r} is not in the inventory {path}")
    return path, entry


def _known(request: dict[str, Any], field: str, flavour: str) -> list[dict[str, str]]:
    """The request check: ``request[field]`` names a device of this flavour in the inventory.
    Run before the transaction starts, so an unknown device is a 422 and nothing is created
    (no VM made for a device that cannot be configured). An unreadable inventory raises: the
    request can be neither accepted nor refused (503)."""
    _, devices = inventory()
    name = request[field]
    entry = devices.get(name)
    have = sorted(n for n, e in devices.items() if e.get("flavour", "netconf") == flavour)
    if entry is None:
        message = f"no device {name!r} in the inventory (have: {', '.join(have) or 'none'})"
    elif entry.get("flavour", "netconf") != flavour:
        kind = entry.get("flavour", "netconf")
        message = (
            f"{name!r} is a {kind} device, not a {flavour} one (have: {', '.join(have) or 'none'})"
        )
    else:
        return []
    return [{"path": f"/{field}", "message": message}]


def check_device(request: dict[str, Any]) -> list[dict[str, str]]:
    """``request_check`` of ``POST /foo/bar``: the device is a NETCONF device of the inventory."""
    return _known(request, "device", "netconf")


def check_router(request: dict[str, Any]) -> list[dict[str, str]]:
    """``request_check`` of ``POST /routes``: the router is an FRR router of the inventory."""
    return _known(request, "router", "frr")


def never_reached(ctx: Any) -> bool:
    """The DO failed on its settings (e.g. the device left the inventory), which every DO here
    reads before it opens any connection: it changed nothing, so its UNDO has nothing to do."""
    return (ctx.error or {}).get("type") == SettingsError.__name__ and ctx.output is None


def device(name: str) -> DeviceSettings:
    path, entry = inventory_entry(name)
    try:
        return DeviceSettings(
            name=name,
            host=str(entry["host"]),
            port=int(entry.get("port", 830)),
            username=str(entry["username"]),
            key_filename=entry.get("key_filename"),
            known_hosts=entry.get("known_hosts"),
            hostkey_verify=bool(entry.get("hostkey_verify", True)),
            timeout=float(entry.get("timeout", 30)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SettingsError(f"device {name!r} in {path}: bad or missing setting {exc}") from exc


def host_key_b64(known_hosts: str | Path, host: str, port: int) -> str:
    """The device's host key (base64) from an OpenSSH known_hosts file."""
    import paramiko

    keys = paramiko.HostKeys(str(known_hosts))
    for name in (f"[{host}]:{port}", host) if port != 22 else (host,):
        found = keys.lookup(name)
        if found:
            return next(iter(found.values())).get_base64()
    raise SettingsError(f"no host key for {host}:{port} in {known_hosts}")


def ec2_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "ec2",
        config=Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )
