"""`switchback up`, `down`, `release ...` and the hidden `controller run`."""

from __future__ import annotations

import asyncio
import logging.config
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.live import Live
from rich.table import Table

from switchback import datadir
from switchback.cli import discovery
from switchback.cli.common import (
    actor,
    column,
    err,
    fail,
    out,
    print_table,
    styled,
    table,
)
from switchback.release.controller import Controller, read_info
from switchback.runtime import processes

app = typer.Typer(help="Blue/green releases: start, watch, approve, abort.", no_args_is_help=True)
controller_app = typer.Typer(
    help="The controller process (started by `switchback up`).", hidden=True
)

DataOpt = typer.Option(
    Path(".switchback"),
    "--data",
    envvar="SWITCHBACK_DATA",
    help="Data directory of the platform (controller.json, its stores, logs)",
)
EnvOpt = typer.Option("production", "--env", "-e", help="Environment")


def _client(data: Path) -> tuple[str, dict[str, str]]:
    ctl = discovery.running_controller(data)
    if ctl is None:
        fail(
            f"no controller is running for {data} "
            "(start one with `make up` or `switchback up APP_DIR`)"
        )
    return ctl.url, ctl.headers


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
    from switchback.gateway.logs import log_config

    # JSON lines on stderr (controller.log when `up` starts it), like every instance's log.
    logging.config.dictConfig(log_config("controller", "info"))
    asyncio.run(Controller(data, admin_port=admin_port, xds_port=xds_port).run())


def _log_tail(path: Path, lines: int = 20) -> str:
    tail = processes.tail(path, lines)
    return f"last lines of {path}:\n{tail}" if tail else f"{path} is empty"


