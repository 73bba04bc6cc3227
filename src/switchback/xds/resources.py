"""Build Envoy protos from our model: node specs (sidecar, service proxy, ingress) + intent.

Naming (stable, because Envoy compares resources by name and content):
- cluster `local-app`: the instance's own app on 127.0.0.1:<app_port> (sidecars only)
- cluster `svc:<service>`: an EDS cluster whose endpoints come from `set_endpoints(service)`
- listener / route config `inbound`: a sidecar's inbound HTTP listener and its RDS routes
- listener / route config `outbound:<service>`: a sidecar's listener for calls to a peer service
- listener `service`: a service proxy's tcp_proxy listener to `svc:<service>`
- listener / route config `ingress:<port>`: an ingress HTTP listener routing to `svc:<service>`
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from switchback.xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resource, Snapshot

REDIRECT_HEADER = "x-switchback-redirected-by"
LOCAL_APP = "local-app"
KINDS = ("sidecar", "service-proxy", "ingress")

Endpoint = tuple[str, int]

# Every cluster's pool closes a connection idle this long. Our own Envoys are the clients of every
# internal hop, so the client closes an idle connection (no race with a request it would send),
# and a version's sidecars lose their idle keep-alive connections within this time once traffic
# has left them: what lets a release drain in about a second instead of waiting for its limit.
# Below uvicorn's keep-alive (5 s), so an app never closes a connection its sidecar could reuse.
UPSTREAM_IDLE_TIMEOUT = 1.0


def service_cluster(service: str) -> str:
    return f"svc:{service}"


@dataclass(frozen=True)
class NodeSpec:
    """What a node is, as declared in its bootstrap metadata (or registered by API).

    kind `sidecar`: inbound listener on listen_port -> local app on app_port (or a redirect
    target), plus an outbound HTTP listener per peer service in `outbound` (service -> port).
    kind `service-proxy`: tcp_proxy on listen_port -> EDS endpoints of `service`.
    kind `ingress`: HTTP listeners, `routes` maps a listen port -> service.
    """

    kind: str = "sidecar"
    listen_port: int = 0
    app_port: int = 0
    listen_host: str = "127.0.0.1"
    outbound: Mapping[str, int] = field(default_factory=dict)
    service: str = ""
    routes: Mapping[int, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)  # role, version, environment...

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any]) -> NodeSpec:
        def port(v: Any) -> int:
            return int(float(v)) if v not in (None, "") else 0

        kind = str(md.get("kind") or "sidecar")
        if kind not in KINDS:
            raise ValueError(f"unknown node kind {kind!r} (expected one of {KINDS})")
        labels = {
            k: str(v)
            for k, v in md.items()
            if isinstance(v, str | int | float | bool) and k not in {"listen_port", "app_port"}
        }
        return cls(
            kind=kind,
            listen_port=port(md.get("listen_port")),
            app_port=port(md.get("app_port")),
            listen_host=str(md.get("listen_host") or "127.0.0.1"),
            outbound={str(k): port(v) for k, v in dict(md.get("outbound") or {}).items()},
            service=str(md.get("service") or ""),
            routes={port(k): str(v) for k, v in dict(md.get("routes") or {}).items()},
            labels=labels,
        )

    def to_metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {**self.labels, "kind": self.kind}
        if self.listen_port:
            md["listen_port"] = self.listen_port
        if self.app_port:
            md["app_port"] = self.app_port
        if self.listen_host != "127.0.0.1":
            md["listen_host"] = self.listen_host
        if self.outbound:
            md["outbound"] = dict(self.outbound)
        if self.service:
            md["service"] = self.service
        if self.routes:
            md["routes"] = {str(k): v for k, v in self.routes.items()}
        return md


def validate_endpoints(endpoints: Iterable[Sequence[Any]]) -> list[Endpoint]:
    """Reject what Envoy would NACK (EDS needs IP literals, ports 1..65535) before sending."""
    out: list[Endpoint] = []
    for ep in endpoints:
        host, port = str(ep[0]), int(ep[1])
        ipaddress.ip_address(host)  # raises ValueError for names: EDS takes IPs only
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        out.append((host, port))
    return out


# --- small builders ---------------------------------------------------------------------
def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def _addr(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def _dur(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _typed(msg: Any) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def _upstream_http_options() -> dict[str, any_pb2.Any]:
    """HTTP/1.1 to the upstream, idle connections closed after UPSTREAM_IDLE_TIMEOUT."""
    opts = http_protocol_options_pb2.HttpProtocolOptions(
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            idle_timeout=_dur(UPSTREAM_IDLE_TIMEOUT)
        ),
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http_protocol_options=protocol_pb2.Http1ProtocolOptions()
        ),
    )
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(opts)}


def load_assignment(name: str, endpoints: Iterable[Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(address=_addr(h, p))
                    )
                    for h, p in endpoints
                ]
            )
        ],
    )


@functools.lru_cache(maxsize=8192)  # pure: nodes share identical resources
def static_cluster(name: str, endpoints: tuple[Endpoint, ...]) -> Resource:
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_dur(1),
        load_assignment=load_assignment(name, endpoints),
        typed_extension_protocol_options=_upstream_http_options(),
    )
    return Resource.pack(name, c)


@functools.lru_cache(maxsize=8192)  # pure: nodes share identical resources
def eds_cluster(name: str) -> Resource:
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=_dur(1),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
        typed_extension_protocol_options=_upstream_http_options(),
    )
    return Resource.pack(name, c)


@functools.lru_cache(maxsize=8192)  # pure: nodes share identical resources
def endpoints_resource(name: str, endpoints: tuple[Endpoint, ...]) -> Resource:
    return Resource.pack(name, load_assignment(name, endpoints))


@functools.lru_cache(maxsize=8192)  # pure: nodes share identical resources
def http_listener(name: str, host: str, port: int, route_config: str) -> Resource:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name.replace(":", "_"),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        # Routes come by RDS: a route change then never touches (drains) the listener.
        rds=hcm_pb2.Rds(route_config_name=route_config, config_source=_ads()),
        # No idle limit on a stream (Envoy's default is 5 min): a synchronous call waits as long
        # as its scenario allows, and the gateway itself bounds that wait (see _route_to).
        stream_idle_timeout=_dur(0),
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=_typed(router_pb2.Router())
            )
        ],
    )
    lis = listener_pb2.Listener(
        name=name,
        address=_addr(host, port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=_typed(hcm),
                    )
                ]
            )
        ],
    )
    return Resource.pack(name, lis)


@functools.lru_cache(maxsize=8192)  # pure: nodes share identical resources
def tcp_listener(name: str, host: str, port: int, cluster: str) -> Resource:
    # No idle limit (default 1 h): a synchronous call may stay silent as long as its scenario
    # allows. Idle connections are closed by their HTTP clients (UPSTREAM_IDLE_TIMEOUT).
    tcp = tcp_proxy_pb2.TcpProxy(
        stat_prefix=name.replace(":", "_"), cluster=cluster, idle_timeout=_dur(0)
    )
    lis = listener_pb2.Listener(
        name=name,
        address=_addr(host, port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.tcp_proxy", typed_config=_typed(tcp)
                    )
                ]
            )
        ],
    )
    return Resource.pack(name, lis, refs=[cluster])


def _route_to(cluster: str, **kw: Any) -> route_components_pb2.Route:
    """Timeout 0 = none. Envoy's default (15 s) answered a long synchronous call with a bare
    ``504 upstream request timeout`` and no xid; the gateway bounds every call itself (the
    scenario's transaction timeout, else 300 s; docs/gateway.md) and answers in JSON when the
    bound is hit (202 + xid + Location while the transaction goes on)."""
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/", **kw.pop("match", {})),
        route=route_components_pb2.RouteAction(cluster=cluster, timeout=_dur(0)),
        **kw,
    )


def route_config(name: str, routes: list[route_components_pb2.Route]) -> Resource:
    rc = route_pb2.RouteConfiguration(
        name=name,
        # Envoy NACKs a route config naming an unknown cluster instead of serving 503s.
        validate_clusters=wrappers_pb2.BoolValue(value=True),
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=name.replace(":", "_"), domains=["*"], routes=routes
            )
        ],
    )
    refs = {r.route.cluster for r in routes if r.route.cluster}
    return Resource.pack(name, rc, refs=refs)


@functools.lru_cache(maxsize=8192)  # pure: nodes share identical resources
def inbound_routes(node_id: str, redirect_to: str | None) -> Resource:
    """Default: everything to the local app. Redirect: everything to `svc:<target>`, with a
    header naming this node; a request that already carries that header is served locally
    (loop guard: never redirect twice)."""
    routes: list[route_components_pb2.Route] = []
    if redirect_to:
        routes.append(
            _route_to(
                LOCAL_APP,
                match={
                    "headers": [
                        route_components_pb2.HeaderMatcher(name=REDIRECT_HEADER, present_match=True)
                    ]
                },
            )
        )
        hdr = base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=REDIRECT_HEADER, value=node_id),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        routes.append(
            _route_to(
                service_cluster(redirect_to),
                request_headers_to_add=[hdr],
                response_headers_to_add=[hdr],
            )
        )
    else:
        routes.append(_route_to(LOCAL_APP))
    return route_config("inbound", routes)


# --- whole snapshots --------------------------------------------------------------------
@dataclass
class Intent:
    """The desired traffic state, independent of which nodes exist."""

    endpoints: dict[str, list[Endpoint]] = field(default_factory=dict)
    # Ordered (selector, target or None); the last rule matching a node wins.
    redirects: list[tuple[dict[str, Any], str | None]] = field(default_factory=list)


def build_snapshot(
    node_id: str, spec: NodeSpec, version: int, redirect_to: str | None, intent: Intent
) -> Snapshot:
    clusters: dict[str, Resource] = {}
    endpoints: dict[str, Resource] = {}
    listeners: dict[str, Resource] = {}
    routes: dict[str, Resource] = {}

    def want_service(service: str) -> str:
        name = service_cluster(service)
        if name not in clusters:
            clusters[name] = eds_cluster(name)
            # Always send a load assignment, even empty, so the cluster finishes warming.
            endpoints[name] = endpoints_resource(name, tuple(intent.endpoints.get(service, ())))
        return name

    if spec.kind == "sidecar":
        clusters[LOCAL_APP] = static_cluster(LOCAL_APP, (("127.0.0.1", spec.app_port),))
        listeners["inbound"] = http_listener(
            "inbound", spec.listen_host, spec.listen_port, "inbound"
        )
        if redirect_to:
            want_service(redirect_to)
        routes["inbound"] = inbound_routes(node_id, redirect_to)
        for service, port in sorted(spec.outbound.items()):
            name = f"outbound:{service}"
            listeners[name] = http_listener(name, "127.0.0.1", port, name)
            routes[name] = route_config(name, [_route_to(want_service(service))])
    elif spec.kind == "service-proxy":
        listeners["service"] = tcp_listener(
            "service", spec.listen_host, spec.listen_port, want_service(spec.service)
        )
    elif spec.kind == "ingress":
        for port, service in sorted(spec.routes.items()):
            name = f"ingress:{port}"
            listeners[name] = http_listener(name, spec.listen_host, port, name)
            routes[name] = route_config(name, [_route_to(want_service(service))])
    return Snapshot(
        version,
        {CLUSTER: clusters, ENDPOINT: endpoints, LISTENER: listeners, ROUTE: routes},
    )
