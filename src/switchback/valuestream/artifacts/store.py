"""The artifact store: a local folder of ``sha256/<hex>.tar.gz`` and ``sha256/<hex>.json``,
written atomically, read back only after the digest is checked."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

from switchback.valuestream.artifacts.archive import check_member
from switchback.valuestream.artifacts.errors import (
    ArtifactError,
    ArtifactNotFound,
    TamperedArtifact,
    UnsafeArtifact,
)
from switchback.valuestream.artifacts.lockfile import Dependencies
from switchback.valuestream.artifacts.records import Manifest

DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


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
                check_member(m)
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
