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


def inventory_entry(name: str) -> tuple[str, dict[str, Any]]:
    """The inventory's path and its entry for device ``name`` (read on every call, so the
    inventory can change under a running server)."""
    path = os.environ.get("PROVISION_DEVICES")
    if not path:
        raise SettingsError("PROVISION_DEVICES is not set (path of the device inventory YAML)")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read device inventory {path}: {exc}") from exc
    entry: dict[str, Any] | None = (data.get("devices") or {}).get(name)
    if not entry:
        raise SettingsError(f"device {name!r} is not in the inventory {path}")
    return path, entry


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
