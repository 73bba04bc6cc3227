"""`switchback lint APP_DIR`."""

from __future__ import annotations

from pathlib import Path

import typer

from switchback.cli.common import err, out
from switchback.model import lint_app


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
