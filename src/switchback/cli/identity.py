"""`switchback users ...`: tokens, the users file, who a token is, the roles table."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from switchback.cli.common import err, fail, out
from switchback.identity import (
    ADMIN_TOKENS_ENV,
    PERMISSIONS,
    ROLE_DESCRIPTIONS,
    USERS_ENV,
    Directory,
    Problem,
    Role,
    Unauthenticated,
    actions_for,
    hash_token,
    lint_users,
    new_token,
    parse_admin_tokens,
    parse_expiry,
)
from switchback.identity.tokens import expiry_text

app = typer.Typer(
    help="Users, roles and API tokens (the users file is SWITCHBACK_USERS; docs/identity.md).\n\n"
    "Examples:\n\n"
    "  switchback users token new alice --name laptop --expires 90d\n\n"
    "  switchback users check users.yaml\n\n"
    "  SWITCHBACK_TOKEN=sbt_... switchback users whoami --file users.yaml\n\n"
    "  switchback users roles",
    no_args_is_help=True,
)
token_app = typer.Typer(
    help="Make API tokens and hash them for the users file.", no_args_is_help=True
)
app.add_typer(token_app, name="token")

FileOpt = typer.Option(
    None,
    "--file",
    "-f",
    envvar=USERS_ENV,
    help="The users file",
    show_default=False,
)
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of text")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _problems(problems: list[Problem], what: str) -> None:
    for p in problems:
        err.print(f"[red]{p}[/red]", soft_wrap=True, markup=True)
    fail(f"{what}: {_count(len(problems), 'problem')}")


def _admin_tokens() -> dict[str, str]:
    tokens, problems = parse_admin_tokens(os.environ.get(ADMIN_TOKENS_ENV, ""))
    if problems:
        _problems(problems, ADMIN_TOKENS_ENV)
    return tokens


def _directory(file: Path | None) -> Directory:
    """The directory a server started with this environment would have."""
    directory, problems = lint_users(file, _admin_tokens())
    if directory is None:
        _problems(problems, str(file) if file else ADMIN_TOKENS_ENV)
    assert directory is not None
    return directory


def _read_secret(value: str | None, what: str) -> str:
    """A token from an option, or from stdin for ``-`` (keeps it out of shell history and ps)."""
    if value is None or value == "-":
        if value is None and sys.stdin.isatty():
            return typer.prompt(what, hide_input=True).strip()
        value = sys.stdin.readline().strip()
    if not value:
        fail(f"no {what} given")
    return value


@token_app.command("new")
def token_new(
    user: str = typer.Argument(..., help="The user the token is for"),
    name: str | None = typer.Option(
        None, "--name", help="A name to tell the token apart when rotating (default: token-DATE)"
    ),
    expires: str = typer.Option(
        "90d", "--expires", help="A duration (30m, 12h, 90d, 2w), a date (2026-01-31), or never"
    ),
    file: Path | None = FileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Make a new token for USER: printed once, with the line for the users file.

    Only the token's hash goes into the file; the token itself is shown here and never again.
    To rotate, add the new token beside the old one, switch the clients over, then remove the
    old one.
    """
    now = datetime.now(UTC)
    try:
        expires_at = parse_expiry(expires, now=now.timestamp(), relative=True)
    except ValueError as exc:
        fail(f"--expires: {exc}")
    if expires_at is not None and expires_at <= now.timestamp():
        fail("--expires: that is in the past")
    name = name or f"token-{now:%Y-%m-%d}"
    if file is not None:
        directory, _ = lint_users(file)
        if directory is not None and directory.user(user) is None:
            err.print(
                f"[yellow]warning:[/yellow] {file} has no user {user!r} (add one)", soft_wrap=True
            )
    token = new_token()
    entry: dict[str, Any] = {"name": name, "hash": hash_token(token)}
    if expires_at is not None:
        entry["expires"] = expiry_text(expires_at)
    if as_json:
        out.print_json(json.dumps({"user": user, "token": token, **entry}))
        return
    # JSON strings are YAML double-quoted strings: the line pastes into the file as it is.
    line = "- {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in entry.items()) + "}"
    out.print(f"New token for {user} (shown once: keep it now, e.g. as SWITCHBACK_TOKEN):\n")
    out.print(f"  {token}\n", soft_wrap=True)
    out.print(f"Add this line to the users file under users → {user} → tokens:\n")
    out.print(f"      {line}\n", soft_wrap=True, markup=False)
    out.print(f"It expires: {expiry_text(expires_at)}.", markup=False)


@token_app.command("hash")
def token_hash(
    token: str | None = typer.Argument(
        None, help="The token; '-' or nothing: read it from stdin (keeps it out of shell history)"
    ),
) -> None:
    """Print the sha256:... hash of an existing token.

    For example to move a SWITCHBACK_ADMIN_TOKENS entry into the users file.
    """
    out.print(hash_token(_read_secret(token, "token")), soft_wrap=True)


