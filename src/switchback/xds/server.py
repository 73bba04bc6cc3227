"""How to serve: the ADS gRPC stream over grpc.aio, state of the world and incremental (delta).

Per stream and resource type we keep what was sent, what was ACKed, and the one response in
flight. After every event (a request from Envoy, or a snapshot change) `reconcile` decides
what to send, in make-before-break order:

- clusters first; a cluster still used by a route or listener the node holds (ACKed or in
  flight) stays in the cluster set until a route update that drops it is ACKed;
- endpoints for the clusters Envoy subscribed to;
- listeners only once the clusters they use are ACKed;
- routes only once the clusters they use are ACKed and warmed (their endpoints ACKed).

One response per type is in flight at a time; an ACK (matching nonce, no error_detail) or a
NACK (error_detail set) ends it. After a NACK the same content is not sent again: the node
stays on its last good config until the snapshot changes.

The two protocols share all of that (`_Stream`); they differ only in how a request is read and
how a response is written. State of the world (`_SotwStream`) sends every resource of a type
(CDS/LDS) or every subscribed one (EDS/RDS). Delta (`_DeltaStream`) sends only the resources
whose content changed, plus `removed_resources` for names the node holds that left its wanted
set; each resource carries the version `<snapshot version>.<content digest>`, so a reconnecting
Envoy's `initial_resource_versions` tell us what it already holds (not sent again) and which
versions it has seen (the counter is raised above them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format

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
    Resources,
    Snapshot,
    SnapshotCache,
)

log = logging.getLogger(__name__)

_WAKE = object()
_nonces = itertools.count(1)
# refs of a resource a reconnecting delta node holds in a content we do not know: it may use
# any cluster the node holds, so all of them stay until it is replaced (make-before-break).
_ANY_CLUSTER = "*"

Request = discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
Response = discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse


@dataclass
class _TypeState:
    wildcard: bool = False  # every resource of the type (CDS, LDS) vs the subscribed names
    requested: bool = False
    subscribed: set[str] = field(default_factory=set)
    sent: dict[str, Resource] = field(default_factory=dict)
    acked: dict[str, Resource] = field(default_factory=dict)
    last_nonce: str = ""
    # The response in flight: resources it sets, names it removes; `inflight_full` = it is the
    # complete set (SotW CDS/LDS), so its ACK replaces `acked`.
    inflight: dict[str, Resource] | None = None
    inflight_removed: tuple[str, ...] = ()
    inflight_full: bool = False
    inflight_version: int = 0

    def visible(self, resources: Resources) -> dict[str, Resource]:
        """What the node asked for, out of the snapshot's resources of this type."""
        if self.wildcard:
            return dict(resources)
        return {n: r for n, r in resources.items() if n in self.subscribed}

    def forget(self, names: Iterable[str]) -> None:
        """Unsubscribed names: the node drops them, so do we."""
        for name in names:
            self.sent.pop(name, None)
            self.acked.pop(name, None)


def _same(a: Mapping[str, Resource], b: Mapping[str, Resource]) -> bool:
    return a.keys() == b.keys() and all(a[n].digest == b[n].digest for n in a)


def _changed(want: Mapping[str, Resource], have: Mapping[str, Resource]) -> dict[str, Resource]:
    """The resources of `want` that `have` lacks or holds with other content."""
    return {n: r for n, r in want.items() if (h := have.get(n)) is None or h.digest != r.digest}


def _refs(resources: Iterable[Resource]) -> set[str]:
    out: set[str] = set()
    for r in resources:
        out |= r.refs
    return out


def _keep(ts: _TypeState, want: dict[str, Resource], names: Iterable[str]) -> dict[str, Resource]:
    """`want` plus what the node holds of `names` (make-before-break: not removed yet)."""
    for name in names:
        if name not in want and (held := ts.acked.get(name) or ts.sent.get(name)) is not None:
            want[name] = held
    return want


