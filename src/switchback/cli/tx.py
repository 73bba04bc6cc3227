"""`switchback run`, `switchback tx ...`: start transactions and decide on parked ones."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from switchback.cli.common import (
    AppOpt,
    DataOpt,
    DbOpt,
    JsonOpt,
    ServerOpt,
    actor,
    api_call,
    engine_for,
    exit_code_for,
    out,
    print_tx,
    read_json_file,
    run_async,
    short_json,
    styled,
    ts,
)
from switchback.engine import Engine
from switchback.store.records import TX_STATUSES, TxRecord

app = typer.Typer(help="Inspect transactions and decide on parked ones.", no_args_is_help=True)


def _show(tx: TxRecord | dict[str, Any], as_json: bool) -> None:
    data = tx.to_dict() if isinstance(tx, TxRecord) else tx
    if as_json:
        out.print_json(json.dumps(data))
    else:
        print_tx(data)


def _remote(server: str, path: str, body: Any, as_json: bool) -> None:
    """A decision through the HTTP API: show the transaction, exit like the local command."""
    tx = api_call(server, "POST", path, body=body)
    _show(tx, as_json)
    raise typer.Exit(exit_code_for(tx))


def _decide(
    act: Callable[[Engine], Awaitable[TxRecord]],
    *,
    remote: tuple[str | None, str, Any],
    data: Path | None,
    db: str | None,
    app_dir: Path | None,
    as_json: bool,
) -> None:
    """One decision, through the API (``remote`` = server, path, body) or on the local store;
    shows the transaction and exits 0 (settled) or 2 (parked)."""
    server, path, body = remote
    if server:
        _remote(server, path, body, as_json)

    async def go() -> TxRecord:
        async with engine_for(data, app_dir, db=db) as engine:
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
    if server:
        params = {"status": status, "scenario": scenario, "limit": limit, "cursor": cursor}
        body = api_call(server, "GET", "/transactions", params=params)
        _print_list(body["transactions"], body["next_cursor"], as_json)
        return

    async def go() -> tuple[list[TxRecord], str | None]:
        async with engine_for(data, None, db=db) as engine:
            return await engine.list(status=status, scenario=scenario, limit=limit, cursor=cursor)

    page, nxt = run_async(go)
    _print_list([_summary(t) for t in page], nxt, as_json)


def _print_list(page: list[dict[str, Any]], nxt: str | None, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"transactions": page, "next_cursor": nxt}))
        return
    table = Table("xid", "scenario", "status", "block", "reason", "created")
    for t in page:
        table.add_row(
            t["xid"],
            t["scenario"],
            styled(t["status"]),
            str(t["cursor"]),
            t["reason"] or "",
            ts(t["created_at"]),
        )
    out.print(table)
    if nxt:
        out.print(f"more: --cursor {nxt}")


def _present(body: dict[str, Any]) -> dict[str, Any]:
    """Only the fields given: the API treats a missing field and null differently."""
    return {k: v for k, v in body.items() if v is not None}


def _summary(t: TxRecord) -> dict[str, Any]:
    return {"xid": t.xid, "scenario": t.scenario, "status": t.status, "reason": t.reason,
            "cursor": t.cursor, "created_at": t.created_at, "updated_at": t.updated_at}  # fmt: skip


@app.command()
def show(
    xid: str,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """Blocks with status, tries, output and error; the audit trail."""
    if server:
        _show(api_call(server, "GET", f"/transactions/{xid}"), as_json)
        return

    async def go() -> TxRecord:
        async with engine_for(data, None, db=db) as engine:
            return await engine.get(xid)

    _show(run_async(go), as_json)


@app.command()
def rollforward(
    xid: str,
    input: Path | None = typer.Option(
        None, "--input", "-i", help="Corrected request (JSON file); validated again"
    ),
    from_block: str | None = typer.Option(None, "--from", help="Start from this (earlier) block"),
    reason: str | None = typer.Option(None, "--reason", "-r"),
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
        remote=(server, f"/transactions/{xid}/rollforward", body),
        data=data, db=db, app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def rollback(
    xid: str,
    reason: str | None = typer.Option(None, "--reason", "-r"),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    app_dir: Path | None = AppOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """UNDO every block that ran, newest first (or retry a failed rollback)."""
    _decide(
        lambda e: e.rollback(xid, actor=actor(), reason=reason),
        remote=(server, f"/transactions/{xid}/rollback", _present({"reason": reason})),
        data=data, db=db, app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def pause(
    xid: str,
    reason: str | None = typer.Option(None, "--reason", "-r"),
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
        remote=(server, f"/transactions/{xid}/pause", _present({"reason": reason})),
        data=data, db=db, app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def compensated(
    xid: str,
    reason: str = typer.Option(..., "--reason", "-r", help="What was done by hand (required)"),
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    app_dir: Path | None = AppOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """Mark the failed UNDO as compensated by hand; the rollback goes on with older blocks."""
    _decide(
        lambda e: e.mark_compensated(xid, actor=actor(), reason=reason),
        remote=(server, f"/transactions/{xid}/compensated", {"reason": reason}),
        data=data, db=db, app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def signal(
    xid: str,
    name: str,
    payload: Path | None = typer.Option(None, "--payload", help="Signal payload (JSON file)"),
    reason: str | None = typer.Option(None, "--reason", "-r"),
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
        remote=(server, f"/transactions/{xid}/signals/{name}", _present({"payload": body, "reason": reason})),
        data=data, db=db, app_dir=app_dir, as_json=as_json,
    )  # fmt: skip


@app.command()
def plan(
    xid: str,
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    app_dir: Path | None = AppOpt,
    as_json: bool = JsonOpt,
    server: str | None = ServerOpt,
) -> None:
    """Dry run: what a rollforward and a rollback would run, in order, with their inputs."""

    async def go() -> dict[str, Any]:
        async with engine_for(data, app_dir, db=db) as engine:
            return await engine.plan(xid)

    p = api_call(server, "GET", f"/transactions/{xid}/plan") if server else run_async(go)
    if as_json:
        out.print_json(json.dumps(p))
        return
    out.print(f"[bold]{p['xid']}[/bold] is {styled(p['status'])}")
    for title, key in (("rollforward would run", "rollforward"), ("after the signal, would run", "resume_after_signal"),
                       ("rollback would run", "rollback")):  # fmt: skip
        steps = p[key]
        if not steps:
            continue
        table = Table("#", "block", "action", "callable", "input", title=title)
        for n, s in enumerate(steps, 1):
            inp = s.get("do_output") if key == "rollback" else s.get("request")
            table.add_row(
                str(n),
                s["block"],
                s["action"],
                s.get("callable") or s.get("signal") or "",
                short_json(inp),
            )
        out.print(table)


@app.command()
def recover(
    data: Path | None = DataOpt, db: str | None = DbOpt, app_dir: Path | None = AppOpt
) -> None:
    """Take over transactions whose process died and apply the in-doubt rules."""

    async def go() -> list[str]:
        async with engine_for(data, app_dir, db=db) as engine:
            taken = await engine.recover()
            for xid in taken:
                await engine.wait(xid)
            return taken

    taken = run_async(go)
    out.print(f"recovered {len(taken)} transaction(s)" + (": " + ", ".join(taken) if taken else ""))
