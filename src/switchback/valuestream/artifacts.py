"""Build once: the app at a commit as one content-addressed artifact, promoted unchanged from
environment to environment.

**The archive** is a tar of the app folder at the commit (``git archive`` of that tree: what was
committed, never what a CI step wrote into the work dir) plus its lock file, made deterministic:
entries sorted by path, every mtime 1980-01-01 (as ``SOURCE_DATE_EPOCH`` builds do), owner 0/0
with no names, modes 0644 / 0755 (executable files) / 0755 (folders), PAX format; no ``.git``,
no ``__pycache__``, no ``*.pyc``, and the pipeline's ``build.include`` / ``build.exclude``. So the
same tree gives the same bytes, on any machine, at any time.

**The digest** is the sha256 of that tar (uncompressed; OCI calls it the *diff id*), written
``sha256:<hex>``. Hashing before compression keeps the name of an artifact independent of the
zlib version that compressed it; the stored file is ``<store>/sha256/<hex>.tar.gz`` with its
manifest beside it (``<hex>.json``: digest, project, commit, created, files, sizes, app folder,
dependencies). Both are written to a temporary file, fsynced and renamed: a crash leaves the old
state or the new one. An artifact already stored is not written again (same bytes, same name).

**Dependencies** are the app's lock file (``requirements.lock``, else ``requirements.txt``, or
``build.lock``), included in the archive and read into the manifest — pinned packages with their
hashes, and any line that pins nothing, so that an unpinned build is visible. Nothing is
downloaded: installing them is the runtime's job, from exactly these lines.

**Unpacking** decompresses into memory, checks the digest on those very bytes (a changed file is
:class:`TamperedArtifact`, before anything is written) and extracts only regular files, folders
and symlinks that stay inside the destination (:class:`UnsafeArtifact` otherwise; tarfile's
``data`` filter as a second guard).

A :class:`Freight` (Kargo's word) is what a pipeline promotes: the digest with the commit it was
built from and that commit's message, author and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from switchback.valuestream.git import CommitInfo, FileNotInCommit, Mirror
from switchback.valuestream.globs import matches_any
from switchback.valuestream.pipeline import DEFAULT_LOCK_FILES, Build

EPOCH = 315532800  # 1980-01-01T00:00:00Z
ALWAYS_EXCLUDED = (
    "**/.git",
    "**/.git/**",
    "**/__pycache__/**",
    "**/__pycache__",
    "**/*.pyc",
    "**/*.pyo",
)
DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_HASH_OPTION = re.compile(r"--hash[=\s]+(\S+)")


class ArtifactError(Exception):
    pass


class ArtifactNotFound(ArtifactError):
    pass


class TamperedArtifact(ArtifactError):
    """The stored bytes are not the ones the digest names (changed, truncated, corrupt)."""


class UnsafeArtifact(ArtifactError):
    """An entry that would land outside the destination, or is not a file, folder or symlink."""


# -- entries -------------------------------------------------------------------------------------


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


def _check_link(path: str, target: str) -> None:
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
                _check_link(path, m.linkname)
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
                _check_link(path, target)
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


# -- dependencies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dependency:
    name: str  # normalised (PEP 503)
    version: str | None  # None: not pinned to one version
    requirement: str  # the line, without its hashes
    hashes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dependencies:
    lock: str | None = None  # the lock file's path in the archive
    sha256: str | None = None
    packages: tuple[Dependency, ...] = ()

    @property
    def unpinned(self) -> list[str]:
        return [d.requirement for d in self.packages if d.version is None]


def parse_lock(text: str) -> tuple[Dependency, ...]:
    """A pip requirements / lock file: every requirement, pinned (``==``/``===``) or not.
    Options (``-r``, ``--index-url``) are left out; a line that is not a requirement is kept as
    unpinned so that it shows."""
    lines, pending = [], ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append((pending + line).strip())
        pending = ""
    lines.append(pending.strip())
    out = []
    for line in lines:
        if not line or line.startswith("-"):
            continue
        hashes = tuple(_HASH_OPTION.findall(line))
        spec = _HASH_OPTION.sub("", line).strip()
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            out.append(Dependency(spec, None, spec, hashes))
            continue
        pins = [
            s.version for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version
        ]
        version = pins[0] if len(pins) == 1 and len(req.specifier) == 1 else None
        out.append(Dependency(canonicalize_name(req.name), version, spec, hashes))
    return tuple(sorted(out, key=lambda d: d.name))


# -- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    digest: str  # sha256:<hex> of the uncompressed tar
    project: str
    commit: str | None
    created: float
    files: int
    size: int  # bytes stored (compressed)
    content_size: int  # bytes of the tar
    app: str = "."
    dependencies: Dependencies = field(default_factory=Dependencies)

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dependencies"]["unpinned"] = self.dependencies.unpinned
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        deps = dict(d.get("dependencies") or {})
        deps.pop("unpinned", None)
        packages = tuple(
            Dependency(p["name"], p["version"], p["requirement"], tuple(p.get("hashes", ())))
            for p in deps.pop("packages", ())
        )
        fields = {
            k: d[k]
            for k in (
                "digest",
                "project",
                "commit",
                "created",
                "files",
                "size",
                "content_size",
                "app",
            )
            if k in d
        }
        return cls(**fields, dependencies=Dependencies(**deps, packages=packages))


@dataclass(frozen=True)
class Freight:
    """What a pipeline promotes: one artifact and the commit it was built from."""

    digest: str
    project: str
    commit: str
    message: str
    author: str  # Name <email>
    committed_at: float
    created: float

    @classmethod
    def of(cls, manifest: Manifest, commit: CommitInfo) -> Freight:
        return cls(
            digest=manifest.digest,
            project=manifest.project,
            commit=commit.sha,
            message=commit.message,
            author=commit.author,
            committed_at=commit.committed_at,
            created=manifest.created,
        )

    @property
    def short(self) -> str:
        """``abc123def456 (sha256:0123456789ab)``: how a person tells two freights apart."""
        return f"{self.commit[:12]} ({self.digest[:19]})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the store -----------------------------------------------------------------------------------


def _hex_of(digest: str) -> str:
    m = DIGEST.match(digest)
    if not m:
        raise ArtifactNotFound(f"{digest!r} is not an artifact digest (sha256:<64 hex>)")
    return m.group(1)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ArtifactStore:
    """Artifacts in a local folder (``<data>/artifacts`` by default): ``sha256/<hex>.tar.gz``
    and ``sha256/<hex>.json``. Synchronous: callers on an event loop use ``asyncio.to_thread``
    (:func:`build_from_commit` does)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.blobs = self.root / "sha256"

    def archive_path(self, digest: str) -> Path:
        return self.blobs / f"{_hex_of(digest)}.tar.gz"

    def manifest_path(self, digest: str) -> Path:
        return self.blobs / f"{_hex_of(digest)}.json"

    def has(self, digest: str) -> bool:
        return self.archive_path(digest).is_file() and self.manifest_path(digest).is_file()

    def manifest(self, digest: str) -> Manifest:
        try:
            data = json.loads(self.manifest_path(digest).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact {digest} in {self.root}") from None
        except ValueError as exc:
            raise TamperedArtifact(f"the manifest of {digest} is not JSON ({exc})") from None
        manifest = Manifest.from_dict(data)
        if manifest.digest != digest:
            raise TamperedArtifact(
                f"the manifest of {digest} names another digest: {manifest.digest}"
            )
        return manifest

    def list(self) -> list[Manifest]:
        """Every stored artifact, newest first."""
        if not self.blobs.is_dir():
            return []
        found = [
            self.manifest(f"sha256:{p.stem}")
            for p in self.blobs.glob("*.json")
            if DIGEST.match(f"sha256:{p.stem}")
        ]
        return sorted(found, key=lambda m: m.created, reverse=True)

    def put(
        self,
        content: bytes,
        *,
        project: str,
        commit: str | None,
        files: int,
        app: str = ".",
        dependencies: Dependencies | None = None,
        now: float | None = None,
    ) -> Manifest:
        """Store a tar (from :func:`pack`) under its digest; the stored manifest if it is
        already there."""
        digest = "sha256:" + hashlib.sha256(content).hexdigest()
        if self.has(digest):
            return self.manifest(digest)
        self.blobs.mkdir(parents=True, exist_ok=True)
        compressed = gzip.compress(content, compresslevel=6, mtime=0)
        _write_atomically(self.archive_path(digest), compressed)
        manifest = Manifest(
            digest=digest,
            project=project,
            commit=commit,
            created=time.time() if now is None else now,
            files=files,
            size=len(compressed),
            content_size=len(content),
            app=app,
            dependencies=dependencies or Dependencies(),
        )
        text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n"
        _write_atomically(self.manifest_path(digest), text.encode())
        return manifest

    def content(self, digest: str) -> bytes:
        """The artifact's tar, checked against its digest (:class:`TamperedArtifact`)."""
        path = self.archive_path(digest)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact {digest} in {self.root}") from None
        try:
            content = gzip.decompress(raw)
        except (OSError, EOFError, ValueError) as exc:
            raise TamperedArtifact(
                f"artifact {digest} cannot be read ({exc}): it was changed or truncated after it was stored; build it again"
            ) from None
        actual = "sha256:" + hashlib.sha256(content).hexdigest()
        if actual != digest:
            raise TamperedArtifact(
                f"artifact {digest} was changed after it was stored (its content is {actual}); "
                "refusing to use it: build it again"
            )
        return content

    def verify(self, digest: str) -> None:
        self.content(digest)

    def unpack(self, digest: str, dest: Path | str) -> Path:
        """Extract the artifact into ``dest`` (missing or empty) after checking its digest."""
        content = self.content(digest)
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise ArtifactError(f"cannot unpack into {dest}: it exists and is not empty")
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m)
            dest.mkdir(parents=True, exist_ok=True)
            try:
                tar.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeArtifact(f"artifact {digest}: {exc}") from None
        return dest

    def delete(self, digest: str) -> bool:
        found = False
        for p in (self.manifest_path(digest), self.archive_path(digest)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                found = True
        return found


def _check_member(m: tarfile.TarInfo) -> None:
    p = PurePosixPath(m.name)
    if p.is_absolute() or ".." in p.parts or not m.name:
        raise UnsafeArtifact(f"entry {m.name!r} would be written outside the destination: refused")
    if m.issym():
        _check_link(m.name, m.linkname)
    elif not (m.isfile() or m.isdir()):
        raise UnsafeArtifact(f"entry {m.name!r} is not a file, folder or symlink: refused")


# -- building ------------------------------------------------------------------------------------


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
