"""Monotonic versions and the desired traffic state, surviving a control-plane restart.

Choice: a small JSON state file (path configurable) holds the last version handed out, the
intent (endpoints per service, redirect rules) and the registered nodes (the spec the control
plane serves each node, and the fingerprint of the one certificate it accepts from it). It is
rewritten atomically (tmp + rename, mode 0600) on every change, before the new snapshots are
pushed, so a restarted control plane never reuses a version, rebuilds exactly the config the
sidecars already hold (a restart must not silently undo a redirect), and knows every node that
reconnects. Without a state file the counter is seeded from wall-clock milliseconds, which
is monotonic across restarts as long as the clock does not step back; and in both cases the
counter is raised above any version an Envoy reports when it reconnects.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from switchback import datadir
from switchback.xds.resources import Intent, NodeSpec


@dataclass(frozen=True)
class Registration:
    """A node as the control plane declared it: what it serves it, whatever the node reports."""

    spec: NodeSpec
    fingerprint: str = ""  # SHA-256 of the only client certificate accepted ('' = none pinned)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": asdict(self.spec), "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Registration:
        spec = dict(d["spec"])
        spec["routes"] = {int(k): str(v) for k, v in dict(spec.get("routes") or {}).items()}
        return cls(NodeSpec(**spec), str(d.get("fingerprint") or ""))


class StateStore:
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.version = 0
        self.intent = Intent()
        self.registrations: dict[str, Registration] = {}
        data = self._load()
        if data is not None:
            self.version = int(data.get("version", 0))
            self.intent = Intent(
                endpoints={
                    s: [(str(h), int(p)) for h, p in eps]
                    for s, eps in dict(data.get("endpoints", {})).items()
                },
                redirects=[(dict(sel), tgt) for sel, tgt in data.get("redirects", [])],
            )
            self.registrations = {
                n: Registration.from_dict(r) for n, r in dict(data.get("nodes", {})).items()
            }
        else:
            self.version = int(time.time() * 1000)

    def _load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.exists():
            return None
        return json.loads(self.path.read_text())

    def next_version(self) -> int:
        self.version += 1
        return self.version

    def ensure_above(self, seen: int) -> None:
        """An Envoy reported `seen`: never hand out a version at or below it."""
        if seen >= self.version:
            self.version = seen + 1
            self.save()

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "version": self.version,
            "endpoints": {s: [list(e) for e in eps] for s, eps in self.intent.endpoints.items()},
            "redirects": [[sel, tgt] for sel, tgt in self.intent.redirects],
            "nodes": {n: r.to_dict() for n, r in self.registrations.items()},
        }
        datadir.make_dir(self.path.parent)
        datadir.write_file(self.path, json.dumps(data, indent=1, sort_keys=True))
