"""`switchback sidecar ...`: Envoy bootstrap for a node of our control plane, and running it."""

from __future__ import annotations

import os
import tempfile

import typer
from rich.console import Console

from switchback.xds.resources import KINDS
from switchback.xds.sidecar import XDS_APIS, bootstrap_yaml, envoy_args, spec_from_options

app = typer.Typer(help="Envoy sidecars driven by our xDS control plane.", no_args_is_help=True)
err = Console(stderr=True, highlight=False)

NodeIdOpt = typer.Option(..., "--node-id", help="Unique node id, e.g. apigw-current-1")
XdsOpt = typer.Option("127.0.0.1:18000", "--xds", help="Control plane ADS address HOST:PORT")
AppPortOpt = typer.Option(0, "--app-port", help="Port of the local app (sidecar)")
ListenPortOpt = typer.Option(0, "--listen-port", help="Inbound listener port")
AdminPortOpt = typer.Option(0, "--admin-port", help="Envoy admin port (0 = any free port)")
KindOpt = typer.Option("sidecar", "--kind", help=f"Node kind: {', '.join(KINDS)}")
RoleOpt = typer.Option("", "--role", help="Label role (apigw, scenario, ...)")
VersionOpt = typer.Option("", "--version", help="Label version (current, new, build id)")
EnvOpt = typer.Option("", "--environment", help="Label environment (staging, production)")
OutboundOpt = typer.Option(
    None, "--outbound", help="SERVICE=PORT: local listener for calls to a peer service"
)
ServiceOpt = typer.Option("", "--service", help="Service of a service-proxy node")
RouteOpt = typer.Option(None, "--route", help="PORT=SERVICE for an ingress node")
ListenHostOpt = typer.Option("127.0.0.1", "--listen-host", help="Inbound listener address")
XdsApiOpt = typer.Option(
    "sotw", "--xds-api", help=f"ADS protocol: {' or '.join(XDS_APIS)} (state of the world / delta)"
)


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{what}: expected A=B, got {item!r}")
        out[key] = value
    return out


def _bootstrap(
    node_id: str,
    xds: str,
    app_port: int,
    listen_port: int,
    admin_port: int,
    kind: str,
    role: str,
    version: str,
    environment: str,
    outbound: list[str] | None,
    service: str,
    route: list[str] | None,
    listen_host: str,
    xds_api: str,
) -> str:
    host, _, port = xds.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"--xds: expected HOST:PORT, got {xds!r}")
    spec = spec_from_options(
        kind,
        app_port,
        listen_port,
        {"role": role, "version": version, "environment": environment},
        {k: int(v) for k, v in _pairs(outbound, "--outbound").items()},
        listen_host=listen_host,
        service=service,
        routes={int(k): v for k, v in _pairs(route, "--route").items()},
    )
    try:
        return bootstrap_yaml(
            node_id, host.strip("[]"), int(port), spec, admin_port=admin_port, xds_api=xds_api
        )
    except ValueError as e:  # the one check of the protocol name is in bootstrap_config
        raise typer.BadParameter(f"--xds-api: {e}") from e


@app.command()
def bootstrap(
    node_id: str = NodeIdOpt,
    xds: str = XdsOpt,
    app_port: int = AppPortOpt,
    listen_port: int = ListenPortOpt,
    admin_port: int = AdminPortOpt,
    kind: str = KindOpt,
    role: str = RoleOpt,
    version: str = VersionOpt,
    environment: str = EnvOpt,
    outbound: list[str] = OutboundOpt,
    service: str = ServiceOpt,
    route: list[str] = RouteOpt,
    listen_host: str = ListenHostOpt,
    xds_api: str = XdsApiOpt,
) -> None:
    """Print the Envoy bootstrap (YAML) for a node."""
    print(_bootstrap(**locals()), end="")


@app.command()
def run(
    node_id: str = NodeIdOpt,
    xds: str = XdsOpt,
    app_port: int = AppPortOpt,
    listen_port: int = ListenPortOpt,
    admin_port: int = AdminPortOpt,
    kind: str = KindOpt,
    role: str = RoleOpt,
    version: str = VersionOpt,
    environment: str = EnvOpt,
    outbound: list[str] = OutboundOpt,
    service: str = ServiceOpt,
    route: list[str] = RouteOpt,
    listen_host: str = ListenHostOpt,
    xds_api: str = XdsApiOpt,
) -> None:
    """Start Envoy with that bootstrap (this process becomes Envoy)."""
    text = _bootstrap(**locals())
    fd, path = tempfile.mkstemp(prefix=f"switchback-{node_id}-", suffix=".yaml")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    args = envoy_args(path)
    err.print(f"starting {' '.join(args)}")
    # exec: signals from a process manager reach Envoy itself.
    os.execv(args[0], args)
