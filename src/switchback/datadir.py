"""Data at rest: what switchback writes is readable by its own user only.

The data directory holds the store (requests, outputs, tracebacks, the audit trail), logs, Envoy
bootstraps, the xDS state and the control plane's CA key. Directories are created 0700 and files
0600, including files other processes create inside it (the Envoys and app instances the
controller spawns, SQLite's -wal/-shm files): the CLI sets the process umask once at start
(children inherit it, and `spawn` passes it on explicitly), and the files we write ourselves are
opened with explicit modes, so library use is covered too.

`SWITCHBACK_UMASK` (octal, default `077`) asks for something else, e.g. `027` to let a
monitoring group read (files 0640, directories 0750). Secrets (private keys, tokens) stay 0600
whatever it says.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

ENV = "SWITCHBACK_UMASK"
DEFAULT_UMASK = 0o077

log = logging.getLogger(__name__)
_warned: set[str] = set()


def umask() -> int:
    """The umask switchback creates files with (from SWITCHBACK_UMASK, default 077)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_UMASK
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise ValueError(f"{ENV}={text!r} is not an octal umask such as 077 or 027")
    return value


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def apply_umask() -> int:
    """Set the process umask (files created from now on, by us and by our children)."""
    mask = umask()
    os.umask(mask)
    return mask


def make_dir(path: str | os.PathLike[str]) -> Path:
    """Create a directory (and its missing parents) with the private mode; warn once if an
    existing one is open to other users (it may predate this rule: we do not chmod a directory
    we did not create)."""
    p = Path(path)
    missing = []
    cur = p
    while not cur.exists() and cur != cur.parent:
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=dir_mode())
        except FileExistsError:
            continue  # created meanwhile by another process
        os.chmod(d, dir_mode())  # mkdir's mode is narrowed by the process umask, never widened
    if not missing:
        warn_if_open(p)
    return p


def warn_if_open(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    extra = mode & ~dir_mode() & 0o077
    if extra and str(path) not in _warned:
        _warned.add(str(path))
        log.warning(
            "%s is open to other users (mode %03o): it holds private data; "
            "chmod %03o %s (or set %s)",
            path,
            mode,
            dir_mode(),
            path,
            ENV,
        )


def open_file(path: str | os.PathLike[str], flags: int = os.O_WRONLY | os.O_CREAT) -> int:
    """os.open with the private mode (applies only when the file is created)."""
    return os.open(path, flags, file_mode())


def write_file(path: str | os.PathLike[str], data: str | bytes, *, secret: bool = False) -> None:
    """Write a whole file atomically (tmp + rename), created with the private mode; a `secret`
    (a key, a token) is 0600 whatever SWITCHBACK_UMASK says."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    raw = data.encode() if isinstance(data, str) else data
    mode = 0o600 if secret else file_mode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # a leftover tmp file would keep its old mode
            fh.write(raw)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, p)
