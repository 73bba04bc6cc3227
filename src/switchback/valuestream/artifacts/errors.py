"""The errors of artifacts; each message says what to do."""

from __future__ import annotations


class ArtifactError(Exception):
    pass


class ArtifactNotFound(ArtifactError):
    pass


class TamperedArtifact(ArtifactError):
    """The stored bytes are not the ones the digest names (changed, truncated, corrupt)."""


class UnsafeArtifact(ArtifactError):
    """An entry that would land outside the destination, or is not a file, folder or symlink."""
