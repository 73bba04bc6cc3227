"""`switchback xds ...`: run the control plane and talk to its admin endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import typer

from switchback.cli import discovery
from switchback.cli.common import column, err, out, print_table, table

app = typer.Typer(help="Our xDS control plane for the Envoy sidecars.", no_args_is_help=True)

AdminOpt = typer.Option(
    "http://127.0.0.1:18001",
    "--admin",
    envvar="SWITCHBACK_XDS_ADMIN",
    help="Admin URL of the control plane",
)
DataOpt = typer.Option(
    Path(".switchback"),
    "--data",
    envvar="SWITCHBACK_DATA",
    help="Data directory: xds-state.json, the CA (xds-ca/) and the admin token (xds-admin-token)",
)
TOKEN_ENV = discovery.XDS_TOKEN_ENV
TOKEN_FILE = discovery.XDS_TOKEN_FILE
SelectorOpt = typer.Option(
    "", "--selector", "-s", help="Node selector, e.g. role=apigw,version=current ('' = all)"
)
JsonOpt = typer.Option(False, "--json", help="Print JSON")


def admin_token(data: Path) -> str | None:
    """The admin API's token: SWITCHBACK_XDS_TOKEN, else the one `xds serve` keeps in DATA."""
    return discovery.xds_admin_token(data)


def _serve_token(data: Path) -> str:
    token = admin_token(data)
    if token is None:
        from switchback import datadir

        token = secrets.token_urlsafe(24)
        datadir.write_file(data / TOKEN_FILE, token + "\n", secret=True)
    return token


def _call(method: str, url: str, **kw: Any) -> Any:
    headers = kw.pop("headers", None)
    if headers is None:
        token = admin_token(kw.pop("data", Path(".switchback")))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
    else:
        kw.pop("data", None)
        token = headers.get("Authorization")
    try:
        r = httpx.request(method, url, timeout=kw.pop("timeout", 30.0), headers=headers, **kw)
    except httpx.HTTPError as e:
        err.print(f"[red]cannot reach the control plane at {url}: {e}[/red]")
        if "127.0.0.1:18001" in url:
            err.print(
                "no platform runs in this data directory (`switchback up`, `make up`: give its "
                "--data DIR) and no `switchback xds serve` answers there (give its --admin URL)"
            )
        raise typer.Exit(2) from e
    if r.status_code >= 400:
        hint = f" (set {TOKEN_ENV} or --data)" if r.status_code == 401 and not token else ""
        err.print(f"[red]{r.status_code}: {r.text}{hint}[/red]")
        raise typer.Exit(1)
    return r.json()


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="ADS (gRPC) listen address"),
    port: int = typer.Option(18000, help="ADS (gRPC) port"),
    admin_host: str = typer.Option("127.0.0.1", help="Admin HTTP listen address"),
    admin_port: int = typer.Option(18001, help="Admin HTTP port"),
    data: Path = DataOpt,
    state_file: str = typer.Option(
        "",
        envvar="SWITCHBACK_XDS_STATE",
        help="Versions, intent and registered nodes survive restarts here "
        "[default: DATA/xds-state.json]",
    ),
) -> None:
    """Run the ADS server (mutual TLS: every node needs a certificate, see `switchback sidecar
    bootstrap --enroll`) and its admin HTTP endpoints (bearer token: SWITCHBACK_XDS_TOKEN, or
    generated into DATA/xds-admin-token)."""
    from switchback import datadir
    from switchback.xds.admin import serve as serve_all
    from switchback.xds.control import ControlPlane
    from switchback.xds.pki import Authority

    data = datadir.make_dir(data.resolve())
    token = _serve_token(data)
    cp = ControlPlane(
        state_file=state_file or data / "xds-state.json", authority=Authority(data / "xds-ca")
    )
    where = TOKEN_ENV if os.environ.get(TOKEN_ENV) else str(data / TOKEN_FILE)
    out.print(
        f"xDS (mutual TLS) on {host}:{port}, admin on http://{admin_host}:{admin_port} "
        f"(token: {where})"
    )
    try:
        asyncio.run(serve_all(cp, token, host, port, admin_host, admin_port))
    except KeyboardInterrupt:
        pass


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    d = time.time() - t
    return f"{d:.0f}s ago" if d < 120 else time.strftime("%H:%M:%S", time.localtime(t))


