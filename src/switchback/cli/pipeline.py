"""`switchback pipeline ...`: the pipeline file of an app's repository (docs/pipeline.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from switchback.cli.common import err, out
from switchback.identity import USERS_ENV, Directory, lint_users
from switchback.valuestream import PIPELINE_FILE, PIPELINE_SHAPE, LintResult, Pipeline, PolicyRef
from switchback.valuestream import lint_pipeline as lint_pipeline_file
from switchback.yamlfile import Problem

app = typer.Typer(
    help=f"The pipeline file ({PIPELINE_FILE} in the app's repository; docs/pipeline.md).\n\n"
    "Examples:\n\n"
    "  switchback pipeline lint .\n\n"
    "  switchback pipeline lint . --users users.yaml\n\n"
    "  switchback pipeline schema > pipeline.schema.json",
    no_args_is_help=True,
)


def _problem_dict(p: Problem) -> dict[str, object]:
    return {"file": p.file, "line": p.line, "message": p.message}


def _directory(users: Path | None) -> Directory | None:
    if users is None:
        return None
    directory, problems = lint_users(users)
    if directory is None:
        for p in problems:
            err.print(f"[red]{escape(str(p))}[/red]", soft_wrap=True)
        err.print(f"the users file has {len(problems)} problem(s): the pipeline was not checked")
        raise typer.Exit(1)
    return directory


def _summary(p: Pipeline) -> list[str]:
    deploy = (
        ", ".join(p.triggers.branches)
        if p.triggers.branches is not None
        else "the project's branch"
    )
    lines = [
        f"triggers: a push to {deploy} runs the pipeline; other pushes and pull requests run CI"
    ]
    if not p.triggers.pull_requests:
        lines[-1] = lines[-1].replace(" and pull requests", "")
    lines.append(
        "CI: " + (", ".join(f"{s.name} ({s.timeout:g} s)" for s in p.ci) if p.ci else "no step")
    )
    lock = p.build.lock if p.build.lock is not None else "requirements.lock/.txt if present"
    lines.append(f"build: {p.app} (lock: {lock or 'none'})")
    stages = []
    for e in p.environments:
        gate = ""
        if isinstance(e.approval, PolicyRef):
            gate = f", approval: policy {e.approval.name}"
        elif e.approval is not None:
            gate = f", approval: {e.approval.required} of {', '.join(e.approval.approvers)}"
        smoke = ", smoke test" if e.smoke else ""
        stages.append(f"{e.name}{smoke}{gate}")
    lines.append("environments: " + (" → ".join(stages) if stages else "none (CI and build only)"))
    lines.append(f"on failure: {p.on_failure}")
    return lines


@app.command("lint")
def lint(
    path: Path = typer.Argument(
        ..., help=f"The app's repository (a checkout holding {PIPELINE_FILE}) or the file itself"
    ),
    users: Path | None = typer.Option(
        None,
        "--users",
        envvar=USERS_ENV,
        help="The users file, to check approval policies against (named policies, users, groups)",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text"),
) -> None:
    """Check a pipeline file: every problem with its file and line. Exit 1 on any problem."""
    result: LintResult = lint_pipeline_file(path, directory=_directory(users))
    if as_json:
        body = {
            "ok": result.ok,
            "problems": [_problem_dict(p) for p in result.problems],
            "notes": [_problem_dict(p) for p in result.notes],
            "pipeline": result.pipeline.to_dict() if result.pipeline else None,
        }
        out.print_json(json.dumps(body))
        raise typer.Exit(0 if result.ok else 1)
    for p in result.problems:
        err.print(f"[red]{escape(str(p))}[/red]", soft_wrap=True)
    for p in result.notes:
        err.print(f"[yellow]note:[/yellow] {escape(str(p))}", soft_wrap=True)
    if result.pipeline is None:
        err.print(f"{len(result.problems)} problem(s)")
        raise typer.Exit(1)
    out.print(f"[green]ok[/green] {escape(str(path))}")
    for line in _summary(result.pipeline):
        out.print(f"  {escape(line)}", soft_wrap=True)


@app.command("schema")
def schema() -> None:
    """Print the pipeline file's JSON Schema (for editors: yaml-language-server and others)."""
    out.print_json(json.dumps(PIPELINE_SHAPE))