def _ensure_controller(data: Path, timeout: float = 30) -> bool:
    """Start the controller unless one runs for ``data``. True if this call started it."""
    info = read_info(data)
    if info and processes.alive(info.get("pid")):
        return False
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
                    return True
            except httpx.HTTPError:
                pass
        processes.reap(pid)
        if not processes.alive(pid):
            fail(f"the controller exited during start-up; {_log_tail(data / 'controller.log')}")
        if time.monotonic() > deadline:
            processes.stop(pid)
            fail(
                f"the controller did not start within {timeout:g} s; "
                f"{_log_tail(data / 'controller.log')}"
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
    started = _ensure_controller(data)
    try:
        res = call(
            data, "POST", "/environments",
            {"environment": env, "app_dir": str(app_dir.resolve()), "version": version,
             "public_port": public_port, "standby_port": standby_port},
            timeout=240,
        )  # fmt: skip
    except typer.Exit:
        err.print(_log_tail(data / "controller.log"))
        if started:  # a failed start leaves nothing running that it started
            err.print("stopping what this start began (controller, proxies, instances)")
            _stop_controller(data)
        raise
    info = read_info(data) or {}
    if res.get("restarted"):
        out.print(
            f"[green]{env}[/green] restarted: it runs [bold]{res['current']}[/bold] of "
            f"{res.get('app_dir')} (what ran before; `switchback down --forget` starts afresh)"
        )
    else:
        out.print(f"[green]{env}[/green] runs [bold]{res['current']}[/bold] of {app_dir}")
    out.print(f"  public URL:   {res['public']}")
    out.print(f"  standby URL:  {res['standby']}   (the new version, during a release)")
    out.print(f"  controller:   {info.get('url')}   (its token: {data / 'controller.json'})")
    out.print(f"  admin API:    {_admin_tokens()}")
    where = "" if data == Path(".switchback").resolve() else f" --data {data}"
    out.print(f"Try:  switchback release status{where}")
    out.print(f"      switchback release start --version v2 --app DIR{where}")
    out.print(f"      switchback tx list{where}   (this environment's transactions)")
    out.print(f"      switchback down{where}")


def _admin_tokens() -> str:
    """What a person needs to call the apps' admin API: which of their own tokens it accepts
    (never a secret printed: the controller's own token is for programs)."""
    import os

    names = [
        pair.partition("=")[0].strip()
        for pair in os.environ.get("SWITCHBACK_ADMIN_TOKENS", "").split(",")
        if "=" in pair
    ]
    if "dev" in names:
        names[names.index("dev")] = "dev (dev-token)"
    if not names:
        return "no token of yours (set SWITCHBACK_ADMIN_TOKENS=name=token before `up`)"
    return "Authorization: Bearer <your token>, from SWITCHBACK_ADMIN_TOKENS: " + ", ".join(names)


def _stop_controller(data: Path, forget: bool = False) -> None:
    info = read_info(data) or {}
    call(data, "POST", "/shutdown", {"forget": forget}, timeout=120)
    deadline = time.monotonic() + 30
    while processes.alive(info.get("pid")) and time.monotonic() < deadline:
        processes.reap(info["pid"])
        time.sleep(0.05)
    if processes.alive(info.get("pid")):
        processes.stop(info["pid"])


def down(
    data: Path = DataOpt,
    forget: bool = typer.Option(
        False,
        "--forget",
        help="Also forget the environments: the next `up` deploys afresh instead of restarting "
        "what ran (the stores and the release history stay)",
    ),
) -> None:
    """Stop everything `switchback up` started (the controller, every instance, sidecar and
    proxy; `make up` then stops its peers too). The next `up` restarts what ran."""
    data = data.resolve()
    info = read_info(data)
    if not info or not processes.alive(info.get("pid")):
        out.print("nothing is running")
        return
    _stop_controller(data, forget)
    out.print("stopped")


MOVING = ("running", "rolling_back")
POLL = 0.25  # seconds between two looks at a release that is moving


def _moving(r: dict[str, Any]) -> bool:
    # An abort of a running release parks it, then rolls it back: moving until that is done.
    return r["status"] in MOVING or bool(r.get("aborting"))


def _hints(r: dict[str, Any]) -> None:
    # One command a line: each fits a terminal, none is broken in the middle.
    if r["status"] == "waiting":
        out.print("waiting for approval:")
        out.print("  go on:     switchback release approve")
        out.print("  give up:   switchback release reject")
    elif r["status"] == "suspended":
        out.print("parked:")
        out.print("  run again from the failed step:  switchback release retry")
        out.print("  roll back:                       switchback release abort")
    elif r["status"] == "rollback_failed":
        out.print("the rollback failed:")
        out.print("  see why:   switchback release status")
        out.print("  try again: switchback release abort")


def _versions(r: dict[str, Any]) -> str:
    """``v1 → v2`` (the old version is known once the new one is deployed)."""
    done = next((b for b in r.get("blocks", []) if b["name"] == "deploy_new"), None)
    old = (done or {}).get("output") or {}
    return f"{old.get('old') or '?'} → {(r.get('request') or {}).get('version', '?')}"


def _summary(r: dict[str, Any], took: float | None) -> None:
    line = f"release {r['xid']} ({_versions(r)}): {styled(r['status'])}"
    if r.get("reason") and r["status"] not in ("completed", "rolled_back"):
        line += f" ({r['reason']})"
    if r.get("failed_block") and r["status"] not in ("completed",):
        line += f" at {r['failed_block']}"
    if took is not None:
        line += f" after {took:.1f} s"
    out.print(line)
    failed = next((b for b in r.get("blocks", []) if b["name"] == r.get("failed_block")), None)
    problem = (failed or {}).get("undo_error") or (failed or {}).get("error")
    if problem and r["status"] != "completed":
        out.print(f"  {problem['type']}: {problem['message']}")
    for warning in r.get("warnings") or []:
        out.print(f"[yellow]warning:[/yellow] {warning}")
    _hints(r)


def _exit_for(r: dict[str, Any]) -> None:
    raise typer.Exit(0 if r["status"] in ("completed", "waiting", "rolled_back", "running") else 2)


def _step_table(r: dict[str, Any], now: float) -> Table:
    t = table(
        column("#", whole=True),
        column("step", whole=True),
        column("status", whole=True),
        column("time", whole=True),
        "note",
        title=f"release {_versions(r)}: {r['status']}",
    )
    for b in r["blocks"]:
        started, ended = b.get("started_at"), b.get("ended_at")
        took = f"{((ended or now) - started):.1f}s" if started else ""
        problem = b.get("undo_error") or b.get("error")
        note = f"{problem['type']}: {problem['message']}" if problem else (b.get("note") or "")
        t.add_row(str(b["index"]), b["name"], styled(b["status"]), took, note)
    return t


def _follow(data: Path, r: dict[str, Any]) -> dict[str, Any]:
    """Follow a release from the controller's API until it stops moving (completed, parked,
    waiting, rolled back), showing each step as it runs: a live table on a terminal, one line
    per change of a step otherwise. Ctrl-C stops following, not the release."""
    began = time.monotonic()
    seen: dict[str, str] = {}

    def lines(r: dict[str, Any]) -> None:
        for b in r["blocks"]:
            if seen.get(b["name"]) == b["status"]:
                continue
            if b["name"] not in seen and b["status"] == "pending":
                seen[b["name"]] = b["status"]
                continue
            seen[b["name"]] = b["status"]
            problem = b.get("undo_error") or b.get("error")
            tail = f": {problem['type']}: {problem['message']}" if problem and b["status"] in (
                "failed", "undo_failed") else ""  # fmt: skip
            out.print(
                f"{time.monotonic() - began:6.1f}s  {b['index']} {b['name']} {b['status']}{tail}"
            )

    try:
        if out.is_terminal:
            with Live(_step_table(r, time.time()), console=out, auto_refresh=False) as live:
                while _moving(r):
                    time.sleep(POLL)
                    r = call(data, "GET", f"/releases/{r['xid']}", timeout=30)
                    live.update(_step_table(r, time.time()), refresh=True)
        else:
            lines(r)
            while _moving(r):
                time.sleep(POLL)
                r = call(data, "GET", f"/releases/{r['xid']}", timeout=30)
                lines(r)
    except KeyboardInterrupt:
        err.print(
            f"\nstopped following; the release {r['xid']} goes on in the controller.\n"
            "  follow it:  switchback release watch\n"
            "  see it:     switchback release status\n"
            "  stop it:    switchback release abort"
        )
        raise typer.Exit(130) from None
    _summary(r, time.monotonic() - began)
    return r


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
        True,
        "--wait/--no-wait",
        help="Follow each step until done, parked or waiting (Ctrl-C stops following only)",
    ),
    data: Path = DataOpt,
) -> None:
    """Release a new version: deploy beside current, standby → new, smoke, (approval), redirect
    old sidecars, switch selectors, drain, retire old. A failure parks the release."""
    body = {"environment": env, "version": version, "app_dir": str(app_dir.resolve()), "smoke": smoke,
            "approval": approval_at or approval, "drain_timeout": drain_timeout, "wait": False,
            "actor": actor()}  # fmt: skip
    r = call(data.resolve(), "POST", "/releases", body, timeout=60)
    if not wait:
        out.print(f"release {r['xid']} started ({env}: → {version})")
        out.print("  follow it: switchback release watch · stop it: switchback release abort")
        return
    _exit_for(_follow(data.resolve(), r))