@app.command()
def status(
    admin: str | None = typer.Option(
        None,
        "--admin",
        envvar="SWITCHBACK_XDS_ADMIN",
        help="Admin URL of a standalone control plane (`xds serve`) "
        "[default: the controller `switchback up` runs in DATA, else http://127.0.0.1:18001]",
    ),
    selector: str = SelectorOpt,
    as_json: bool = JsonOpt,
    data: Path = typer.Option(
        Path(".switchback"),
        "--data",
        envvar="SWITCHBACK_DATA",
        help="Data directory of the platform that `switchback up` / `make up` started",
    ),
) -> None:
    """Nodes with connection state, versions sent/ACKed and the last NACK."""
    url, headers, where = discovery.xds_nodes_endpoint(admin, data)
    listing = _call("GET", url, params={"selector": selector}, headers=headers)
    if as_json:
        out.print_json(json.dumps(listing))
        return
    err.print(f"[dim]nodes of {where}[/dim]")
    nodes = table(
        column("node", whole=True),
        column("kind/role/version", whole=True),
        column("conn", whole=True),
        column("api", whole=True),
        column("version", whole=True),
        column("acked", whole=True),
        column("sent/acked per type", whole=True),
        "last NACK",
        title=f"xDS nodes ({len(listing['nodes'])})",
    )
    for n in listing["nodes"]:
        md = n["metadata"]
        # Per type: ✓ ACKed, … response in flight, - nothing ACKed yet (numbers: --json).
        types = " ".join(
            f"{t}{'…' if s['pending'] else '✓' if s['acked'] else '-'}"
            for t, s in n["types"].items()
        )
        nack = n["last_nack"]
        nodes.add_row(
            n["id"],
            "/".join(str(md.get(k, "-")) for k in ("kind", "role", "version")),
            "[green]up[/green]"
            if n["connected"]
            else f"[red]down[/red] {_ago(n['disconnected_at'])}",
            str(n.get("api") or "-"),
            str(n["version"]),
            ("[green]" if n["in_sync"] else "[yellow]") + str(n["acked_version"]) + "[/]",
            types,
            f"[red]{nack['type']} v{nack['version']}: {nack['error']}[/red]" if nack else "",
        )
    print_table(nodes, empty="no node has connected")


def _selector_arg(text: str) -> dict[str, Any]:
    from switchback.xds.admin import parse_selector

    return parse_selector(text)


def _wait(admin: str, data: Path, selector: dict[str, Any], version: int, timeout: float) -> None:
    rep = _call(
        "POST",
        f"{admin}/wait-acked",
        json={"selector": selector, "version": version, "timeout": timeout},
        timeout=timeout + 5,
        data=data,
    )
    if not any(rep[k] for k in ("acked", "pending", "nacked", "disconnected")):
        out.print("[yellow]no node matches the selector[/yellow]")
        return
    colour = "green" if rep["ok"] else "red"
    out.print(
        f"[{colour}]version {version}: {len(rep['acked'])} acked in {rep['elapsed'] * 1000:.0f} ms"
        f"[/{colour}]"
    )
    for key in ("pending", "disconnected"):
        if rep[key]:
            out.print(f"  {key}: {', '.join(rep[key])}")
    for node, error in rep["nacked"].items():
        out.print(f"  NACK {node}: {error}")
    if not rep["ok"]:
        raise typer.Exit(1)


@app.command()
def redirect(
    selector: str = typer.Argument(..., help="e.g. role=apigw,version=current"),
    target: str = typer.Argument(..., help="target service, e.g. apigw-new"),
    admin: str = AdminOpt,
    wait: bool = typer.Option(True, help="Wait for every selected node's ACK"),
    timeout: float = typer.Option(10.0),
    data: Path = DataOpt,
) -> None:
    """Send all traffic of the selected sidecars to the target service."""
    sel = _selector_arg(selector)
    body = {"selector": sel, "target": target}
    v = _call("POST", f"{admin}/redirect", json=body, data=data)["version"]
    _wait(admin, data, sel, v, timeout) if wait else out.print(f"version {v}")


@app.command()
def clear(
    selector: str = typer.Argument(..., help="e.g. role=apigw,version=current"),
    admin: str = AdminOpt,
    wait: bool = typer.Option(True, help="Wait for every selected node's ACK"),
    timeout: float = typer.Option(10.0),
    data: Path = DataOpt,
) -> None:
    """Send the selected sidecars' traffic back to their local app."""
    sel = _selector_arg(selector)
    v = _call("POST", f"{admin}/redirect/clear", json={"selector": sel}, data=data)["version"]
    _wait(admin, data, sel, v, timeout) if wait else out.print(f"version {v}")


@app.command()
def endpoints(
    service: str = typer.Argument(...),
    addresses: list[str] = typer.Argument(None, help="IP:PORT ... (none = no endpoints)"),
    admin: str = AdminOpt,
    data: Path = DataOpt,
) -> None:
    """Set the endpoints of a service (EDS)."""
    url = f"{admin}/services/{service}/endpoints"
    v = _call("PUT", url, json={"endpoints": addresses or []}, data=data)["version"]
    out.print(f"version {v}")


@app.command()
def wait(
    selector: str = SelectorOpt,
    version: int = typer.Option(None, help="Version (default: each node's latest)"),
    admin: str = AdminOpt,
    timeout: float = typer.Option(10.0),
    data: Path = DataOpt,
) -> None:
    """Wait until every selected node has ACKed a version."""
    _wait(admin, data, _selector_arg(selector), version, timeout)
