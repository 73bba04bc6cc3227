"""Child processes in their own process groups, recorded by pid so that a restarted controller
can adopt them (or cleanly replace them)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

from switchback import datadir

_GIVEN: set[int] = set()  # ports handed out by this process (not bound yet, maybe)


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, for a process started later. Taken below the kernel's ephemeral range:
    a port from bind(0) can meanwhile become the source port of some outgoing connection (or
    another bind(0)) and the listener then fails with "address in use"; ports below the range
    are never handed out that way."""
    low = _ephemeral_low()
    if low > 11000:
        for _ in range(100):
            port = random.randrange(10000, low)
            if port in _GIVEN:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _GIVEN.add(port)
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    datadir.make_dir(log.parent)
    fd = datadir.open_file(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stopped as a group, survives our exit
            env=env,
            umask=datadir.umask(),  # what the child creates in the data dir is private too
        )
    return proc.pid


def tail(path: Path, lines: int = 20, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file ("" if it is missing or empty)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL."""
    if not pid:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if not alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for _ in range(250):
        reap(pid)
        if not alive(pid):
            return
        time.sleep(0.02)
