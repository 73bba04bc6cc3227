"""Finding the running platform: the controller that `switchback up` started in a data directory
(its address and token are in ``<data>/controller.json``), its environments, and its xDS
control plane. One place, so that `release`, `tx` and `xds` commands agree on what they talk to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from switchback.release.controller import read_info
from switchback.runtime import processes

DEFAULT_DATA = Path(".switchback")


@dataclass(frozen=True)
class Controller:
    data: Path
    url: str
    token: str
    app_token: str | None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, timeout: float = 30) -> Any:
        r = httpx.get(self.url + path, headers=self.headers, timeout=timeout)
        r.raise_for_status()
        return r.json()


def running_controller(data: Path | None) -> Controller | None:
    """The controller serving ``data`` (default ``./.switchback``), if its process is alive."""
    data = (data or DEFAULT_DATA).resolve()
    info = read_info(data)
    if not info or not processes.alive(info.get("pid")):
        return None
    return Controller(data, info["url"], info["token"], info.get("app_token"))


@dataclass(frozen=True)
class Environment:
    """An environment of a running platform, reached through its public entry point (the
    ingress) like any client of it."""

    name: str
    url: str
    token: str | None
    controller: Controller


class DiscoveryError(Exception):
    pass


def environment(controller: Controller, name: str | None) -> Environment:
    """The environment ``name`` of the platform (None: its only one, else ``production``)."""
    try:
        envs: dict[str, Any] = controller.get("/status")["environments"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise DiscoveryError(f"the controller at {controller.url} did not answer: {exc}") from exc
    if name is None:
        if len(envs) == 1:
            name = next(iter(envs))
        elif "production" in envs:
            name = "production"
        else:
            have = ", ".join(sorted(envs)) or "none"
            raise DiscoveryError(
                f"the platform in {controller.data} runs several environments ({have}): "
                "pick one with --env NAME"
            )
    if name not in envs:
        have = ", ".join(sorted(envs)) or "none"
        raise DiscoveryError(
            f"the platform in {controller.data} has no environment {name!r} (have: {have})"
        )
    return Environment(name, envs[name]["urls"]["public"], controller.app_token, controller)


STANDALONE_XDS_ADMIN = "http://127.0.0.1:18001"
XDS_TOKEN_ENV = "SWITCHBACK_XDS_TOKEN"
XDS_TOKEN_FILE = "xds-admin-token"


def xds_admin_token(data: Path | None) -> str | None:
    """The token of a standalone control plane's admin API: SWITCHBACK_XDS_TOKEN, else the one
    `switchback xds serve` keeps in DATA (``xds-admin-token``)."""
    import os

    token = os.environ.get(XDS_TOKEN_ENV, "").strip()
    if token:
        return token
    try:
        return ((data or DEFAULT_DATA) / XDS_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def xds_nodes_endpoint(admin: str | None, data: Path | None) -> tuple[str, dict[str, str], str]:
    """Where `xds status` reads the nodes: (URL, headers, what to call it in messages).

    ``--admin URL`` given: a standalone control plane (`switchback xds serve`), its token from
    SWITCHBACK_XDS_TOKEN or DATA. Else the controller `switchback up` runs in DATA (its own token),
    else the standalone default address."""
    if admin is None:
        ctl = running_controller(data)
        if ctl is not None:
            return f"{ctl.url}/xds/nodes", ctl.headers, f"the controller in {ctl.data}"
        admin = STANDALONE_XDS_ADMIN
    token = xds_admin_token(data)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return f"{admin.rstrip('/')}/nodes", headers, f"the control plane at {admin}"