def _decide(action: str, xid: str | None, env: str, reason: str | None, data: Path) -> None:
    target = xid or "latest"
    body = {"reason": reason, "actor": actor(), "wait": False}
    r = call(
        data.resolve(), "POST", f"/releases/{target}/{action}?environment={env}", body, timeout=60
    )
    if r.get("note"):
        out.print(r["note"])
    _exit_for(_follow(data.resolve(), r))


XidArg = typer.Argument(None, help="Release xid [default: the environment's latest]")


@app.command()
def approve(
    xid: str | None = XidArg,
    env: str = EnvOpt,
    reason: str | None = typer.Option(None, "--reason"),
    data: Path = DataOpt,
) -> None:
    """Approve the release waiting at its approval step."""
    _decide("approve", xid, env, reason, data)


@app.command()
def reject(
    xid: str | None = XidArg,
    env: str = EnvOpt,
    reason: str | None = typer.Option(None, "--reason"),
    data: Path = DataOpt,
) -> None:
    """Reject: roll the release back (traffic stays on current, the new version is removed)."""
    _decide("reject", xid, env, reason, data)


@app.command()
def abort(
    xid: str | None = XidArg,
    env: str = EnvOpt,
    reason: str | None = typer.Option(None, "--reason"),
    data: Path = DataOpt,
) -> None:
    """Abort = roll back, make-before-break: traffic back on current, then the new version
    removed. A running release first stops at its next safe point (a smoke test at once)."""
    _decide("abort", xid, env, reason, data)


@app.command()
def retry(
    xid: str | None = XidArg,
    env: str = EnvOpt,
    reason: str | None = typer.Option(None, "--reason"),
    data: Path = DataOpt,
) -> None:
    """Roll a parked release forward from its failed step."""
    _decide("rollforward", xid, env, reason, data)


@app.command()
def watch(xid: str | None = XidArg, env: str = EnvOpt, data: Path = DataOpt) -> None:
    """Follow a release (the environment's latest) step by step until it stops moving."""
    r = call(data.resolve(), "GET", f"/releases/{xid or 'latest'}?environment={env}", timeout=30)
    _exit_for(_follow(data.resolve(), r))


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
    out.print(f"public {e['urls']['public']}")
    out.print(f"standby {e['urls']['standby']}")
    sel = table(
        column("service", whole=True), column("selects version", whole=True), title="services"
    )
    for name, build in sorted(e["selectors"].items()):
        sel.add_row(name, build or "-")
    print_table(sel)
    inst = table(
        column("instance", whole=True),
        column("role", whole=True),
        column("version", whole=True),
        column("alive", whole=True),
        "route",
        column("conns", whole=True),
        column("reqs", whole=True),
        title="instances",
    )
    for i in e["instances"]:
        route = e["redirects"].get(f"{i['role']}@{i['build']}") or "local app"
        inst.add_row(i["id"], i["role"], i["build"], "yes" if i["alive"] else "[red]no[/red]", route,
                     str(i.get("downstream_cx_active", "?")), str(i.get("downstream_rq_active", "?")))  # fmt: skip
    print_table(inst)
    rel = table(
        column("xid", whole=True),
        column("versions", whole=True),
        column("status", whole=True),
        column("step", whole=True),
        title="recent releases",
    )
    for r in s["releases"]:
        if r.get("environment", env) != env:
            continue
        versions = f"{r.get('from') or '?'} → {r.get('to') or '?'}"
        step = r.get("step") or str(r["cursor"])
        rel.add_row(r["xid"], versions, styled(r["status"]), step)
    print_table(rel)
    for r in s["releases"]:
        if r.get("environment", env) != env:
            continue
        for warning in r.get("warnings") or []:
            out.print(f"[yellow]warning:[/yellow] release {r['xid']}: {warning}")
