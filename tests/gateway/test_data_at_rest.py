"""What `switchback serve` leaves on disk is its user's only: the data dir 0700, every file in it
0600 (the store and SQLite's -wal/-shm), unless SWITCHBACK_UMASK asks otherwise."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from .conftest import SWITCHBACK, start_server

PING = Path(__file__).resolve().parents[2] / "examples" / "ping"


def modes(root: Path) -> dict[str, int]:
    """Mode of the root and of everything under it, by path relative to the root."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def expect(root: Path, file_mode: int, dir_mode: int, *, running: bool) -> None:
    seen = modes(root)
    files = {p for p in seen if p != "." and (root / p).is_file()}
    # SQLite removes -wal and -shm when the last connection closes cleanly.
    db = (
        {"switchback.db", "switchback.db-wal", "switchback.db-shm"}
        if running
        else {"switchback.db"}
    )
    assert db <= files, seen
    wrong = {p: oct(m) for p, m in seen.items() if m != (file_mode if p in files else dir_mode)}
    assert wrong == {}, f"expected files {file_mode:o}, dirs {dir_mode:o}: {wrong}"


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"),
    [(None, 0o600, 0o700), ("027", 0o640, 0o750)],
)
def test_serve_creates_a_private_data_dir(
    tmp_path: Path, umask: str | None, file_mode: int, dir_mode: int
) -> None:
    data = tmp_path / "data" / "nested"  # missing parents are created private too
    env = {"SWITCHBACK_UMASK": umask} if umask else {}
    server = start_server(tmp_path, app=PING, data=data, env=env)
    try:
        r = httpx.post(f"{server.url}/ping", json={"n": 1}, timeout=10)
        assert r.status_code == 200, r.text
        expect(data, file_mode, dir_mode, running=True)
    finally:
        server.stop()
    expect(data, file_mode, dir_mode, running=False)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == dir_mode


def test_a_bad_umask_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    data = tmp_path / "data"
    res = subprocess.run(
        [str(SWITCHBACK), "serve", str(PING), "--data", str(data)],
        env={**os.environ, "SWITCHBACK_UMASK": "rw-r--r--"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "SWITCHBACK_UMASK" in res.stderr, res.stderr
    assert not data.exists()
