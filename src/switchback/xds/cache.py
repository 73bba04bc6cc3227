"""What to serve: versioned snapshots per node, node registry and ACK/NACK status.

The cache knows nothing about gRPC. The ADS server (`server.py`) reads snapshots from it,
reports what each node has ACKed or NACKed, and is woken when a node's snapshot changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

# The order in which an ADS server pushes types: clusters and their endpoints before the
# listeners and routes that use them (make-before-break).
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
# "Wildcard" types: each response carries the full set; a missing name means "delete".
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
SHORT_NAMES = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}
LOG_SIZE = 64  # stream events kept per node


@dataclass(frozen=True, slots=True)
class Resource:
    """One named xDS resource, packed once, with a digest to compare content cheaply."""

    name: str
    any: any_pb2.Any
    digest: bytes
    refs: frozenset[str] = frozenset()  # cluster names this resource routes to

    @classmethod
    def pack(cls, name: str, msg: Message, refs: Iterable[str] = ()) -> Resource:
        packed = any_pb2.Any()
        packed.Pack(msg)
        # Deterministic serialisation, so equal content gives equal digests across builds.
        raw = msg.SerializeToString(deterministic=True)
        return cls(name, packed, hashlib.blake2b(raw, digest_size=16).digest(), frozenset(refs))


Resources = Mapping[str, Resource]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The complete desired config of one node at one version."""

    version: int
    resources: Mapping[str, Resources]

    def of(self, type_url: str) -> Resources:
        return self.resources.get(type_url, {})

    def same_content(self, other: Snapshot | None) -> bool:
        if other is None:
            return False
        for t in PUSH_ORDER:
            a, b = self.of(t), other.of(t)
            if a.keys() != b.keys() or any(a[n].digest != b[n].digest for n in a):
                return False
        return True

    def with_version(self, version: int) -> Snapshot:
        return Snapshot(version, self.resources)


@dataclass(slots=True)
class Nack:
    type: str
    version: int  # snapshot version of the rejected response
    error: str
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": SHORT_NAMES.get(self.type, self.type),
            "version": self.version,
            "error": self.error,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One step of a node's ADS stream, as the server saw it (`NodeStatus.log`)."""

    kind: str  # send | ack | nack
    type: str
    version: int
    names: tuple[str, ...] = ()  # resources a response carried
    removed: tuple[str, ...] = ()  # names a delta response removed
    error: str = ""
    at: float = 0.0  # time.monotonic()


@dataclass(slots=True)
class TypeStatus:
    sent_version: int | None = None
    acked_version: int | None = None
    pending: bool = False  # a response awaits ACK/NACK


@dataclass(slots=True)
class NodeStatus:
    """What the control plane knows about one node (kept after it disconnects)."""

    id: str
    cluster: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    streams: int = 0
    peer: str = ""
    connected_at: float | None = None
    disconnected_at: float | None = None
    # Highest snapshot version whose complete content the node has ACKed (all types).
    acked_version: int | None = None
    acked_at: float | None = None
    types: dict[str, TypeStatus] = field(default_factory=dict)
    last_nack: Nack | None = None
    nacks: int = 0
    error: str | None = None  # e.g. unusable bootstrap metadata
    api: str = ""  # protocol of the last stream: sotw | delta
    # The last responses sent and ACKs/NACKs received, oldest first (kept across streams).
    log: deque[StreamEvent] = field(default_factory=lambda: deque(maxlen=LOG_SIZE))

    @property
    def connected(self) -> bool:
        return self.streams > 0

    def labels(self) -> dict[str, Any]:
        """What selectors match on: metadata plus `id` and `cluster`."""
        return {**self.metadata, "id": self.id, "cluster": self.cluster}

    def record(
        self,
        kind: str,
        type_url: str,
        version: int,
        names: Iterable[str] = (),
        removed: Iterable[str] = (),
        error: str = "",
    ) -> None:
        self.log.append(
            StreamEvent(
                kind, type_url, version, tuple(names), tuple(removed), error, time.monotonic()
            )
        )

    def type_status(self, type_url: str) -> TypeStatus:
        ts = self.types.get(type_url)
        if ts is None:
            ts = self.types[type_url] = TypeStatus()
        return ts


Selector = Mapping[str, Any]


