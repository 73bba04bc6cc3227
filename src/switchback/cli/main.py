"""The `switchback` command. Each sub-command group lives in its own module of this package."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import typer
from typer.core import TyperGroup


def _no_flag_metavars(command: Any) -> None:
    """Typer's help shows ``<bool>`` beside every flag (``--wait/--no-wait <bool>``), which
    reads as if the flag took a value: an empty metavar shows nothing (the help option too)."""
    ctx = command.context_class(command)
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in (getattr(command, "commands", None) or {}).values():
        _no_flag_metavars(sub)


class _Group(TyperGroup):
    """The root command: every command it hands out (and its own help) shows flags bare."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _no_flag_metavars(cmd)
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _no_flag_metavars(self)
        super().format_help(ctx, formatter)


app = typer.Typer(
    cls=_Group,
    name="switchback",
    help="Durable DO/UNDO transactions and zero-downtime blue/green releases.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version() -> str:
    try:
        return version("switchback")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from switchback import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"switchback {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Durable DO/UNDO transactions and zero-downtime blue/green releases."""


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
    from switchback.cli import identity, k8s, pipeline, sidecar, xds

    app.add_typer(xds.app, name="xds")
    app.add_typer(sidecar.app, name="sidecar")
    app.add_typer(k8s.app, name="k8s")
    app.add_typer(identity.app, name="users")
    app.add_typer(pipeline.app, name="pipeline")


def command() -> Any:
    """The click command behind `switchback` (for tools that walk it, like the docs test)."""
    return typer.main.get_command(app)


_register()


def main() -> None:
    from switchback import datadir

    try:
        # Everything this process and its children create (data dir, store, logs, keys) is
        # private unless SWITCHBACK_UMASK says otherwise (see switchback/datadir.py).
        datadir.apply_umask()
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    app(prog_name="switchback")
