"""The deterministic archive: which files of the app go in (from ``git archive`` or from a folder),
and the tar that the same tree always turns into (sorted entries, fixed times, owners and modes).
Also the rule an archive's entries must keep on the way out: nothing outside the destination.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from switchback.valuestream.artifacts.errors import UnsafeArtifact
from switchback.valuestream.globs import matches_any
from switchback.valuestream.pipeline import Build

EPOCH = 315532800  # 1980-01-01T00:00:00Z: every entry's mtime
ALWAYS_EXCLUDED = (
    "**/.git",
    "**/.git/**",
    "**/__pycache__/**",
    "**/__pycache__",
    "**/*.pyc",
    "**/*.pyo",
)


@dataclass(frozen=True)
class Entry:
    path: str  # relative, '/'-separated
    kind: str  # file | dir | symlink
    data: bytes = b""
    executable: bool = False
    target: str = ""  # a symlink's


def _selected(path: str, build: Build) -> bool:
    if matches_any(ALWAYS_EXCLUDED, path):
        return False
    return matches_any(build.include, path) and not matches_any(build.exclude, path)


def check_link(path: str, target: str) -> None:
    resolved = PurePosixPath(path).parent / target
    if target.startswith("/") or ".." in PurePosixPath(os.path.normpath(resolved)).parts:
        raise UnsafeArtifact(f"symlink {path} → {target} points outside the app folder")


def _with_dirs(files: list[Entry]) -> list[Entry]:
    """The entries with every parent folder, sorted by path (folders before what they hold)."""
    dirs = {str(p) for e in files for p in PurePosixPath(e.path).parents if str(p) != "."}
    out = files + [Entry(d, "dir") for d in dirs]
    return sorted(out, key=lambda e: e.path)


def entries_from_tar(data: bytes, build: Build) -> list[Entry]:
    """The selected entries of a tar (``git archive``'s output)."""
    out: list[Entry] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar:
            path = m.name.removeprefix("./").rstrip("/")
            if not path or m.isdir() or not _selected(path, build):
                continue
            if m.issym():
                check_link(path, m.linkname)
                out.append(Entry(path, "symlink", target=m.linkname))
            elif m.isfile():
                f = tar.extractfile(m)
                out.append(Entry(path, "file", f.read() if f else b"", bool(m.mode & 0o111)))
            # git archive holds nothing else (submodules appear as empty folders)
    return out


def entries_from_directory(root: Path, build: Build) -> list[Entry]:
    """The selected entries of a folder on disk (a checkout)."""
    out: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__")]
        for name in [*filenames, *(d for d in dirnames if (Path(dirpath) / d).is_symlink())]:
            full = Path(dirpath) / name
            path = (rel_dir / name).as_posix()
            if not _selected(path, build):
                continue
            if full.is_symlink():
                target = os.readlink(full)
                check_link(path, target)
                out.append(Entry(path, "symlink", target=target))
            elif full.is_file():
                out.append(
                    Entry(path, "file", full.read_bytes(), bool(full.stat().st_mode & 0o111))
                )
    return out


def pack(entries: Iterable[Entry]) -> bytes:
    """The deterministic tar of ``entries`` (see the module's doc)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in _with_dirs([e for e in entries if e.kind != "dir"]):
            info = tarfile.TarInfo(e.path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
            if e.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, e.target
                tar.addfile(info)
            else:
                info.size, info.mode = len(e.data), 0o755 if e.executable else 0o644
                tar.addfile(info, io.BytesIO(e.data))
    return buffer.getvalue()


def check_member(m: tarfile.TarInfo) -> None:
    p = PurePosixPath(m.name)
    if p.is_absolute() or ".." in p.parts or not m.name:
        raise UnsafeArtifact(f"entry {m.name!r} would be written outside the destination: refused")
    if m.issym():
        check_link(m.name, m.linkname)
    elif not (m.isfile() or m.isdir()):
        raise UnsafeArtifact(f"entry {m.name!r} is not a file, folder or symlink: refused")
