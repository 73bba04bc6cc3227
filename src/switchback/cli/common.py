"""Helpers shared by the command modules: options, the engine context, printing."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich import box
from rich.console import Console, ConsoleDimensions
from rich.table import Column, Table

from switchback.engine import Engine, EngineError, RequestInvalid
from switchback.model import App, AppLoadError, RequestCheckFailed, load_app
from switchback.store import StoreError, open_store
from switchback.store.records import TxRecord

T = TypeVar("T")


class _Console(Console):
    """Fits a terminal; when the output is a pipe or a file there is no width to fit (whatever
    COLUMNS says): lines are never broken and tables show every value whole, one row per line,
    so that `grep` and `cut` see what a person would."""

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:
            return ConsoleDimensions(100_000, 25)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


out = _Console(highlight=False)
err = _Console(stderr=True, highlight=False)


def column(header: str, *, whole: bool = False, clip: bool = False) -> Column:
    """A table column. ``whole``: an identifier (xid, instance, callable, time), never shortened
    nor broken. The others give way when a terminal is narrow: prose wraps between words,
    ``clip`` (a JSON summary) stays on one line and ends with … (`--json` has it all)."""
    if whole:
        return Column(header, no_wrap=True, min_width=len(header))
    if clip:  # wrappable, so a narrow terminal narrows it first; a long word ends with …
        return Column(header, overflow="ellipsis")
    return Column(header, overflow="fold")


def table(*columns: Column | str, title: str | None = None) -> Table:
    """Our one table style: a header rule, no boxes (the table's width is its content)."""
    cols = [column(c) if isinstance(c, str) else c for c in columns]
    return Table(
        *cols,
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )


def print_table(t: Table, *, empty: str = "none") -> None:
    """The table, or one line saying it is empty (never a header without rows)."""
    if not t.row_count:
        out.print(f"[bold]{t.title}[/bold]: {empty}" if t.title else empty)
    elif out.is_terminal:
        out.print(t)
    else:  # no terminal: without the padding that fills each line up to the table's width
        with out.capture() as captured:
            out.print(t)
        for line in captured.get().splitlines():
            out.out(line.rstrip(), highlight=False)


DataOpt = typer.Option(
    None,
    "--data",
    envvar="SWITCHBACK_DATA",
    help="Data directory: a local SQLite store, or where `switchback up` runs the platform "
    "[default: ./.switchback]",
)
AppOpt = typer.Option(
    None,
    "--app",
    envvar="SWITCHBACK_APP",
    help="App folder [default: the one last used with this data directory]",
)
DbOpt = typer.Option(
    None,
    "--db",
    envvar="SWITCHBACK_DB",
    help="Store URL (postgresql://user@host:5432/db[?schema=NAME] or sqlite:///file.db); "
    "overrides --data. Several workers share one PostgreSQL.",
)
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of tables")
ServerOpt = typer.Option(
    None,
    "--server",
    envvar="SWITCHBACK_SERVER",
    help="Act through the HTTP admin API at this URL instead of the local store "
    "(bearer token from SWITCHBACK_TOKEN)",
)

FINISHED = ("completed", "rolled_back")
STATUS_STYLE = {
    "completed": "green", "rolled_back": "cyan", "running": "yellow", "waiting": "blue",
    "suspended": "red", "rolling_back": "magenta", "rollback_failed": "bold red",
    "done": "green", "undone": "cyan", "failed": "red", "undo_failed": "bold red",
    "undoing": "magenta", "pending": "dim",
}  # fmt: skip


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def actor() -> str:
    return os.environ.get("SWITCHBACK_ACTOR") or getpass.getuser()


def data_dir(data: Path | None) -> Path:
    return (data or Path(".switchback")).resolve()


def store_location(data: Path | None, db: str | None = None) -> str | Path:
    """Where the store lives: the ``--db`` URL if given (kept a string: a Path would mangle
    ``postgresql://``), else the SQLite file in the data directory."""
    if db:
        from switchback.store import is_store_url

        if not is_store_url(db):
            fail(f"--db must be a postgresql://, postgres:// or sqlite:/// URL, not {db!r}")
        return db
    return data_dir(data)


def read_json_file(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")


def load_app_or_fail(path: Path) -> App:
    try:
        return load_app(path)
    except AppLoadError as exc:
        for p in exc.problems:
            err.print(f"[red]{p}[/red]")
        fail(f"the app in {path} has {len(exc.problems)} problem(s); run `switchback lint {path}`")


def run_async(coro_fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except RequestInvalid as exc:
        for v in exc.violations:
            err.print(f"  [red]{v['path']}[/red]: {v['message']}")
        fail("the request does not match the scenario's schema")
    except EngineError as exc:
        fail(str(exc))
    except (StoreError, RequestCheckFailed) as exc:  # e.g. the --db server cannot be reached
        fail(str(exc))


@asynccontextmanager
async def engine_for(  # type: ignore[no-untyped-def]
    data: Path | None, app_path: Path | None, *, remember_app: bool = False, db: str | None = None
):
    """An open engine on the store (``--db`` URL or data directory), with the app (given or
    remembered)."""
    store = open_store(store_location(data, db))
    await store.open()
    try:
        if app_path is None:
            remembered = await store.get_meta("app_dir")
            app_path = Path(remembered) if remembered else None
        app = App() if app_path is None else load_app_or_fail(app_path)
        if app_path is not None and remember_app:
            await store.set_meta("app_dir", str(app_path.resolve()))
    except BaseException:
        await store.close()
        raise
    # The engine takes over the open store (open() is idempotent) and closes it.
    engine = Engine(app, store)
    await engine.open()
    try:
        yield engine
    finally:
        await engine.close()


def ts(value: float | None) -> str:
    if not value:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


def short_json(value: Any, limit: int = 60) -> str:
    if value is None:
        return ""
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_tx(tx: dict[str, Any]) -> None:
    """Print a transaction given as the dict of TxRecord.to_dict() (local or from the API)."""
    out.print(f"[bold]xid {tx['xid']}[/bold]")
    status = styled(tx["status"]) + (f" ({tx['reason']})" if tx.get("reason") else "")
    at = tx.get("current_block")
    out.print(
        f"scenario {tx['scenario']} · status {status}"
        + (f" · at block {tx['cursor']} {at}" if at and tx["status"] not in FINISHED else "")
    )
    out.print(f"created {ts(tx['created_at'])} · updated {ts(tx['updated_at'])}")
    blocks = table(
        column("#", whole=True),
        column("block", whole=True),
        column("status", whole=True),
        column("tries", whole=True),
        column("output", clip=True),
        "error / note",
        title="blocks",
    )
    for b in tx["blocks"]:
        problem = b.get("undo_error") or b.get("error")
        text = f"{problem['type']}: {problem['message']}" if problem else (b.get("note") or "")
        tries = str(b["attempts"]) + (f" / undo {b['undo_attempts']}" if b["undo_attempts"] else "")
        blocks.add_row(
            str(b["index"]), b["name"], styled(b["status"]), tries, short_json(b["output"]), text
        )
    print_table(blocks)
    if tx.get("result") is not None:
        out.print(f"result: {short_json(tx['result'], 200)}")
    if tx.get("audit"):
        audit = table(
            column("when", whole=True),
            column("actor", whole=True),
            column("action", whole=True),
            "reason",
            column("input", clip=True),
            title="audit",
        )
        for a in tx["audit"]:
            audit.add_row(
                ts(a["at"]),
                a["actor"],
                a["action"],
                a.get("reason") or "",
                short_json(a.get("input")),
            )
        print_table(audit)


def exit_code_for(tx: TxRecord | dict[str, Any]) -> int:
    status = tx.status if isinstance(tx, TxRecord) else tx["status"]
    return 0 if status in ("completed", "rolled_back", "waiting") else 2


def api_call(
    server: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    params: dict[str, Any] | None = None,
    token: str | None = None,
) -> Any:
    """One admin API call (``switchback tx ... --server URL``). Errors exit with status 1 and
    the server's message; the token (SWITCHBACK_TOKEN unless given) is never printed."""
    import httpx

    token = token or os.environ.get("SWITCHBACK_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    query = {k: v for k, v in (params or {}).items() if v is not None}
    try:
        # No read timeout: a decision answers when the transaction parks or completes.
        r = httpx.request(
            method,
            server.rstrip("/") + path,
            json=body,
            params=query,
            headers=headers,
            timeout=httpx.Timeout(None, connect=10.0),
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach {server}: {type(exc).__name__}: {exc}")
    try:
        data = r.json()
    except ValueError:
        data = None
    if r.status_code >= 400:
        if not isinstance(data, dict):
            fail(f"{server} answered {r.status_code}")
        detail = data.get("detail")
        if isinstance(detail, dict):
            for v in detail.get("violations") or []:
                err.print(f"  [red]{v['path']}[/red]: {v['message']}")
        hint = " (set SWITCHBACK_TOKEN)" if r.status_code == 401 and not token else ""
        fail(f"{r.status_code}: {data.get('error')}{hint}")
    return data