@app.command()
def check(
    file: Path | None = typer.Argument(
        None, envvar=USERS_ENV, help="The users file", show_default=False
    ),
) -> None:
    """Lint a users file: every problem with its file and line; exit 1 on any.

    SWITCHBACK_ADMIN_TOKENS, if set, is checked with it (as a server would read both).
    Warnings (expired tokens, users with no role) do not fail the check.
    """
    if file is None:
        fail(f"no users file: give one or set {USERS_ENV}")
    directory = _directory(file)
    for w in directory.warnings():
        err.print(f"[yellow]warning:[/yellow] {file}: {w}", soft_wrap=True)
    users = [p for p in directory.users.values() if not p.origin]
    counts = [
        _count(len(users), "user"),
        _count(len(directory.groups), "group"),
        _count(directory.token_count, "token"),
        _count(len(directory.policies), "policy", "policies"),
    ]
    out.print(f"[green]ok[/green] {file}: {', '.join(counts)}", soft_wrap=True)


@app.command()
def whoami(
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="SWITCHBACK_TOKEN",
        help="The token ('-': read it from stdin)",
        show_default=False,
    ),
    file: Path | None = FileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show who a token is: user, groups, effective roles, what it may do.

    Answers as a server with the same SWITCHBACK_USERS and SWITCHBACK_ADMIN_TOKENS would, and
    says why a token is refused (unknown, expired, user disabled). Each role shows where it comes
    from (own, or group:NAME).
    """
    if token is None:
        fail("no token: pass --token (or '-' to read it from stdin) or set SWITCHBACK_TOKEN")
    directory = _directory(file)
    try:
        principal = directory.identify(_read_secret(token, "token"))
    except Unauthenticated as exc:
        where = f"{file} and {ADMIN_TOKENS_ENV}" if file else ADMIN_TOKENS_ENV
        fail(f"{exc} (looked in {where})")
    stored = directory.token_of(principal)
    expires = expiry_text(stored.expires_at if stored else None)
    actions = [str(a) for a in actions_for(principal.roles)]
    if as_json:
        body = {
            "name": principal.name,
            "display_name": principal.display_name,
            "email": principal.email,
            "groups": sorted(principal.groups),
            "roles": {str(r): list(s) for r, s in principal.role_sources.items()},
            "chat": dict(principal.chat),
            "token": {"name": principal.token, "expires": expires},
            "origin": principal.origin or "users file",
            "may": actions,
        }
        out.print_json(json.dumps(body))
        return
    email = f" <{principal.email}>" if principal.email else ""
    out.print(f"[bold]{principal.label}[/bold]{email}", soft_wrap=True)
    out.print(f"token:  {principal.token} (expires {expires})", markup=False)
    if principal.origin:
        out.print(f"from:   {principal.origin}")
    out.print(f"groups: {', '.join(sorted(principal.groups)) or '-'}")
    roles = [f"{r} ({', '.join(principal.role_sources[r])})" for r in Role if r in principal.roles]
    out.print(f"roles:  {', '.join(roles) or 'none'}", markup=False)
    if principal.chat:
        out.print("chat:   " + ", ".join(f"{n} {c}" for n, c in principal.chat.items()))
    out.print(f"may:    {', '.join(actions) or 'nothing'}", soft_wrap=True)


@app.command("list")
def list_(file: Path | None = FileOpt, as_json: bool = JsonOpt) -> None:
    """List the users with their effective roles and groups."""
    directory = _directory(file)
    rows = []
    for p in directory.users.values():
        rows.append(
            {
                "name": p.name,
                "display_name": p.display_name,
                "roles": [str(r) for r in Role if r in p.roles],
                "groups": sorted(p.groups),
                "disabled": p.disabled,
                "origin": p.origin or "users file",
            }
        )
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("user", "name", "roles", "groups", "from")
    for r in rows:
        name = r["name"] + (" [red](disabled)[/red]" if r["disabled"] else "")
        table.add_row(
            name,
            r["display_name"] or "",
            ", ".join(r["roles"]),
            ", ".join(r["groups"]),
            r["origin"],
        )
    out.print(table)


def roles_markdown() -> str:
    """The permission table as docs/identity.md shows it (a test keeps the two equal)."""
    head = "| action | " + " | ".join(r.value for r in Role) + " | what it covers |"
    lines = [head, "|---|" + "---|" * len(Role) + "---|"]
    for action, perm in PERMISSIONS.items():
        marks = " | ".join("✓" if r in perm.roles else "" for r in Role)
        lines.append(f"| `{action}` | {marks} | {perm.what} |")
    return "\n".join(lines)


@app.command()
def roles(
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown"),
) -> None:
    """Print the roles and the actions each allows (the one permission table)."""
    if markdown:
        out.print(roles_markdown(), markup=False, soft_wrap=True)
        return
    for role, text in ROLE_DESCRIPTIONS.items():
        out.print(f"[bold]{role}[/bold]: {text}", soft_wrap=True)
    table = Table("action", *[r.value for r in Role], "what it covers")
    for action, perm in PERMISSIONS.items():
        table.add_row(str(action), *["✓" if r in perm.roles else "" for r in Role], perm.what)
    out.print(table)
