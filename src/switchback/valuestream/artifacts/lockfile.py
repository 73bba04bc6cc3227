"""The app's lock file (``requirements.lock`` / ``requirements.txt``) read into the manifest:
every requirement, pinned or not, with its hashes. Parsed with ``packaging`` (PyPA's own reader of
requirement strings); pip's options are set aside first. Nothing is downloaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

_HASH_OPTION = re.compile(r"--hash[=\s]+(\S+)")


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