def _intify(v: Any) -> Any:
    """protobuf Struct carries every number as a double; ports read better as ints."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _intify(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_intify(x) for x in v]
    return v


def matches(selector: Selector | None, labels: Mapping[str, Any]) -> bool:
    """Every key must equal the label (a list/tuple/set value means any of)."""
    if not selector:
        return True
    for key, want in selector.items():
        have = labels.get(key)
        if isinstance(want, list | tuple | set | frozenset):
            if str(have) not in {str(w) for w in want}:
                return False
        elif have is None or str(have) != str(want):
            return False
    return True


class SnapshotCache:
    """Snapshots per node id, node status, and change notification."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._status: dict[str, NodeStatus] = {}
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        self._changed = asyncio.Event()
        self._listeners: set[Callable[[str | None], None]] = set()
        # Called when a node shows up without a snapshot, or with new metadata, so the owner
        # can build (or rebuild) its snapshot.
        self.on_new_node: Callable[[NodeStatus], None] | None = None

    # --- snapshots -------------------------------------------------------------------
    def snapshot(self, node_id: str) -> Snapshot | None:
        return self._snapshots.get(node_id)

    def set_snapshot(self, node_id: str, snap: Snapshot) -> None:
        old = self._snapshots.get(node_id)
        if old is not None and snap.version < old.version:
            raise ValueError(
                f"version would go backwards for {node_id}: {old.version} -> {snap.version}"
            )
        self._snapshots[node_id] = snap
        for wake in tuple(self._watchers.get(node_id, ())):
            wake()
        self.notify(node_id)

    def wake(self, node_id: str) -> None:
        """Wake the node's streams without a new snapshot (e.g. its credentials changed)."""
        for wake in tuple(self._watchers.get(node_id, ())):
            wake()

    def clear_snapshot(self, node_id: str) -> None:
        self._snapshots.pop(node_id, None)

    def watch(self, node_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` whenever the node's snapshot changes; returns the cancel function."""
        self._watchers.setdefault(node_id, set()).add(wake)

        def cancel() -> None:
            ws = self._watchers.get(node_id)
            if ws is not None:
                ws.discard(wake)
                if not ws:
                    del self._watchers[node_id]

        return cancel

    # --- nodes -----------------------------------------------------------------------
    def node_connected(
        self, node_id: str, cluster: str, metadata: dict[str, Any], peer: str, api: str = "sotw"
    ) -> NodeStatus:
        st = self._status.get(node_id)
        if st is None:
            st = self._status[node_id] = NodeStatus(node_id)
        metadata = _intify(metadata)
        # Same id, new identity (e.g. a restarted instance on another port): rebuild.
        changed = (st.cluster, st.metadata) != (cluster, metadata)
        st.cluster, st.metadata, st.peer, st.api = cluster, metadata, peer, api
        st.streams += 1
        st.connected_at = time.time()
        # A fresh stream starts with nothing sent: per-type state restarts, and the node only
        # counts as ACKed again once it has ACKed the full snapshot on this stream (it may be
        # a brand-new Envoy process that reuses the id).
        st.types.clear()
        st.acked_version = None
        if (changed or node_id not in self._snapshots) and self.on_new_node is not None:
            self.on_new_node(st)
        self.notify(node_id)
        return st

    def node_disconnected(self, node_id: str) -> None:
        st = self._status.get(node_id)
        if st is not None:
            st.streams = max(0, st.streams - 1)
            if st.streams == 0:
                st.disconnected_at = time.time()
                for ts in st.types.values():
                    ts.pending = False
        self.notify(node_id)

    def forget(self, node_id: str) -> None:
        self._status.pop(node_id, None)
        self._snapshots.pop(node_id, None)
        self.notify(node_id)

    def status(self, node_id: str) -> NodeStatus | None:
        return self._status.get(node_id)

    def statuses(self, selector: Selector | None = None) -> list[NodeStatus]:
        return [s for s in self._status.values() if matches(selector, s.labels())]

    # --- change notification -----------------------------------------------------------
    def notify(self, node_id: str | None = None) -> None:
        """A node's status or snapshot moved (None: anything may have): wake the waiters."""
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in tuple(self._listeners):
            listener(node_id)

    def subscribe(self, listener: Callable[[str | None], None]) -> Callable[[], None]:
        """Call `listener(node_id)` on every change; returns the unsubscribe function.

        Lets a waiter re-check only the nodes that moved (O(changes), not O(nodes))."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    async def wait_change(self, timeout: float) -> None:
        ev = self._changed
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass
