"""A minimal ADS client that speaks the protocol like Envoy does (state of the world).

Used to simulate many sidecars (benchmark) and to pin protocol behaviour in fast tests:
it subscribes to CDS and LDS (wildcard), follows EDS for EDS clusters and RDS for the route
configs its listeners name, and ACKs every response (or NACKs when `reject` says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from switchback.xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE
from switchback.xds.pki import CHANNEL_OPTIONS

_MSG = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


def _name(type_url: str, msg: Any) -> str:
    return msg.cluster_name if type_url == ENDPOINT else msg.name


@dataclass
class Received:
    type_url: str
    version: str
    names: list[str]
    at: float


@dataclass
class AdsClient:
    target: str  # host:port of the ADS server
    node_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    cluster: str = ""
    # Return an error text to NACK a response instead of ACKing it.
    reject: Callable[[str, dict[str, Any]], str | None] | None = None
    channel: grpc.aio.Channel | None = None  # share one channel among many clients
    # mutual TLS (pki.NodeCredentials.channel_credentials()); None = plaintext
    credentials: grpc.ChannelCredentials | None = None

    def __post_init__(self) -> None:
        self.resources: dict[str, dict[str, Any]] = {t: {} for t in _MSG}
        self.versions: dict[str, str] = {t: "" for t in _MSG}
        self.nonces: dict[str, str] = {t: "" for t in _MSG}
        self.subs: dict[str, list[str]] = {ENDPOINT: [], ROUTE: []}
        self.log: list[Received] = []
        self._out: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._own_channel = False
        self._changed = asyncio.Event()
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()  # the stream is over (see `error`)
        self.error: grpc.aio.AioRpcError | None = None

    async def start(self) -> None:
        if self.channel is None:
            if self.credentials is not None:
                self.channel = grpc.aio.secure_channel(
                    self.target, self.credentials, options=CHANNEL_OPTIONS
                )
            else:
                self.channel = grpc.aio.insecure_channel(self.target)
            self._own_channel = True
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._out.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self._task
        if self._own_channel and self.channel is not None:
            await self.channel.close()

    def _request(
        self, type_url: str, names: list[str] | None = None, error: str | None = None
    ) -> discovery_pb2.DiscoveryRequest:
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            version_info=self.versions[type_url],
            response_nonce=self.nonces[type_url],
            resource_names=names or [],
        )
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        return req

    async def _requests(self) -> Any:
        md = struct_pb2.Struct()
        md.update(self.metadata)
        first = True
        while True:
            req = await self._out.get()
            if req is None:
                return
            if first:
                req.node.CopyFrom(base_pb2.Node(id=self.node_id, cluster=self.cluster, metadata=md))
                first = False
            yield req

    async def _run(self) -> None:
        assert self.channel is not None
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self._out.put_nowait(self._request(CLUSTER))
        self._out.put_nowait(self._request(LISTENER))
        call = stub.StreamAggregatedResources(self._requests())
        self.connected.set()
        try:
            async for resp in call:
                self._on_response(resp)
        except grpc.aio.AioRpcError as e:
            self.error = e  # e.g. refused: wrong or missing credentials
        finally:
            self.ended.set()
            self._changed.set()

    def _on_response(self, resp: discovery_pb2.DiscoveryResponse) -> None:
        t = resp.type_url
        decoded = {}
        for a in resp.resources:
            msg = _MSG[t]()
            a.Unpack(msg)
            decoded[_name(t, msg)] = msg
        self.log.append(Received(t, resp.version_info, sorted(decoded), time.monotonic()))
        self.nonces[t] = resp.nonce
        error = self.reject(t, decoded) if self.reject else None
        if error is not None:
            self._out.put_nowait(self._request(t, self.subs.get(t), error))
            self._changed.set()
            return
        if t in (CLUSTER, LISTENER):
            self.resources[t] = decoded
        else:
            self.resources[t].update(decoded)
        self.versions[t] = resp.version_info
        self._out.put_nowait(self._request(t, self.subs.get(t)))
        # Follow-up subscriptions, as Envoy does after applying clusters / listeners.
        if t == CLUSTER:
            names = sorted(n for n, c in decoded.items() if c.type == cluster_pb2.Cluster.EDS)
            self._resubscribe(ENDPOINT, names)
        elif t == LISTENER:
            names = []
            for lis in decoded.values():
                for chain in lis.filter_chains:
                    for f in chain.filters:
                        if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                            hcm = hcm_pb2.HttpConnectionManager()
                            f.typed_config.Unpack(hcm)
                            if hcm.HasField("rds"):
                                names.append(hcm.rds.route_config_name)
            self._resubscribe(ROUTE, sorted(set(names)))
        self._changed.set()

    def _resubscribe(self, type_url: str, names: list[str]) -> None:
        if names != self.subs[type_url]:
            self.subs[type_url] = names
            for gone in [n for n in self.resources[type_url] if n not in names]:
                del self.resources[type_url][gone]
            self._out.put_nowait(self._request(type_url, names))

    async def wait_for(self, predicate: Callable[[AdsClient], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.node_id}: condition not met")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
