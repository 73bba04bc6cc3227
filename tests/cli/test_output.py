"""What the CLI prints: whole xids, lines never broken when piped and fitting an 80-column
terminal, one numbering of blocks, "none" for an empty table, help without `<bool>`, --version,
and the line that says which store was read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from switchback import __version__
from switchback.cli.main import command
from tests.cli.conftest import Runner, Store, on_terminal, piped

XID = re.compile(r"\b[0-9a-f]{32}\b")


def test_version(runner: Runner, tmp_path: Path) -> None:
    assert runner.run("--version").output == f"switchback {__version__}\n"
    done = piped("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"switchback {__version__}\n")


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        if not getattr(sub, "hidden", False):
            found += _commands(sub, (*path, name))
    return found


def test_help_shows_no_bool_metavar(runner: Runner) -> None:
    paths = _commands(command())
    assert ("release", "start") in paths and ("xds", "status") in paths
    for path in paths:
        res = runner.run(*path, "--help", terminal_width=80)
        assert res.exit_code == 0, (path, res.output)
        assert "<bool>" not in res.output, (path, res.output)
    start = runner.run("release", "start", "--help").output
    assert re.search(r"--wait\s+--no-wait\s+Follow each step", start), start


def test_tx_list_piped_shows_whole_xids_one_row_a_line(store: Store) -> None:
    done = piped("tx", "list", "--data", str(store.data), cwd=store.data.parent)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].split() == ["xid", "scenario", "status", "#", "reason", "age"]
    by_xid = {XID.search(r).group(0): r.split() for r in rows[2:]}  # type: ignore[union-attr]
    assert set(by_xid) == {store.completed, store.parked, store.conflict}
    assert by_xid[store.parked][1:5] == ["provision", "suspended", "2", "failed"]
    assert by_xid[store.completed][1:4] == ["provision", "completed", "2"]
    assert all(line == line.rstrip() for line in rows), "padding at the ends of lines"
    assert done.stderr.startswith("local store "), done.stderr
    assert "--env, --data, --db or --server" in done.stderr


def test_tx_list_quiet_and_empty(runner: Runner, store: Store, tmp_path: Path) -> None:
    res = runner.run("tx", "list", "-q", "-s", "suspended", "--data", str(store.data))
    assert res.exit_code == 0, res.output
    assert res.stdout.split() == [store.parked, store.conflict]  # newest first
    empty = runner.run("tx", "list", "-s", "rolled_back", "--data", str(store.data))
    assert empty.exit_code == 0
    assert empty.stdout == "no transactions\n"


def test_tx_show_piped_keeps_every_line_whole(store: Store) -> None:
    done = piped("tx", "show", store.conflict, "--data", str(store.data), cwd=store.data.parent)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"xid {store.conflict}"
    assert lines[1] == "scenario provision · status suspended (failed) · at block 0 reserve_address"
    (failed,) = [line for line in lines if line.startswith("0 ")]
    assert failed.split()[:4] == ["0", "reserve_address", "failed", "1"]
    assert failed.endswith(f"Conflict: tokyo-1 is reserved by transaction {store.completed}")


def test_tx_plan_numbers_blocks_like_tx_show(runner: Runner, store: Store) -> None:
    res = runner.run("tx", "plan", store.parked, "--data", str(store.data))
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    forward = lines.index("a rollforward would run")
    assert lines[forward + 1].split()[:3] == ["#", "block", "action"]
    assert lines[forward + 3].split()[:3] == ["2", "announce", "do"]
    back = lines.index("a rollback would run")
    assert [line.split()[:2] for line in lines[back + 3 : back + 6]] == [
        ["2", "announce"], ["1", "write_config"], ["0", "reserve_address"],
    ]  # fmt: skip
    plan = json.loads(
        runner.run("tx", "plan", store.parked, "--json", "--data", str(store.data)).stdout
    )
    assert [s["index"] for s in plan["rollback"]] == [2, 1, 0]


def test_80_column_terminal_fits_and_keeps_xids_whole(store: Store) -> None:
    for args in (("tx", "list"), ("tx", "show", store.conflict), ("tx", "plan", store.parked)):
        code, screen = on_terminal(*args, "--data", str(store.data), cwd=store.data.parent)
        assert code == 0, screen
        lines = screen.splitlines()
        assert max(len(line) for line in lines) <= 80, screen
        found = set(XID.findall(screen))
        assert found and all(len(x) == 32 for x in found)
        if args[1] == "list":
            assert found == {store.completed, store.parked, store.conflict}, screen
        # A sentence is never broken in the middle: each header phrase is on one line.
        if args[1] == "show":
            assert "status suspended (failed) · at block 0 reserve_address" in screen, screen


def test_local_store_is_said_and_another_is_found_by_flag(runner: Runner, store: Store) -> None:
    res = runner.run("tx", "list", "--data", str(store.data))
    assert res.stderr.startswith("local store "), res.stderr
    assert str(Path("data") / "switchback.db") in res.stderr
    db = runner.run("tx", "list", "--db", f"sqlite:///{store.data / 'switchback.db'}", "-q")
    assert set(db.stdout.split()) == {store.completed, store.parked, store.conflict}, db.output


def test_env_without_a_platform_is_a_clear_error(runner: Runner, tmp_path: Path) -> None:
    res = runner.run("tx", "list", "--env", "production", "--data", str(tmp_path / "nothing"))
    assert res.exit_code == 1
    assert "--env production: no platform runs in" in res.stderr
    assert "make up" in res.stderr
