"""What is recorded of an artifact: its :class:`Manifest` (beside it in the store) and the
:class:`Freight` a pipeline promotes (the artifact with the commit it was built from)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from switchback.valuestream.artifacts.lockfile import Dependencies, Dependency
from switchback.valuestream.git import CommitInfo


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