class _Stream:
    """One ADS stream of one node: ordering and ACK/NACK bookkeeping, for both protocols."""

    api = ""

    def __init__(self, cache: SnapshotCache, status: NodeStatus, on_version_seen: Any) -> None:
        self.cache = cache
        self.status = status
        self.node_id = status.id
        self.types = {t: _TypeState(wildcard=t in WILDCARD_TYPES) for t in PUSH_ORDER}
        self.on_version_seen = on_version_seen

    # --- requests ------------------------------------------------------------------------
    def handle(self, req: Any) -> None:
        raise NotImplementedError

    def _settle(self, req: Request, ts: _TypeState) -> None:
        """The request answers the response in flight: ACK, or NACK if it carries an error."""
        if ts.inflight is None:
            return
        if req.HasField("error_detail"):
            self._nack(req, ts)
        else:
            self._ack(req.type_url, ts)
        ts.inflight = None
        self.status.type_status(req.type_url).pending = False

    def _ack(self, type_url: str, ts: _TypeState) -> None:
        assert ts.inflight is not None
        if ts.inflight_full:
            ts.acked = dict(ts.inflight)
        else:
            ts.acked.update(
                {n: r for n, r in ts.inflight.items() if ts.wildcard or n in ts.subscribed}
            )
            for name in ts.inflight_removed:
                ts.acked.pop(name, None)
        self.status.type_status(type_url).acked_version = ts.inflight_version
        self.status.record("ack", type_url, ts.inflight_version)

    def _nack(self, req: Request, ts: _TypeState) -> None:
        err = req.error_detail.message or str(req.error_detail)
        st = self.status
        st.last_nack = Nack(req.type_url, ts.inflight_version, err, time.time())
        st.nacks += 1
        st.record("nack", req.type_url, ts.inflight_version, error=err)
        log.warning(
            "%s NACKed %s version %s: %s",
            self.node_id,
            SHORT_NAMES[req.type_url],
            ts.inflight_version,
            err,
        )

    # --- responses -----------------------------------------------------------------------
    def reconcile(self) -> list[Response]:
        snap = self.cache.snapshot(self.node_id)
        out: list[Response] = []
        if snap is None:
            return out
        cds, eds, lds, rds = (self.types[t] for t in PUSH_ORDER)

        # Clusters: desired plus any cluster a held route/listener still uses.
        held = _refs(
            itertools.chain(
                lds.acked.values(), lds.sent.values(), rds.acked.values(), rds.sent.values()
            )
        )
        if _ANY_CLUSTER in held:
            held |= cds.acked.keys() | cds.sent.keys()
        want_c = _keep(cds, cds.visible(snap.of(CLUSTER)), held)
        if cds.requested and cds.inflight is None and self._differs(cds, want_c):
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

        # Endpoints for what Envoy subscribed to; a cluster the node still holds keeps its
        # endpoints (Envoy drops them itself when the cluster's removal is applied).
        want_e = _keep(eds, eds.visible(snap.of(ENDPOINT)), want_c.keys() | cds.acked.keys())
        if eds.requested and eds.inflight is None and self._differs(eds, want_e):
            out.append(self._send(ENDPOINT, eds, want_e, snap.version))

        want_l = lds.visible(snap.of(LISTENER))
        if (
            lds.requested
            and lds.inflight is None
            and self._differs(lds, want_l)
            and ready(_refs(want_l.values()))
        ):
            out.append(self._send(LISTENER, lds, want_l, snap.version))

        want_r = rds.visible(snap.of(ROUTE))
        if (
            rds.requested
            and rds.inflight is None
            and self._differs(rds, want_r)
            and ready(_refs(want_r.values()))
        ):
            out.append(self._send(ROUTE, rds, want_r, snap.version))
        self._update_synced(snap)
        return out

    def _differs(self, ts: _TypeState, want: Mapping[str, Resource]) -> bool:
        """Does the node need a response for this type?"""
        return not _same(want, ts.sent)

    def _send(
        self, type_url: str, ts: _TypeState, resources: dict[str, Resource], version: int
    ) -> Response:
        nonce = str(next(_nonces))
        ts.last_nonce = nonce
        ts.inflight_version = version
        resp = self._response(type_url, ts, resources, version, nonce)
        tst = self.status.type_status(type_url)
        tst.sent_version, tst.pending = version, True
        assert ts.inflight is not None
        self.status.record("send", type_url, version, ts.inflight, ts.inflight_removed)
        return resp

    def _response(
        self,
        type_url: str,
        ts: _TypeState,
        want: dict[str, Resource],
        version: int,
        nonce: str,
    ) -> Response:
        """Set `ts.inflight*` and `ts.sent` for a response bringing the node to `want`."""
        raise NotImplementedError

    def _update_synced(self, snap: Snapshot) -> None:
        """The node has `snap` iff every type's ACKed content equals the snapshot's."""
        for t in PUSH_ORDER:
            want, ts = snap.of(t), self.types[t]
            if ts.wildcard:
                if not _same(want, ts.acked):
                    return
            elif _changed(want, ts.acked):
                return
        st = self.status
        if st.acked_version is None or st.acked_version < snap.version:
            st.acked_version = snap.version
            st.acked_at = time.time()


