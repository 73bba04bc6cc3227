"""The `switchback` command. Each sub-command group lives in its own module of this package."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="switchback",
    help="Durable DO/UNDO transactions and zero-downtime blue/green releases.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Sub-command groups register themselves here; one line per module.
    from switchback.cli import lint, tx

    app.command("run")(tx.run)
    app.command("lint")(lint.lint)
    app.command("locks")(lint.locks)
    app.add_typer(tx.app, name="tx")
    from switchback.cli import release

    app.command("up")(release.up)
    app.command("down")(release.down)
    app.add_typer(release.app, name="release")
    app.add_typer(release.controller_app, name="controller")
    from switchback.cli import serve

    app.command("serve")(serve.serve)
    from switchback.cli import sidecar, xds

    app.add_typer(xds.app, name="xds")
    app.add_typer(sidecar.app, name="sidecar")


def main() -> None:
    from switchback import datadir

    try:
        # Everything this process and its children create (data dir, store, logs, keys) is
        # private unless SWITCHBACK_UMASK says otherwise (see switchback/datadir.py).
        datadir.apply_umask()
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    _register()
    app()
