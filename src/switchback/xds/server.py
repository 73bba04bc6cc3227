"""How to serve: the ADS gRPC stream (state of the world) over grpc.aio.

Per stream and resource type we keep what was sent, what was ACKed, and the one response in
flight. After every event (a request from Envoy, or a snapshot change) `_reconcile` decides
what to send, in make-before-break order:

- clusters first; a cluster still used by a route or listener the node holds (ACKed or in
  flight) stays in the cluster set until a route update that drops it is ACKed;
- endpoints for the clusters Envoy subscribed to;
- listeners only once the clusters they use are ACKed;
- routes only once the clusters they use are ACKed and warmed (their endpoints ACKed).

One response per type is in flight at a time; an ACK (matching nonce, no error_detail) or a
NACK (error_detail set) ends it. After a NACK the same content is not sent again: the node
stays on its last good config until the snapshot changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from switchback.xds.cache import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SHORT_NAMES,
    WILDCARD_TYPES,
    Nack,
    NodeStatus,
    Resource,
    Snapshot,
    SnapshotCache,
)

log = logging.getLogger(__name__)

_WAKE = object()
_nonces = itertools.count(1)


@dataclass
class _TypeState:
    requested: bool = False
    subscribed: set[str] = field(default_factory=set)
    sent: dict[str, Resource] = field(default_factory=dict)
    acked: dict[str, Resource] = field(default_factory=dict)
    last_nonce: str = ""
    inflight: dict[str, Resource] | None = None
    inflight_version: int = 0


def _same(a: Mapping[str, Resource], b: Mapping[str, Resource]) -> bool:
    return a.keys() == b.keys() and all(a[n].digest == b[n].digest for n in a)


def _refs(resources: Iterable[Resource]) -> set[str]:
    out: set[str] = set()
    for r in resources:
        out |= r.refs
    return out


class _Stream:
    """One ADS stream of one node."""

    def __init__(self, cache: SnapshotCache, status: NodeStatus, on_version_seen: Any) -> None:
        self.cache = cache
        self.status = status
        self.node_id = status.id
        self.types = {t: _TypeState() for t in PUSH_ORDER}
        self.on_version_seen = on_version_seen

    # --- requests ------------------------------------------------------------------------
    def handle(self, req: discovery_pb2.DiscoveryRequest) -> None:
        ts = self.types.get(req.type_url)
        if ts is None:
            log.debug("%s: ignoring request for unsupported type %s", self.node_id, req.type_url)
            return
        if req.response_nonce:
            if req.response_nonce != ts.last_nonce:
                return  # stale: answers a response that a newer one superseded
            if ts.inflight is not None:
                if req.HasField("error_detail"):
                    self._nack(req, ts)
                else:
                    self._ack(req.type_url, ts)
                ts.inflight = None
                self.status.type_status(req.type_url).pending = False
        else:
            ts.requested = True
            if req.version_info:
                # Reconnect after a control-plane restart: keep versions moving forward.
                with contextlib.suppress(ValueError):
                    self.on_version_seen(self.node_id, int(req.version_info))
        if req.type_url not in WILDCARD_TYPES:
            names = set(req.resource_names)
            if names != ts.subscribed:
                ts.subscribed = names
                for d in (ts.sent, ts.acked):
                    for gone in [n for n in d if n not in names]:
                        del d[gone]
            ts.requested = True

    def _ack(self, type_url: str, ts: _TypeState) -> None:
        assert ts.inflight is not None
        if type_url in WILDCARD_TYPES:
            ts.acked = dict(ts.inflight)
        else:
            ts.acked.update(ts.inflight)
        self.status.type_status(type_url).acked_version = ts.inflight_version

    def _nack(self, req: discovery_pb2.DiscoveryRequest, ts: _TypeState) -> None:
        err = req.error_detail.message or str(req.error_detail)
        st = self.status
        st.last_nack = Nack(req.type_url, ts.inflight_version, err, time.time())
        st.nacks += 1
        log.warning(
            "%s NACKed %s version %s: %s",
            self.node_id,
            SHORT_NAMES[req.type_url],
            ts.inflight_version,
            err,
        )

    # --- responses -----------------------------------------------------------------------
    def reconcile(self) -> list[discovery_pb2.DiscoveryResponse]:
        snap = self.cache.snapshot(self.node_id)
        out: list[discovery_pb2.DiscoveryResponse] = []
        if snap is None:
            return out
        cds, eds, lds, rds = (self.types[t] for t in PUSH_ORDER)

        # Clusters: desired plus any cluster a held route/listener still uses.
        held = _refs(
            itertools.chain(
                lds.acked.values(), lds.sent.values(), rds.acked.values(), rds.sent.values()
            )
        )
        want_c = dict(snap.of(CLUSTER))
        for name in held - want_c.keys():
            keep = cds.acked.get(name) or cds.sent.get(name)
            if keep is not None:
                want_c[name] = keep
        if cds.requested and cds.inflight is None and not _same(want_c, cds.sent):
            out.append(self._send(CLUSTER, cds, want_c, snap.version))

        def ready(cluster_names: set[str]) -> bool:
            if cds.inflight is not None:
                return False
            own = snap.of(CLUSTER)
            for n in cluster_names:
                if n not in own:
                    continue  # not ours to warm: Envoy will judge the reference
                if n not in cds.acked:
                    return False
                if n in snap.of(ENDPOINT) and n not in eds.acked:
                    return False
            return True

        # Endpoints for what Envoy subscribed to.
        want_e = {n: r for n, r in snap.of(ENDPOINT).items() if n in eds.subscribed}
        if eds.requested and eds.inflight is None and self._changed(want_e, eds.sent):
            out.append(self._send(ENDPOINT, eds, want_e, snap.version))

        want_l = dict(snap.of(LISTENER))
        if (
            lds.requested
            and lds.inflight is None
            and not _same(want_l, lds.sent)
            and ready(_refs(want_l.values()))
        ):
            out.append(self._send(LISTENER, lds, want_l, snap.version))

        want_r = {n: r for n, r in snap.of(ROUTE).items() if n in rds.subscribed}
        if (
            rds.requested
            and rds.inflight is None
            and self._changed(want_r, rds.sent)
            and ready(_refs(want_r.values()))
        ):
            out.append(self._send(ROUTE, rds, want_r, snap.version))
        self._update_synced(snap)
        return out

    @staticmethod
    def _changed(want: Mapping[str, Resource], sent: Mapping[str, Resource]) -> bool:
        return any(sent.get(n) is None or sent[n].digest != r.digest for n, r in want.items())

    def _send(
        self, type_url: str, ts: _TypeState, resources: dict[str, Resource], version: int
    ) -> discovery_pb2.DiscoveryResponse:
        nonce = str(next(_nonces))
        ts.last_nonce = nonce
        ts.inflight = resources
        ts.inflight_version = version
        if type_url in WILDCARD_TYPES:
            ts.sent = dict(resources)
        else:
            ts.sent.update(resources)
        tst = self.status.type_status(type_url)
        tst.sent_version, tst.pending = version, True
        return discovery_pb2.DiscoveryResponse(
            version_info=str(version),
            resources=[r.any for r in resources.values()],
            type_url=type_url,
            nonce=nonce,
        )

    def _update_synced(self, snap: Snapshot) -> None:
        """The node has `snap` iff every type's ACKed content equals the snapshot's."""
        for t in PUSH_ORDER:
            want, acked = snap.of(t), self.types[t].acked
            if t in WILDCARD_TYPES:
                if not _same(want, acked):
                    return
            elif any(n not in acked or acked[n].digest != r.digest for n, r in want.items()):
                return
        st = self.status
        if st.acked_version is None or st.acked_version < snap.version:
            st.acked_version = snap.version
            st.acked_at = time.time()


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The ADS endpoint. Delta xDS is not implemented (Envoy is configured for SotW)."""

    def __init__(self, cache: SnapshotCache, on_version_seen: Any = None) -> None:
        self.cache = cache
        self.on_version_seen = on_version_seen or (lambda node_id, v: None)

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            try:
                async for req in request_iterator:
                    queue.put_nowait(req)
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            except Exception:  # a broken stream must not take the server down
                log.exception("ADS stream reader failed")
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(read())
        stream: _Stream | None = None
        cancel_watch = None
        woken = False

        def wake() -> None:
            nonlocal woken
            if not woken:  # coalesce bursts of snapshot changes into one reconcile
                woken = True
                queue.put_nowait(_WAKE)

        try:
            while True:
                item = await queue.get()
                batch = [item]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                done = False
                for it in batch:
                    if it is None:
                        done = True
                        break
                    if it is _WAKE:
                        woken = False
                        continue
                    if stream is None:
                        if not it.HasField("node") or not it.node.id:
                            await context.abort(
                                grpc.StatusCode.INVALID_ARGUMENT, "first request must name the node"
                            )
                        md = json_format.MessageToDict(it.node.metadata)
                        status = self.cache.node_connected(
                            it.node.id, it.node.cluster, md, context.peer()
                        )
                        stream = _Stream(self.cache, status, self.on_version_seen)
                        cancel_watch = self.cache.watch(it.node.id, wake)
                    stream.handle(it)
                if done:
                    break
                if stream is not None:
                    for resp in stream.reconcile():
                        yield resp
                    self.cache.notify(stream.node_id)
        finally:
            reader.cancel()
            if cancel_watch is not None:
                cancel_watch()
            if stream is not None:
                self.cache.node_disconnected(stream.node_id)

    async def DeltaAggregatedResources(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta xDS is not supported; use SotW")
