"""`switchback run`, `switchback tx ...`: start transactions and decide on parked ones."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from switchback.cli import discovery
from switchback.cli.common import (
    AppOpt,
    DataOpt,
    DbOpt,
    JsonOpt,
    ServerOpt,
    actor,
    api_call,
    column,
    data_dir,
    engine_for,
    err,
    exit_code_for,
    fail,
    out,
    print_table,
    print_tx,
    read_json_file,
    run_async,
    short_json,
    styled,
    table,
)
from switchback.engine import Engine
from switchback.store.records import TX_STATUSES, TxRecord

app = typer.Typer(
    help="Inspect transactions and decide on parked ones. Which store: the environment of the "
    "platform running in DATA (`switchback up`, `make up`) if there is one, else the local store "
    "in DATA; --env, --data, --db and --server pick another. The first line (on stderr) says "
    "which one was read.",
    no_args_is_help=True,
)

EnvOpt = typer.Option(
    None,
    "--env",
    "-e",
    envvar="SWITCHBACK_ENV",
    help="An environment of the platform running in DATA: act through its admin API "
    "[default: its only one, or production]",
)


@dataclass(frozen=True)
class Target:
    """Where a `tx` command reads and decides: an admin API (``server``) or a store."""

    label: str
    server: str | None = None
    token: str | None = None
    data: Path | None = None
    db: str | None = None

    def say(self) -> None:
        err.print(f"[dim]{self.label} · another: --env, --data, --db or --server[/dim]")


def _where(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _redacted(url: str) -> str:
    """A store URL without its password, for a header line."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def target(
    server: str | None, db: str | None, data: Path | None, env: str | None, *, quiet: bool = False
) -> Target:
    """The one rule: --server, else --db, else the platform running in DATA (its environment,
    through its API, so decisions run where the app's settings are), else DATA's local store."""
    token = os.environ.get("SWITCHBACK_TOKEN")
    if server:
        t = Target(f"admin API {server}", server=server, token=token)
    elif db:
        t = Target(f"store {_redacted(db)}", db=db)
    else:
        ctl = discovery.running_controller(data)
        if ctl is None and env:
            fail(
                f"--env {env}: no platform runs in {_where(data_dir(data))} "
                "(start it with `make up` or `switchback up APP_DIR`, or give --data DIR)"
            )
        if ctl is not None:
            try:
                e = discovery.environment(ctl, env)
            except discovery.DiscoveryError as exc:
                fail(str(exc))
            t = Target(
                f"environment {e.name} of the platform in {_where(ctl.data)} ({e.url})",
                server=e.url,
                token=token or e.token,
            )
        else:
            where = _where(data_dir(data) / "switchback.db")
            t = Target(f"local store {where}", data=data)
    if not quiet:
        t.say()
    return t


def _show(tx: TxRecord | dict[str, Any], as_json: bool) -> None:
    data = tx.to_dict() if isinstance(tx, TxRecord) else tx
    if as_json:
        out.print_json(json.dumps(data))
    else:
        print_tx(data)


def _decide(
    act: Callable[[Engine], Awaitable[TxRecord]],
    *,
    remote: tuple[str, Any],
    to: Target,
    app_dir: Path | None,
    as_json: bool,
) -> None:
    """One decision, through the API (``remote`` = path, body) or on a store; shows the
    transaction and exits 0 (settled) or 2 (parked)."""
    if to.server:
        path, body = remote
        tx = api_call(to.server, "POST", path, body=body, token=to.token)
        _show(tx, as_json)
        raise typer.Exit(exit_code_for(tx))

    async def go() -> TxRecord:
        async with engine_for(to.data, app_dir, db=to.db) as engine:
            return await act(engine)

    tx = run_async(go)
    _show(tx, as_json)
    raise typer.Exit(exit_code_for(tx))


