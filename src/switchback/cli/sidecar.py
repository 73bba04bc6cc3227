"""`switchback sidecar ...`: Envoy bootstrap for a node of our control plane, and running it.

The control plane accepts a node only over mutual TLS with the node's own certificate:
`--enroll` registers the node (its spec) with the control plane's admin API and gets a
certificate for a key made here, into `--tls-dir`; without `--enroll` the credentials already in
`--tls-dir` are used. `--insecure` (plaintext) is for a test control plane started without a CA.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import httpx
import typer
from rich.console import Console

from switchback import datadir
from switchback.cli.xds import TOKEN_ENV, AdminOpt, DataOpt, admin_token
from switchback.xds.pki import CredentialError, NodeCredentials, make_csr
from switchback.xds.resources import KINDS, NodeSpec
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
TlsDirOpt = typer.Option(
    None, "--tls-dir", help="The node's credentials: node.key, node.crt, ca.crt (mutual TLS)"
)
EnrollOpt = typer.Option(
    False,
    "--enroll",
    help=f"Register the node with the control plane (--admin, token from {TOKEN_ENV} or --data) "
    "and write a new certificate into --tls-dir; an older one of this node id stops working",
)
InsecureOpt = typer.Option(
    False, "--insecure", help="Plaintext to a control plane without a CA (tests only)"
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
    tls_dir: Path | None,
    enroll: bool,
    insecure: bool,
    admin: str,
    data: Path,
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
    if insecure and (tls_dir or enroll):
        raise typer.BadParameter("--insecure takes no --tls-dir or --enroll")
    tls = None
    if not insecure:
        if tls_dir is None:
            raise typer.BadParameter(
                "the control plane takes mutual TLS only: give --tls-dir DIR (with --enroll to "
                "get a certificate), or --insecure for a test control plane without a CA"
            )
        try:
            tls = _enroll(node_id, spec, tls_dir, admin, data) if enroll else None
            tls = tls or NodeCredentials.read(tls_dir)
        except CredentialError as e:
            raise typer.BadParameter(f"--tls-dir: {e}") from e
    try:
        return bootstrap_yaml(
            node_id, host.strip("[]"), int(port), spec, admin_port=admin_port, xds_api=xds_api,
            tls=tls,
        )  # fmt: skip
    except ValueError as e:  # the one check of the protocol name is in bootstrap_config
        raise typer.BadParameter(f"--xds-api: {e}") from e


def _enroll(node_id: str, spec: NodeSpec, tls_dir: Path, admin: str, data: Path) -> NodeCredentials:
    """Register the node and get its certificate; the private key is made here, never sent."""
    key_pem, csr_pem = make_csr(node_id)  # checks the node id can be a certificate's identity
    token = admin_token(data)
    if not token:
        err.print(f"[red]--enroll needs the admin token: set {TOKEN_ENV} (or --data)[/red]")
        raise typer.Exit(2)
    try:
        r = httpx.post(
            f"{admin}/nodes/{node_id}/enroll",
            json={"spec": spec.to_metadata(), "csr": csr_pem.decode()},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as e:
        err.print(f"[red]cannot reach the control plane's admin API at {admin}: {e}[/red]")
        raise typer.Exit(2) from e
    if r.status_code != 200:
        err.print(f"[red]enrolment refused: {r.status_code}: {r.text}[/red]")
        raise typer.Exit(1)
    got = r.json()
    d = datadir.make_dir(tls_dir)
    datadir.write_file(d / "node.key", key_pem, secret=True)
    datadir.write_file(d / "node.crt", got["certificate"])
    datadir.write_file(d / "ca.crt", got["ca"])
    err.print(f"enrolled {got['identity']} (credentials in {d})")
    return NodeCredentials.read(d)


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
    tls_dir: Path | None = TlsDirOpt,
    enroll: bool = EnrollOpt,
    insecure: bool = InsecureOpt,
    admin: str = AdminOpt,
    data: Path = DataOpt,
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
    tls_dir: Path | None = TlsDirOpt,
    enroll: bool = EnrollOpt,
    insecure: bool = InsecureOpt,
    admin: str = AdminOpt,
    data: Path = DataOpt,
) -> None:
    """Start Envoy with that bootstrap (this process becomes Envoy)."""
    text = _bootstrap(**locals())
    fd, path = tempfile.mkstemp(prefix=f"switchback-{node_id}-", suffix=".yaml")  # 0600
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    args = envoy_args(path)
    err.print(f"starting {' '.join(args)}")
    # exec: signals from a process manager reach Envoy itself.
    os.execv(args[0], args)