class _SotwStream(_Stream):
    """State of the world: every response carries the whole (subscribed) set of its type."""

    api = "sotw"

    def handle(self, req: discovery_pb2.DiscoveryRequest) -> None:
        ts = self.types.get(req.type_url)
        if ts is None:
            log.debug("%s: ignoring request for unsupported type %s", self.node_id, req.type_url)
            return
        if req.response_nonce:
            if req.response_nonce != ts.last_nonce:
                return  # stale: answers a response that a newer one superseded
            self._settle(req, ts)
        else:
            ts.requested = True
            if req.version_info:
                # Reconnect after a control-plane restart: keep versions moving forward.
                with contextlib.suppress(ValueError):
                    self.on_version_seen(self.node_id, int(req.version_info))
        if not ts.wildcard:
            names = set(req.resource_names)
            if names != ts.subscribed:
                ts.forget(ts.subscribed - names)
                ts.subscribed = names
            ts.requested = True

    def _differs(self, ts: _TypeState, want: Mapping[str, Resource]) -> bool:
        # EDS/RDS: a name left out of a response is not removed, so only changes count.
        return super()._differs(ts, want) if ts.wildcard else bool(_changed(want, ts.sent))

    def _response(
        self,
        type_url: str,
        ts: _TypeState,
        want: dict[str, Resource],
        version: int,
        nonce: str,
    ) -> discovery_pb2.DiscoveryResponse:
        ts.inflight, ts.inflight_removed, ts.inflight_full = want, (), ts.wildcard
        if ts.wildcard:
            ts.sent = dict(want)
        else:
            ts.sent.update(want)
        return discovery_pb2.DiscoveryResponse(
            version_info=str(version),
            resources=[r.any for r in want.values()],
            type_url=type_url,
            nonce=nonce,
        )


def resource_version(version: int, r: Resource) -> str:
    """A delta resource's version: the snapshot version it was sent at, and its content."""
    return f"{version}.{r.digest.hex()}"


class _DeltaStream(_Stream):
    """Incremental xDS: only changed resources, plus the names removed.

    CDS and LDS are always wildcard (as in SotW; Envoy's on-demand CDS is not supported);
    EDS and RDS follow `resource_names_subscribe` / `resource_names_unsubscribe`."""

    api = "delta"

    def handle(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        ts = self.types.get(req.type_url)
        if ts is None:
            log.debug("%s: ignoring request for unsupported type %s", self.node_id, req.type_url)
            return
        if req.response_nonce and req.response_nonce == ts.last_nonce:
            self._settle(req, ts)
        # Subscription changes are deltas: never drop one, even on a stale nonce.
        ts.requested = True
        if not ts.wildcard:
            gone = set(req.resource_names_unsubscribe)
            ts.subscribed = (ts.subscribed - gone) | set(req.resource_names_subscribe)
            ts.forget(gone - ts.subscribed)
        if req.initial_resource_versions:
            self._held(req.type_url, ts, req.initial_resource_versions)

    def _held(self, type_url: str, ts: _TypeState, versions: Mapping[str, str]) -> None:
        """A reconnecting node tells what it holds: not sent again if the content matches."""
        snap = self.cache.snapshot(self.node_id)
        own = snap.of(type_url) if snap is not None else {}
        seen = 0
        for name, ver in versions.items():
            head, _, digest = ver.partition(".")
            with contextlib.suppress(ValueError):
                seen = max(seen, int(head))
            r = own.get(name)
            if r is None or r.digest.hex() != digest:
                # Content unknown to us (never equal to a real digest): replaced or removed.
                refs = {_ANY_CLUSTER} if type_url in (LISTENER, ROUTE) else set()
                r = Resource(name, any_pb2.Any(), b"held:" + ver.encode(), frozenset(refs))
            ts.sent[name] = ts.acked[name] = r
        if seen:
            # Versions never go backwards, also across a control-plane restart.
            self.on_version_seen(self.node_id, seen)

    def _response(
        self,
        type_url: str,
        ts: _TypeState,
        want: dict[str, Resource],
        version: int,
        nonce: str,
    ) -> discovery_pb2.DeltaDiscoveryResponse:
        changed = _changed(want, ts.sent)
        removed = tuple(n for n in ts.sent if n not in want)
        ts.inflight, ts.inflight_removed, ts.inflight_full = changed, removed, False
        ts.sent.update(changed)
        for name in removed:
            del ts.sent[name]
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=str(version),
            resources=[
                discovery_pb2.Resource(name=n, version=resource_version(version, r), resource=r.any)
                for n, r in changed.items()
            ],
            removed_resources=removed,
            type_url=type_url,
            nonce=nonce,
        )