def run(
    app_dir: Path = typer.Argument(..., help="App folder", exists=True, file_okay=False),
    scenario: str = typer.Argument(..., help="Scenario name"),
    input: Path | None = typer.Option(
        None, "--input", "-i", help="Request body as a JSON file ('-' = stdin)"
    ),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    idempotency_key: str | None = typer.Option(
        None, "--idempotency-key", help="Start nothing new if this key was used"
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Start one transaction and follow it until it completes or parks.

    Exit status: 0 completed, 2 parked (suspended / rollback_failed), 1 error.
    """
    request = read_json_file(input) if input else {}
    if not db and discovery.running_controller(data) is not None and not as_json:
        # `tx` commands would show the platform's environment by default, not this store.
        where = data_dir(data) / "switchback.db"
        err.print(
            f"[dim]local store {_where(where)}, not the platform that runs in "
            f"{_where(data_dir(data))}; `tx` commands read it with --db sqlite:///{where}[/dim]"
        )

    async def go() -> TxRecord:
        async with engine_for(data, app_dir, remember_app=True, db=db) as engine:
            return await engine.run(
                scenario, request, actor=actor(), idempotency_key=idempotency_key
            )

    tx = run_async(go)
    _show(tx, as_json)
    raise typer.Exit(exit_code_for(tx))


@app.command("list")
def list_(
    status: str | None = typer.Option(
        None, "--status", "-s", help=f"One of: {', '.join(TX_STATUSES)}"
    ),
    scenario: str | None = typer.Option(None, "--scenario"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    cursor: str | None = typer.Option(None, "--cursor", help="Continue after a previous page"),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Only the xids, one a line (for scripts: xid=$(... | head -1))"
    ),
    env: str | None = EnvOpt,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """List transactions, newest first."""
    if status and status not in TX_STATUSES:
        raise typer.BadParameter(
            f"unknown status {status!r}; one of: {', '.join(TX_STATUSES)}", param_hint="--status"
        )
    to = target(server, db, data, env, quiet=quiet or as_json)
    if to.server:
        params = {"status": status, "scenario": scenario, "limit": limit, "cursor": cursor}
        body = api_call(to.server, "GET", "/transactions", params=params, token=to.token)
        _print_list(body["transactions"], body["next_cursor"], as_json, quiet)
        return

    async def go() -> tuple[list[TxRecord], str | None]:
        async with engine_for(to.data, None, db=to.db) as engine:
            return await engine.list(status=status, scenario=scenario, limit=limit, cursor=cursor)

    page, nxt = run_async(go)
    _print_list([_summary(t) for t in page], nxt, as_json, quiet)


def _age(t: float) -> str:
    """How long ago, in the largest whole unit (like kubectl's AGE): 45s, 12m, 3h, 9d."""
    s = max(0, int(time.time() - t))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _print_list(page: list[dict[str, Any]], nxt: str | None, as_json: bool, quiet: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"transactions": page, "next_cursor": nxt}))
        return
    if quiet:
        for t in page:
            out.print(t["xid"])
        return
    t = table(
        column("xid", whole=True),
        column("scenario", whole=True),
        column("status", whole=True),
        column("#", whole=True),
        "reason",
        column("age", whole=True),
    )
    for row in page:
        t.add_row(
            row["xid"],
            row["scenario"],
            styled(row["status"]),
            str(row["cursor"]),
            row["reason"] or "",
            _age(row["created_at"]),
        )
    print_table(t, empty="no transactions")
    if nxt:
        out.print(f"more: --cursor {nxt}")


def _present(body: dict[str, Any]) -> dict[str, Any]:
    """Only the fields given: the API treats a missing field and null differently."""
    return {k: v for k, v in body.items() if v is not None}


def _summary(t: TxRecord) -> dict[str, Any]:
    return {"xid": t.xid, "scenario": t.scenario, "status": t.status, "reason": t.reason,
            "cursor": t.cursor, "created_at": t.created_at, "updated_at": t.updated_at}  # fmt: skip


XidArg = typer.Argument(..., help="Transaction id (as `tx list` shows it)")


@app.command()
def show(
    xid: str = XidArg,
    env: str | None = EnvOpt,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """Blocks with status, tries, output and error; the audit trail."""
    to = target(server, db, data, env, quiet=as_json)
    if to.server:
        _show(api_call(to.server, "GET", f"/transactions/{xid}", token=to.token), as_json)
        return

    async def go() -> TxRecord:
        async with engine_for(to.data, None, db=to.db) as engine:
            return await engine.get(xid)

    _show(run_async(go), as_json)


@app.command()
def rollforward(
    xid: str = XidArg,
    input: Path | None = typer.Option(
        None, "--input", "-i", help="Corrected request (JSON file); validated again"
    ),
    from_block: str | None = typer.Option(None, "--from", help="Start from this (earlier) block"),
    reason: str | None = typer.Option(None, "--reason", "-r"),
    env: str | None = EnvOpt,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    app_dir: Path | None = AppOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """Run a suspended transaction again from its failed block."""
    request = read_json_file(input)
    body = _present({"request": request, "from": from_block, "reason": reason})
    _decide(
        lambda e: e.rollforward(xid, actor=actor(), reason=reason, request=request, from_block=from_block),
        remote=(f"/transactions/{xid}/rollforward", body),
        to=target(server, db, data, env, quiet=as_json), app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def rollback(
    xid: str = XidArg,
    reason: str | None = typer.Option(None, "--reason", "-r"),
    env: str | None = EnvOpt,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    app_dir: Path | None = AppOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """UNDO every block that ran, newest first (or retry a failed rollback)."""
    _decide(
        lambda e: e.rollback(xid, actor=actor(), reason=reason),
        remote=(f"/transactions/{xid}/rollback", _present({"reason": reason})),
        to=target(server, db, data, env, quiet=as_json), app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def pause(
    xid: str = XidArg,
    reason: str | None = typer.Option(None, "--reason", "-r"),
    env: str | None = EnvOpt,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    app_dir: Path | None = AppOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """Park a running transaction at its next block boundary (the running block finishes, the
    next does not start), a waiting one at once; `rollforward` goes on, `rollback` undoes."""
    _decide(
        lambda e: e.pause(xid, actor=actor(), reason=reason),
        remote=(f"/transactions/{xid}/pause", _present({"reason": reason})),
        to=target(server, db, data, env, quiet=as_json), app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def compensated(
    xid: str = XidArg,
    reason: str = typer.Option(..., "--reason", "-r", help="What was done by hand (required)"),
    env: str | None = EnvOpt,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    app_dir: Path | None = AppOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """Mark the failed UNDO as compensated by hand; the rollback goes on with older blocks."""
    _decide(
        lambda e: e.mark_compensated(xid, actor=actor(), reason=reason),
        remote=(f"/transactions/{xid}/compensated", {"reason": reason}),
        to=target(server, db, data, env, quiet=as_json), app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def signal(
    xid: str = XidArg,
    name: str = typer.Argument(..., help="Signal name (a `wait` block's)"),
    payload: Path | None = typer.Option(None, "--payload", help="Signal payload (JSON file)"),
    reason: str | None = typer.Option(None, "--reason", "-r"),
    env: str | None = EnvOpt,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    app_dir: Path | None = AppOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """Send a named signal; a transaction waiting for it resumes."""
    body = read_json_file(payload)
    _decide(
        lambda e: e.signal(xid, name, body, actor=actor(), reason=reason),
        remote=(f"/transactions/{xid}/signals/{name}", _present({"payload": body, "reason": reason})),
        to=target(server, db, data, env, quiet=as_json), app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def plan(
    xid: str = XidArg,
    env: str | None = EnvOpt,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    app_dir: Path | None = AppOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """Dry run: what a rollforward and a rollback would run, in order, with their inputs."""
    to = target(server, db, data, env, quiet=as_json)

    async def go() -> dict[str, Any]:
        async with engine_for(to.data, app_dir, db=to.db) as engine:
            return await engine.plan(xid)

    if to.server:
        p = api_call(to.server, "GET", f"/transactions/{xid}/plan", token=to.token)
    else:
        p = run_async(go)
    if as_json:
        out.print_json(json.dumps(p))
        return
    out.print(f"[bold]xid {p['xid']}[/bold] is {styled(p['status'])}")
    shown = 0
    for title, key in (("a rollforward would run", "rollforward"), ("after the signal, it would run", "resume_after_signal"),
                       ("a rollback would run", "rollback")):  # fmt: skip
        steps = p[key]
        if not steps:
            continue
        shown += 1
        # In the order they would run; "#" is the block's index, as in `tx show`.
        t = table(
            column("#", whole=True),
            column("block", whole=True),
            column("action", whole=True),
            column("callable", whole=True),
            column("input", clip=True),
            title=title,
        )
        for s in steps:
            inp = s.get("do_output") if key == "rollback" else s.get("request")
            t.add_row(
                str(s.get("index", "?")),
                s["block"],
                s["action"],
                s.get("callable") or s.get("signal") or "",
                short_json(inp),
            )
        print_table(t)
    if not shown:
        out.print("no decision applies: nothing would run")


@app.command()
def recover(
    data: Path | None = DataOpt, db: str | None = DbOpt, app_dir: Path | None = AppOpt
) -> None:
    """Take over transactions whose process died and apply the in-doubt rules (on a store; a
    running platform's `transaction` role does this on its own)."""
    to = target(None, db, data, None)
    if to.server:
        fail(
            "the platform's transaction role recovers its environment's transactions on its own; "
            "`tx recover` acts on a store (--db URL)"
        )

    async def go() -> list[str]:
        async with engine_for(to.data, app_dir, db=to.db) as engine:
            taken = await engine.recover()
            for xid in taken:
                await engine.wait(xid)
            return taken

    taken = run_async(go)
    out.print(f"recovered {len(taken)} transaction(s)" + (": " + ", ".join(taken) if taken else ""))
