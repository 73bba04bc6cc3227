"""`switchback up`, `down`, `release ...` and the hidden `controller run`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.table import Table

from switchback import datadir
from switchback.cli.common import actor, err, fail, out, print_tx, styled
from switchback.release.controller import Controller, read_info
from switchback.runtime import processes

app = typer.Typer(help="Blue/green releases: start, watch, approve, abort.", no_args_is_help=True)
controller_app = typer.Typer(
    help="The controller process (started by `switchback up`).", hidden=True
)

DataOpt = typer.Option(
    Path(".switchback"), "--data", envvar="SWITCHBACK_DATA", help="Data directory"
)
EnvOpt = typer.Option("production", "--env", "-e", help="Environment")


def _client(data: Path) -> tuple[str, dict[str, str]]:
    info = read_info(data.resolve())
    if not info or not processes.alive(info.get("pid")):
        fail(f"no controller is running for {data} (start one with `switchback up APP_DIR`)")
    return info["url"], {"Authorization": f"Bearer {info['token']}"}


def call(data: Path, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
    url, headers = _client(data)
    try:
        r = httpx.request(
            method,
            url + path,
            json=body,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5),
        )
    except httpx.HTTPError as exc:
        fail(f"controller at {url}: {type(exc).__name__}: {exc}")
    data_ = r.json() if r.content else {}
    if r.status_code >= 400:
        for v in (data_.get("detail") or {}).get("violations", []):
            err.print(f"  [red]{v['path']}[/red]: {v['message']}")
        fail(f"{r.status_code}: {data_.get('error')}")
    return data_


@controller_app.command("run")
def controller_run(
    data: Path = DataOpt,
    admin_port: int = typer.Option(0, "--admin-port"),
    xds_port: int = typer.Option(0, "--xds-port"),
) -> None:
    """Run the controller in the foreground."""
    asyncio.run(Controller(data, admin_port=admin_port, xds_port=xds_port).run())


def _ensure_controller(data: Path, timeout: float = 30) -> None:
    info = read_info(data)
    if info and processes.alive(info.get("pid")):
        return
    datadir.make_dir(data)
    pid = processes.spawn(
        [sys.executable, "-m", "switchback.cli", "controller", "run", "--data", str(data)],
        data / "controller.log",
    )
    deadline = time.monotonic() + timeout
    while True:
        info = read_info(data)
        if info and info.get("pid") == pid:
            try:
                if httpx.get(info["url"] + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        processes.reap(pid)
        if not processes.alive(pid):
            tail = (data / "controller.log").read_text(errors="replace")[-3000:]
            fail(f"the controller exited during start-up:\n{tail}")
        if time.monotonic() > deadline:
            fail(
                f"the controller did not start within {timeout:g} s (see {data / 'controller.log'})"
            )
        time.sleep(0.05)


def up(
    app_dir: Path = typer.Argument(
        Path("examples/quickstart"), help="App folder", exists=True, file_okay=False
    ),
    env: str = EnvOpt,
    version: str = typer.Option("v1", "--version", help="Build id of what is deployed now"),
    data: Path = DataOpt,
    public_port: int = typer.Option(
        0, "--public-port", help="Ingress port for users (0 = any free)"
    ),
    standby_port: int = typer.Option(
        0, "--standby-port", help="Ingress port for tests of the new version"
    ),
) -> None:
    """Start the control plane (xDS + runtime + releases) and deploy APP_DIR as the current
    version of an environment: every role with its Envoy sidecar, services, an ingress."""
    data = data.resolve()
    _ensure_controller(data)
    res = call(
        data, "POST", "/environments",
        {"environment": env, "app_dir": str(app_dir.resolve()), "version": version,
         "public_port": public_port, "standby_port": standby_port},
        timeout=180,
    )  # fmt: skip
    info = read_info(data) or {}
    out.print(f"[green]{env}[/green] runs [bold]{res['current']}[/bold] of {app_dir}")
    out.print(f"  public URL:   {res['public']}")
    out.print(f"  standby URL:  {res['standby']}   (the new version, during a release)")
    out.print(f"  controller:   {info.get('url')}  (token in {data / 'controller.json'})")
    out.print(
        f"  app admin token: controller={info.get('app_token')}  (Authorization: Bearer <token>)"
    )
    out.print(
        "Try:  switchback release status   ·   switchback release start --version v2 --app DIR   ·   switchback down"
    )


def down(data: Path = DataOpt) -> None:
    """Stop everything `switchback up` started."""
    data = data.resolve()
    info = read_info(data)
    if not info or not processes.alive(info.get("pid")):
        out.print("nothing is running")
        return
    call(data, "POST", "/shutdown", timeout=120)
    deadline = time.monotonic() + 30
    while processes.alive(info["pid"]) and time.monotonic() < deadline:
        processes.reap(info["pid"])
        time.sleep(0.05)
    out.print("stopped")


def _show_release(r: dict[str, Any]) -> None:
    print_tx(r)
    if r["status"] == "waiting":
        out.print(
            "waiting for approval: `switchback release approve` or `switchback release reject`"
        )
    elif r["status"] == "suspended":
        out.print(
            "parked: `switchback release retry` (rollforward) or `switchback release abort` (rollback)"
        )


def _exit_for(r: dict[str, Any]) -> None:
    raise typer.Exit(0 if r["status"] in ("completed", "waiting", "rolled_back", "running") else 2)


@app.command()
def start(
    version: str = typer.Option(..., "--version", help="Build id of the new version"),
    app_dir: Path = typer.Option(
        ..., "--app", help="App folder of the new version", exists=True, file_okay=False
    ),
    env: str = EnvOpt,
    smoke: str | None = typer.Option(
        None, "--smoke", help="Shell command run against $SWITCHBACK_STANDBY_URL"
    ),
    approval: bool = typer.Option(
        False, "--approval", help="Wait for `release approve` before the redirect"
    ),
    approval_at: str | None = typer.Option(
        None,
        "--approval-at",
        help="Where the approval wait goes: 'redirect' (default) or 'switch' (after the redirect)",
    ),
    drain_timeout: float = typer.Option(
        30, "--drain-timeout", help="Seconds to wait for old connections"
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Follow until done, parked or waiting"
    ),
    data: Path = DataOpt,
) -> None:
    """Release a new version: deploy beside current, standby → new, smoke, (approval), redirect
    old sidecars, switch selectors, drain, retire old. A failure parks the release."""
    body = {"environment": env, "version": version, "app_dir": str(app_dir.resolve()), "smoke": smoke,
            "approval": approval_at or approval, "drain_timeout": drain_timeout, "wait": wait,
            "actor": actor()}  # fmt: skip
    r = call(data.resolve(), "POST", "/releases", body, timeout=None)
    _show_release(r)
    _exit_for(r)


def _decide(action: str, xid: str | None, env: str, reason: str | None, data: Path) -> None:
    target = xid or "latest"
    body = {
        "reason": reason,
        "actor": actor(),
    }
    r = call(
        data.resolve(), "POST", f"/releases/{target}/{action}?environment={env}", body, timeout=None
    )
    _show_release(r)
    _exit_for(r)


@app.command()
def approve(
    xid: str | None = typer.Argument(None),
    env: str = EnvOpt,
    reason: str | None = typer.Option(None, "--reason"),
    data: Path = DataOpt,
) -> None:
    """Approve the release waiting at its approval step."""
    _decide("approve", xid, env, reason, data)


@app.command()
def reject(
    xid: str | None = typer.Argument(None),
    env: str = EnvOpt,
    reason: str | None = typer.Option(None, "--reason"),
    data: Path = DataOpt,
) -> None:
    """Reject: roll the release back (traffic stays on current, the new version is removed)."""
    _decide("reject", xid, env, reason, data)


@app.command()
def abort(
    xid: str | None = typer.Argument(None),
    env: str = EnvOpt,
    reason: str | None = typer.Option(None, "--reason"),
    data: Path = DataOpt,
) -> None:
    """Abort = roll back, make-before-break: traffic back on current, then the new version removed."""
    _decide("abort", xid, env, reason, data)


@app.command()
def retry(
    xid: str | None = typer.Argument(None),
    env: str = EnvOpt,
    reason: str | None = typer.Option(None, "--reason"),
    data: Path = DataOpt,
) -> None:
    """Roll a parked release forward from its failed step."""
    _decide("rollforward", xid, env, reason, data)


@app.command()
def status(env: str = EnvOpt, data: Path = DataOpt) -> None:
    """Versions, selectors, sidecar routes, and active connections and requests per instance."""
    s = call(data.resolve(), "GET", "/status", timeout=30)
    e = s["environments"].get(env)
    if not e:
        fail(f"no environment {env!r} (have: {', '.join(s['environments']) or 'none'})")
    out.print(
        f"[bold]{env}[/bold]: current [green]{e['current']}[/green]"
        + (f", new [yellow]{e['new']}[/yellow]" if e["new"] else "")
    )
    out.print(f"public {e['urls']['public']}   standby {e['urls']['standby']}")
    sel = Table("service", "selects version", title="services")
    for name, build in sorted(e["selectors"].items()):
        sel.add_row(name, build or "-")
    out.print(sel)
    inst = Table(
        "instance",
        "role",
        "version",
        "alive",
        "route",
        "connections",
        "requests",
        title="instances",
    )
    for i in e["instances"]:
        route = e["redirects"].get(f"{i['role']}@{i['build']}") or "local app"
        inst.add_row(i["id"], i["role"], i["build"], "yes" if i["alive"] else "[red]no[/red]", route,
                     str(i.get("downstream_cx_active", "?")), str(i.get("downstream_rq_active", "?")))  # fmt: skip
    out.print(inst)
    rel = Table("xid", "release", "status", "step", title="recent releases")
    for r in s["releases"]:
        rel.add_row(r["xid"], r["scenario"], styled(r["status"]), str(r["cursor"]))
    out.print(rel)
