"""`switchback lint APP_DIR` and `switchback locks`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from switchback.cli.common import (
    DataOpt,
    DbOpt,
    JsonOpt,
    column,
    engine_for,
    err,
    out,
    print_table,
    run_async,
    table,
    ts,
)
from switchback.model import lint_app
from switchback.store.records import LockRecord


def lint(app_dir: Path = typer.Argument(..., help="App folder")) -> None:
    """Check an app's definitions; every problem with its file and line. Exit 1 on any problem."""
    app, problems = lint_app(app_dir)
    for p in problems:
        err.print(f"[red]{p}[/red]")
    if problems:
        err.print(f"{len(problems)} problem(s)")
        raise typer.Exit(1)
    for sc in app.scenarios.values():
        route = f"{sc.method} {sc.path}" if sc.path else "(no endpoint)"
        out.print(f"[green]ok[/green] {sc.name}: {route}, {len(sc.blocks)} block(s)")


def locks(
    data: Path | None = DataOpt,
    db: str | None = DbOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List held resource locks and the transaction holding each (on a store: --data, --db)."""

    async def go() -> list[LockRecord]:
        async with engine_for(data, None, db=db) as engine:
            return await engine.locks()

    held = run_async(go)
    if as_json:
        out.print_json(json.dumps([lk.to_dict() for lk in held]))
        return
    t = table(column("key", whole=True), column("xid", whole=True), column("since", whole=True))
    for lk in held:
        t.add_row(lk.key, lk.xid, ts(lk.acquired_at))
    print_table(t, empty="no lock is held")
