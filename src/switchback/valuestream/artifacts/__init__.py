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

Modules: ``archive`` (what goes in, the deterministic tar, the rule for entries on the way out),
``lockfile``, ``records`` (manifest, freight), ``store``, ``build``, ``errors``.
"""

from switchback.valuestream.artifacts.archive import (
    ALWAYS_EXCLUDED,
    EPOCH,
    Entry,
    entries_from_directory,
    entries_from_tar,
    pack,
)
from switchback.valuestream.artifacts.build import build_from_commit, build_from_directory
from switchback.valuestream.artifacts.errors import (
    ArtifactError,
    ArtifactNotFound,
    TamperedArtifact,
    UnsafeArtifact,
)
from switchback.valuestream.artifacts.lockfile import Dependencies, Dependency, parse_lock
from switchback.valuestream.artifacts.records import Freight, Manifest
from switchback.valuestream.artifacts.store import DIGEST, ArtifactStore

__all__ = [
    "ALWAYS_EXCLUDED",
    "DIGEST",
    "EPOCH",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactStore",
    "Dependencies",
    "Dependency",
    "Entry",
    "Freight",
    "Manifest",
    "TamperedArtifact",
    "UnsafeArtifact",
    "build_from_commit",
    "build_from_directory",
    "entries_from_directory",
    "entries_from_tar",
    "pack",
    "parse_lock",
]