class Refused(Exception):
    """A stream that may not speak for the node it names (ends the call with `code`)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Admission:
    """What an admitted stream is known by, and whether its credentials still hold (asked
    again whenever the node's config or registration changes: a revoked stream is ended)."""

    cluster: str
    metadata: dict[str, Any]
    valid: Callable[[], bool] = lambda: True


# admit(node id, cluster, reported metadata, the call's auth context) -> Admission; raises
# Refused. The default believes what the node says.
Admit = Callable[[str, str, dict[str, Any], Mapping[str, Any]], Admission]


def _believe(
    node_id: str, cluster: str, metadata: dict[str, Any], auth: Mapping[str, Any]
) -> Admission:
    return Admission(cluster, metadata)


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The ADS endpoint: state of the world and delta, from the same snapshot cache.

    `admit` runs on a stream's first request, before the node counts as connected: a stream it
    refuses never touches the node's status, snapshot or config (see ControlPlane._admit)."""

    def __init__(
        self, cache: SnapshotCache, on_version_seen: Any = None, admit: Admit | None = None
    ) -> None:
        self.cache = cache
        self.on_version_seen = on_version_seen or (lambda node_id, v: None)
        self.admit = admit or _believe

    # grpc.aio needs the handlers themselves to be async generators; `aclosing` runs the
    # stream's cleanup (node disconnected) as soon as the call ends.
    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async with contextlib.aclosing(self._serve(request_iterator, context, _SotwStream)) as out:
            async for resp in out:
                yield resp

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async with contextlib.aclosing(self._serve(request_iterator, context, _DeltaStream)) as out:
            async for resp in out:
                yield resp

    async def _serve(
        self,
        request_iterator: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
        make_stream: type[_Stream],
    ) -> AsyncIterator[Any]:
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
        admission: Admission | None = None
        stream_id = ""
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
                        if admission is not None and not admission.valid():
                            log.warning("%s: credentials revoked, ending its stream", stream_id)
                            await context.abort(
                                grpc.StatusCode.PERMISSION_DENIED,
                                f"the credentials of node {stream_id!r} were revoked",
                            )
                        continue
                    if stream is None:
                        if not it.HasField("node") or not it.node.id:
                            await context.abort(
                                grpc.StatusCode.INVALID_ARGUMENT, "first request must name the node"
                            )
                        md = json_format.MessageToDict(it.node.metadata)
                        try:
                            admission = self.admit(
                                it.node.id, it.node.cluster, md, context.auth_context()
                            )
                        except Refused as e:
                            log.warning(
                                "refused an ADS stream from %s for node %r: %s",
                                context.peer(),
                                it.node.id,
                                e,
                            )
                            await context.abort(e.code, str(e))
                        stream_id = it.node.id
                        status = self.cache.node_connected(
                            it.node.id,
                            admission.cluster,
                            admission.metadata,
                            context.peer(),
                            make_stream.api,
                        )
                        stream = make_stream(self.cache, status, self.on_version_seen)
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
