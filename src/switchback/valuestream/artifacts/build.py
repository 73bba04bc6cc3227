"""Building an artifact: the app folder at a commit (from git, or a checkout of it) with its lock
file, packed and stored once."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path, PurePosixPath

from switchback.valuestream.artifacts.archive import (
    Entry,
    entries_from_directory,
    entries_from_tar,
    pack,
)
from switchback.valuestream.artifacts.errors import ArtifactError
from switchback.valuestream.artifacts.lockfile import Dependencies, parse_lock
from switchback.valuestream.artifacts.records import Manifest
from switchback.valuestream.artifacts.store import ArtifactStore
from switchback.valuestream.git import FileNotInCommit, Mirror
from switchback.valuestream.pipeline import DEFAULT_LOCK_FILES, Build


def _lock_candidates(app: str, build: Build) -> list[str]:
    if build.lock is False:
        return []
    if isinstance(build.lock, str):
        return [build.lock]
    return [str(PurePosixPath(app) / name) for name in DEFAULT_LOCK_FILES]


def _assemble(
    entries: list[Entry], app: str, lock_path: str | None, lock_data: bytes | None
) -> tuple[list[Entry], Dependencies]:
    if lock_path is None or lock_data is None:
        return entries, Dependencies()
    app_dir = PurePosixPath(app)
    lock = PurePosixPath(lock_path)
    if app == "." or app_dir in lock.parents:
        in_archive = str(lock.relative_to(app_dir)) if app != "." else str(lock)
        if not any(e.path == in_archive for e in entries):  # build.exclude left it out: not so
            entries = [*entries, Entry(in_archive, "file", lock_data)]
    else:  # a lock file outside the app folder travels at the archive's root
        in_archive = lock.name
        if any(e.path == in_archive for e in entries):
            raise ArtifactError(
                f"build.lock {lock_path}: the app folder has a file {in_archive} already"
            )
        entries = [*entries, Entry(in_archive, "file", lock_data)]
    deps = Dependencies(
        lock=in_archive,
        sha256="sha256:" + hashlib.sha256(lock_data).hexdigest(),
        packages=parse_lock(lock_data.decode("utf-8", "replace")),
    )
    return entries, deps


def build_from_directory(
    store: ArtifactStore,
    checkout: Path,
    app: str,
    build: Build,
    *,
    project: str,
    commit: str | None,
) -> Manifest:
    """The artifact of ``checkout/app`` (the same bytes as :func:`build_from_commit` of the
    commit checked out there, if nothing was written into it)."""
    root = checkout / app
    if not root.is_dir():
        raise ArtifactError(f"no app folder {app!r} in {checkout}")
    entries = entries_from_directory(root, build)
    lock_path = lock_data = None
    for candidate in _lock_candidates(app, build):
        if (checkout / candidate).is_file():
            lock_path, lock_data = candidate, (checkout / candidate).read_bytes()
            break
    else:
        if isinstance(build.lock, str):
            raise ArtifactError(f"build.lock: no file {build.lock!r}")
    entries, deps = _assemble(entries, app, lock_path, lock_data)
    return _store(store, entries, project=project, commit=commit, app=app, deps=deps)


async def build_from_commit(
    store: ArtifactStore, mirror: Mirror, commit: str, app: str, build: Build, *, project: str
) -> Manifest:
    """The artifact of the app folder at ``commit``, read from git (no checkout needed)."""
    sha = await mirror.resolve(commit)
    try:
        tar = await mirror.archive(sha, app)
    except FileNotInCommit:
        raise ArtifactError(f"no app folder {app!r} at commit {sha[:12]}") from None
    entries = await asyncio.to_thread(entries_from_tar, tar, build)
    lock_path = lock_data = None
    for candidate in _lock_candidates(app, build):
        try:
            lock_data = await mirror.read_file(sha, candidate)
        except FileNotInCommit:
            continue
        lock_path = candidate
        break
    else:
        if isinstance(build.lock, str):
            raise ArtifactError(f"build.lock: no file {build.lock!r} at commit {sha[:12]}")
    entries, deps = _assemble(entries, app, lock_path, lock_data)
    return await asyncio.to_thread(
        _store, store, entries, project=project, commit=sha, app=app, deps=deps
    )


def _store(
    store: ArtifactStore,
    entries: list[Entry],
    *,
    project: str,
    commit: str | None,
    app: str,
    deps: Dependencies,
) -> Manifest:
    if not entries:
        raise ArtifactError(
            f"the app folder {app!r} holds no file the build selects: nothing to ship"
        )
    content = pack(entries)
    files = sum(1 for e in entries if e.kind != "dir")
    return store.put(
        content, project=project, commit=commit, files=files, app=app, dependencies=deps
    )
