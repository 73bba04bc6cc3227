"""The Kubernetes objects of an app, rendered from typed inputs: pure functions, no I/O.

The layout is the deck's (slides 4-5), per environment (one namespace):

- Deployments ``<role>-<build>`` for the roles ``apigw``, ``scenario``, ``transaction``. The build
  is in the name so that the current and the new version coexist and a Deployment's identity (its
  immutable selector) never changes. Labels: ``app``, ``role``, ``version`` (the slot:
  ``current`` or ``new``) and ``switchback.io/build``.
- Services ``apigw`` (public) and ``apigw-standby``; ``<role>-current`` and ``<role>-new``.
- Ingresses ``apigw`` and ``apigw-standby``.
- Per Deployment, an immutable ConfigMap ``envoy-<role>-<build>-<hash>`` with the Envoy
  sidecar's bootstrap (the hash of its content in the name: a changed bootstrap is a new
  ConfigMap, and the Deployment that names it rolls its pods).

**What a Service selects.** A pod's labels cannot change without replacing the pod, and a slot
changes meaning at every release (``new`` becomes ``current``). So the ``version`` (slot) label is
on the Deployment object only, where a promotion relabels it without touching a pod; Services
select the immutable build: ``{app, role, switchback.io/build}``. "Service ``apigw`` selects
version current" is "Service ``apigw`` selects the build that the current slot holds", and the
cutover switches it by patching that one label of the selector (:func:`service_selector`).

**Every pod** runs the app (``switchback serve APP --role R`` on 127.0.0.1 only) and an Envoy
sidecar (a native sidecar: an init container with ``restartPolicy: Always``, started before the
app and stopped after it). All traffic enters through the sidecar's ``inbound`` listener, which
our xDS control plane configures; the app reaches its peer (apigw → scenario of the same build)
through the sidecar's outbound listener. The sidecar's bootstrap is the project's own
:func:`switchback.xds.sidecar.bootstrap_config` plus one static listener for kubelet's probes and
read-only stats (below); the node id is the pod's ``<namespace>.<name>`` (downward API, Envoy's
``--service-node``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from switchback.runtime.local import DEFAULT_REPLICAS, ROLES, pinned, service_name
from switchback.xds.resources import NodeSpec
from switchback.xds.sidecar import XDS_APIS, bootstrap_config

SLOTS = ("current", "new")
# Services of the deck, in the order they are rendered.
MAIN_SERVICES = ("apigw", "apigw-standby")
INGRESSES = ("apigw", "apigw-standby")

BUILD_LABEL = "switchback.io/build"
ENV_LABEL = "switchback.io/environment"
MANAGED_BY = {"app.kubernetes.io/managed-by": "switchback"}
IMAGE_ANNOTATION = "switchback.io/image"
BOOTSTRAP_KEY = "bootstrap.yaml"
BOOTSTRAP_DIR = "/etc/switchback/envoy"
APP_DIR_IN_IMAGE = "/app"  # where `switchback k8s dockerfile` puts the app

# Static resources added to the sidecar's bootstrap (names that xDS never uses: a CDS cluster
# may not replace a static one).
HEALTH_LISTENER = "k8s-health"
ADMIN_CLUSTER = "k8s-health:envoy-admin"
APP_CLUSTER = "k8s-health:app"

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_BUILD = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")  # the release scenario's own rule
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?")


class ManifestError(ValueError):
    """The inputs cannot make valid manifests (a bad name, port, quantity...)."""


# -- typed inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ports:
    """Ports inside every pod (each pod has its own network namespace, so these are the same in
    every pod). Only ``http`` and ``health`` are reachable from outside the pod."""

    http: int = 8000  # the sidecar's inbound listener (0.0.0.0): what Services target
    app: int = 8080  # the app (127.0.0.1 only: nothing reaches it but through the sidecar)
    peer: int = 8001  # apigw's sidecar outbound listener to scenario (127.0.0.1)
    envoy_admin: int = 15000  # Envoy's admin (127.0.0.1 only: it can stop Envoy)
    health: int = 15021  # read-only: /ready, /live, /app/healthz, /stats/prometheus

    def check(self) -> None:
        values = [self.http, self.app, self.peer, self.envoy_admin, self.health]
        for v in values:
            if not 1 <= v <= 65535:
                raise ManifestError(f"port {v} out of range 1..65535")
        if len(set(values)) != len(values):
            raise ManifestError(f"ports must be distinct: {values}")


@dataclass(frozen=True)
class Resources:
    """A container's requests and limits (Kubernetes quantities). An empty value is left out."""

    cpu_request: str = ""
    memory_request: str = ""
    cpu_limit: str = ""
    memory_limit: str = ""

    def to_k8s(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for kind, cpu, mem in (
            ("requests", self.cpu_request, self.memory_request),
            ("limits", self.cpu_limit, self.memory_limit),
        ):
            d = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v}
            for v in d.values():
                if not _QUANTITY.fullmatch(v):
                    raise ManifestError(f"not a Kubernetes quantity: {v!r} (e.g. 250m, 512Mi)")
            if d:
                out[kind] = d
        return out


APP_RESOURCES = Resources("100m", "256Mi", "1", "512Mi")
ENVOY_RESOURCES = Resources("50m", "64Mi", "500m", "256Mi")


@dataclass(frozen=True)
class Shutdown:
    """Pod termination. The app's preStop asks its sidecar to drain (every keep-alive connection
    is closed at the end of its next response, new connections are still accepted) and waits
    ``drain_seconds`` so that the endpoint's removal reaches every node before the app gets
    SIGTERM; the app then has ``app_grace_seconds`` to finish what it holds. The sidecar stops
    after the app (native sidecar), and its listeners stay open that long."""

    drain_seconds: int = 5
    app_grace_seconds: int = 10

    @property
    def envoy_drain_seconds(self) -> int:
        return self.drain_seconds + self.app_grace_seconds

    @property
    def termination_grace_seconds(self) -> int:
        return self.drain_seconds + self.app_grace_seconds + 5  # + Envoy's own exit


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str
    optional: bool = False

    def env(self, var: str) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": self.name, "key": self.key}
        if self.optional:
            ref["optional"] = True
        return {"name": var, "valueFrom": {"secretKeyRef": ref}}


@dataclass(frozen=True)
class Settings:
    """Everything about an environment of an app on a cluster that does not change per build."""

    app: str  # the app's name: label `app`
    environment: str
    namespace: str = ""  # default: the environment's name
    envoy_image: str = "envoyproxy/envoy:v1.40.0"
    ingress_class: str | None = None  # None: the cluster's default IngressClass
    host: str = ""  # public Ingress host; default apigw.<environment>.<domain>
    standby_host: str = ""  # default apigw-standby.<environment>.<domain>
    domain: str = "example.com"
    tls_secret: str | None = None
    replicas: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_REPLICAS))
    app_resources: Resources = APP_RESOURCES
    envoy_resources: Resources = ENVOY_RESOURCES
    ports: Ports = field(default_factory=Ports)
    shutdown: Shutdown = field(default_factory=Shutdown)
    # The controller's xDS Service (see `install`); a name resolved by the cluster's DNS.
    xds_host: str = "switchback-controller.switchback-system.svc"
    xds_port: int = 18000
    xds_api: str = "sotw"
    # PostgreSQL is required on Kubernetes: several pods share one store.
    database: SecretRef = SecretRef("switchback-db", "url")
    # Admin API tokens ("name=token,..."): optional; without them every admin call gets 401.
    admin_tokens: SecretRef = SecretRef("switchback-admin-tokens", "tokens", optional=True)
    image_pull_secrets: tuple[str, ...] = ()
    rollout_deadline_seconds: int = 300

    @property
    def ns(self) -> str:
        return self.namespace or self.environment

    def check(self) -> None:
        for what, value in (
            ("app name", self.app),
            ("environment", self.environment),
            ("namespace", self.ns),
        ):
            if not DNS_LABEL.fullmatch(value):
                raise ManifestError(
                    f"invalid {what} {value!r}: a DNS label (1-63 of a-z, 0-9 and '-', "
                    "starting and ending with a letter or digit)"
                )
        for role in self.replicas:
            if role not in ROLES:
                raise ManifestError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        for role, n in self.replicas.items():
            if n < 1:
                raise ManifestError(f"replicas of {role} must be at least 1, not {n}")
        if self.xds_api not in XDS_APIS:
            raise ManifestError(f"unknown xDS API {self.xds_api!r} ({', '.join(XDS_APIS)})")
        if not 1 <= self.xds_port <= 65535:
            raise ManifestError(f"xDS port {self.xds_port} out of range")
        if self.shutdown.drain_seconds < 0 or self.shutdown.app_grace_seconds < 0:
            raise ManifestError("shutdown times must not be negative")
        self.ports.check()
        self.app_resources.to_k8s()
        self.envoy_resources.to_k8s()
        if self.public_host == self.standby_ingress_host:
            raise ManifestError("the public and the standby Ingress need different hosts")

    @property
    def public_host(self) -> str:
        return self.host or f"apigw.{self.environment}.{self.domain}"

    @property
    def standby_ingress_host(self) -> str:
        return self.standby_host or f"apigw-standby.{self.environment}.{self.domain}"


@dataclass(frozen=True)
class Build:
    """One build of the app in one slot."""

    version: str  # the build id: label switchback.io/build, part of the Deployments' names
    slot: str = "current"
    image: str = ""  # default <app>:<version>

    def check(self) -> None:
        if not _BUILD.fullmatch(self.version):
            raise ManifestError(
                f"invalid version {self.version!r}: 1-31 of a-z, 0-9 and '-', starting with a "
                "letter or digit"
            )
        if self.slot not in SLOTS:
            raise ManifestError(f"unknown slot {self.slot!r} (expected current or new)")

    def image_for(self, settings: Settings) -> str:
        return self.image or f"{settings.app}:{self.version}"


# -- names and labels --------------------------------------------------------------------------


def deployment_name(role: str, version: str) -> str:
    return f"{role}-{version}"


def configmap_name(role: str, version: str, bootstrap: str) -> str:
    return f"envoy-{role}-{version}-{hashlib.sha256(bootstrap.encode()).hexdigest()[:10]}"


def service_names() -> tuple[str, ...]:
    """The eight Services of the deck."""
    return (*MAIN_SERVICES, *(f"{r}-{s}" for s in SLOTS for r in ROLES))


def service_role(service: str) -> str:
    role = service.removesuffix("-standby").removesuffix("-current").removesuffix("-new")
    if role not in ROLES or service not in service_names():
        raise ManifestError(f"unknown service {service!r} (services: {', '.join(service_names())})")
    return role


def pod_labels(settings: Settings, role: str, version: str) -> dict[str, str]:
    """The pod template's labels; also the Deployment's selector (immutable)."""
    return {"app": settings.app, "role": role, BUILD_LABEL: version}


def deployment_labels(settings: Settings, build: Build, role: str) -> dict[str, str]:
    return {
        **pod_labels(settings, role, build.version),
        "version": build.slot,
        ENV_LABEL: settings.environment,
        **MANAGED_BY,
    }


def slot_selector(settings: Settings, version: str) -> dict[str, str]:
    """Label selector of every object of one build (Deployments, ConfigMaps, pods)."""
    return {"app": settings.app, BUILD_LABEL: version}


def service_selector(settings: Settings, service: str, version: str) -> dict[str, str]:
    """What ``service`` selects when it points at build ``version``."""
    return pod_labels(settings, service_role(service), version)


def node_id_of(namespace: str, pod: str) -> str:
    """The xDS node id of a pod's sidecar (what its Envoy gets as ``--service-node``)."""
    return f"{namespace}.{pod}"


def node_labels(settings: Settings, role: str, version: str) -> dict[str, str]:
    """The sidecar's xDS labels: the same as the local runtime's instances (the release selects
    sidecars by ``{environment, role, version: build}`` on both runtimes)."""
    return {"role": role, "version": version, "environment": settings.environment}


def peer_service(settings: Settings, version: str) -> str:
    """The control plane's service an apigw sidecar of ``version`` calls scenario through: the
    local runtime's name, so the controller fills both the same way (EDS: the ready scenario
    pods of that build, at ``ports.http``)."""
    return service_name(settings.environment, pinned("scenario", version))


# -- the sidecar's bootstrap -------------------------------------------------------------------


def _health_listener(ports: Ports) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A static listener for kubelet's probes and the controller's drain checks. Read-only by
    construction: only these exact paths are routed (the admin API's mutating endpoints, on
    127.0.0.1 only, stay out of reach). Static, so a redirect pushed over xDS never moves it."""

    def to(cluster: str, path: str, rewrite: str | None = None) -> dict[str, Any]:
        action: dict[str, Any] = {"cluster": cluster, "timeout": "2s"}
        if rewrite:
            action["prefix_rewrite"] = rewrite
        return {"match": {"path": path}, "route": action}

    routes = [
        to(ADMIN_CLUSTER, "/ready"),  # Envoy LIVE: its initial xDS config is applied
        to(ADMIN_CLUSTER, "/stats/prometheus"),
        to(APP_CLUSTER, "/app/healthz", rewrite="/healthz"),  # the app's liveness
        {"match": {"path": "/live"}, "direct_response": {"status": 200}},  # Envoy answers
    ]
    listener = {
        "name": HEALTH_LISTENER,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": ports.health}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "k8s_health",
                            "route_config": {
                                "name": HEALTH_LISTENER,
                                "virtual_hosts": [
                                    {"name": "health", "domains": ["*"], "routes": routes}
                                ],
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }

    def static(name: str, port: int) -> dict[str, Any]:
        return {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }

    return listener, [static(ADMIN_CLUSTER, ports.envoy_admin), static(APP_CLUSTER, ports.app)]


def sidecar_bootstrap(settings: Settings, role: str, version: str) -> dict[str, Any]:
    """The sidecar's Envoy bootstrap: :func:`bootstrap_config` (node metadata, the ADS cluster —
    whatever that function grows, e.g. TLS to the control plane, comes along) plus the static
    health listener. The node id in it is a placeholder: Envoy's ``--service-node`` (the pod's
    name) overrides it."""
    p = settings.ports
    spec = NodeSpec(
        kind="sidecar",
        listen_port=p.http,
        app_port=p.app,
        listen_host="0.0.0.0",
        outbound={peer_service(settings, version): p.peer} if role == "apigw" else {},
        labels=node_labels(settings, role, version),
    )
    config = bootstrap_config(
        f"{settings.ns}.{deployment_name(role, version)}",
        settings.xds_host,
        settings.xds_port,
        spec,
        admin_port=p.envoy_admin,
        cluster=role,
        xds_api=settings.xds_api,
    )
    listener, clusters = _health_listener(p)
    static = config.setdefault("static_resources", {})
    static.setdefault("listeners", []).append(listener)
    static.setdefault("clusters", []).extend(clusters)
    return config


def bootstrap_text(settings: Settings, role: str, version: str) -> str:
    return yaml.safe_dump(sidecar_bootstrap(settings, role, version), sort_keys=False)


# -- objects -----------------------------------------------------------------------------------


def meta(name: str, namespace: str | None, labels: Mapping[str, str], **kw: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name}
    if namespace:
        md["namespace"] = namespace
    md["labels"] = dict(labels)
    md.update({k: v for k, v in kw.items() if v})
    return md


def namespace(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": meta(settings.ns, None, {ENV_LABEL: settings.environment, **MANAGED_BY}),
    }


def bootstrap_configmap(settings: Settings, build: Build, role: str) -> dict[str, Any]:
    text = bootstrap_text(settings, role, build.version)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(
            configmap_name(role, build.version, text),
            settings.ns,
            {
                **pod_labels(settings, role, build.version),
                ENV_LABEL: settings.environment,
                **MANAGED_BY,
            },
        ),
        # Never edited: another bootstrap is another ConfigMap (its name has the content's hash).
        "immutable": True,
        "data": {BOOTSTRAP_KEY: text},
    }


_FIELD_ENV = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
]


def hardened(user: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


APP_UID = 10001  # the user `switchback k8s dockerfile` creates
ENVOY_UID = 101  # the `envoy` user of the official Envoy image


def _http_probe(path: str, port: int, **kw: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, **kw}


def app_container(settings: Settings, build: Build, role: str) -> dict[str, Any]:
    p, sd = settings.ports, settings.shutdown
    command = [
        "switchback",
        "serve",
        APP_DIR_IN_IMAGE,
        "--role",
        role,
        "--host",
        "127.0.0.1",
        "--port",
        str(p.app),
        "--graceful-timeout",
        str(sd.app_grace_seconds),
    ]
    env: list[dict[str, Any]] = [
        *_FIELD_ENV,
        {"name": "SWITCHBACK_VERSION", "value": build.version},
        {"name": "SWITCHBACK_INSTANCE", "value": "$(POD_NAMESPACE).$(POD_NAME)"},
        settings.database.env("SWITCHBACK_DB"),
        settings.admin_tokens.env("SWITCHBACK_ADMIN_TOKENS"),
    ]
    if role == "apigw":
        # scenario of the same build, through this pod's sidecar (never directly)
        env.append({"name": "SWITCHBACK_SCENARIO_URL", "value": f"http://127.0.0.1:{p.peer}"})
    return {
        "name": "app",
        "image": build.image_for(settings),
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "resources": settings.app_resources.to_k8s(),
        # Through the sidecar's inbound listener, the path every request takes: a pod is ready
        # once the app answers *and* the control plane has configured its sidecar.
        "readinessProbe": _http_probe(
            "/readyz", p.http, periodSeconds=5, timeoutSeconds=2, failureThreshold=2
        ),
        # Through the sidecar's static health listener: a redirect pushed over xDS never sends
        # this probe elsewhere, so a failing new version cannot get the old pods restarted.
        "livenessProbe": _http_probe(
            "/app/healthz", p.health, periodSeconds=10, timeoutSeconds=2, failureThreshold=3
        ),
        "startupProbe": _http_probe(
            "/app/healthz", p.health, periodSeconds=2, timeoutSeconds=2, failureThreshold=60
        ),
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "switchback",
                        "k8s",
                        "prestop",
                        "--admin-port",
                        str(p.envoy_admin),
                        "--sleep",
                        str(sd.drain_seconds),
                    ]
                }
            }
        },
        "securityContext": hardened(APP_UID),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def envoy_container(settings: Settings, role: str) -> dict[str, Any]:
    p = settings.ports
    return {
        "name": "envoy",
        "image": settings.envoy_image,
        "imagePullPolicy": "IfNotPresent",
        # Native sidecar: starts before the app, stops after it (Kubernetes >= 1.29).
        "restartPolicy": "Always",
        # `envoy` itself, not the image's entrypoint script (which would switch users).
        "command": ["envoy"],
        "args": [
            "--config-path",
            f"{BOOTSTRAP_DIR}/{BOOTSTRAP_KEY}",
            # The node id: the pod's name, unique in the cluster with its namespace.
            "--service-node",
            "$(POD_NAMESPACE).$(POD_NAME)",
            "--service-cluster",
            role,
            "--drain-time-s",
            str(settings.shutdown.envoy_drain_seconds),
            "--drain-strategy",
            "immediate",
            "--disable-hot-restart",
            "--log-level",
            "info",
        ],
        "env": list(_FIELD_ENV),
        "ports": [
            {"name": "http", "containerPort": p.http, "protocol": "TCP"},
            {"name": "envoy-health", "containerPort": p.health, "protocol": "TCP"},
        ],
        "resources": settings.envoy_resources.to_k8s(),
        "readinessProbe": _http_probe("/ready", p.health, periodSeconds=5, timeoutSeconds=2),
        "livenessProbe": _http_probe(
            "/live", p.health, periodSeconds=10, timeoutSeconds=2, failureThreshold=3
        ),
        "startupProbe": _http_probe(
            "/live", p.health, periodSeconds=1, timeoutSeconds=2, failureThreshold=30
        ),
        "securityContext": hardened(ENVOY_UID),
        "volumeMounts": [{"name": "envoy-bootstrap", "mountPath": BOOTSTRAP_DIR, "readOnly": True}],
    }


def deployment(settings: Settings, build: Build, role: str) -> dict[str, Any]:
    labels = pod_labels(settings, role, build.version)
    cm = bootstrap_configmap(settings, build, role)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the app never calls the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.shutdown.termination_grace_seconds,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [envoy_container(settings, role)],
        "containers": [app_container(settings, build, role)],
        "volumes": [
            {"name": "envoy-bootstrap", "configMap": {"name": cm["metadata"]["name"]}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(
            deployment_name(role, build.version),
            settings.ns,
            deployment_labels(settings, build, role),
            annotations={IMAGE_ANNOTATION: build.image_for(settings)},
        ),
        "spec": {
            "replicas": settings.replicas.get(role, DEFAULT_REPLICAS.get(role, 1)),
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "progressDeadlineSeconds": settings.rollout_deadline_seconds,
            "revisionHistoryLimit": 2,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"kubectl.kubernetes.io/default-container": "app"},
                },
                "spec": pod_spec,
            },
        },
    }


def service(settings: Settings, name: str, version: str | None) -> dict[str, Any]:
    """Service ``name`` selecting build ``version``; ``None``: no selector, no endpoints (a
    ``<role>-new`` Service while no release runs)."""
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "ports": [
            {
                "name": "http",
                "port": 80,
                "targetPort": settings.ports.http,  # the sidecar (a number: named ports are per container)
                "protocol": "TCP",
                "appProtocol": "http",
            }
        ],
    }
    if version is not None:
        spec["selector"] = service_selector(settings, name, version)
    labels = {
        "app": settings.app,
        "role": service_role(name),
        ENV_LABEL: settings.environment,
        **MANAGED_BY,
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, settings.ns, labels),
        "spec": spec,
    }


def ingress(settings: Settings, name: str) -> dict[str, Any]:
    if name not in INGRESSES:
        raise ManifestError(f"unknown ingress {name!r}")
    host = settings.public_host if name == "apigw" else settings.standby_ingress_host
    spec: dict[str, Any] = {}
    if settings.ingress_class:
        spec["ingressClassName"] = settings.ingress_class
    if settings.tls_secret:
        spec["tls"] = [{"hosts": [host], "secretName": settings.tls_secret}]
    spec["rules"] = [
        {
            "host": host,
            "http": {
                "paths": [
                    {
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": name, "port": {"name": "http"}}},
                    }
                ]
            },
        }
    ]
    labels = {"app": settings.app, ENV_LABEL: settings.environment, **MANAGED_BY}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta(name, settings.ns, labels),
        "spec": spec,
    }


# -- whole renders -----------------------------------------------------------------------------


def render_build(settings: Settings, build: Build) -> list[dict[str, Any]]:
    """The objects of one build: per role its bootstrap ConfigMap and its Deployment."""
    settings.check()
    build.check()
    out: list[dict[str, Any]] = []
    for role in ROLES:
        out.append(bootstrap_configmap(settings, build, role))
        out.append(deployment(settings, build, role))
    return out


def render_services(
    settings: Settings, *, current: str | None, new: str | None
) -> list[dict[str, Any]]:
    """The eight Services, pointed at the builds in the slots (``apigw-standby`` selects the new
    build while there is one, else the current one — as on the local runtime)."""
    out = [
        service(settings, "apigw", current),
        service(settings, "apigw-standby", new or current),
    ]
    for slot, version in (("current", current), ("new", new)):
        out += [service(settings, f"{role}-{slot}", version) for role in ROLES]
    return out


def render(settings: Settings, build: Build) -> list[dict[str, Any]]:
    """What ``switchback k8s render`` prints.

    Slot ``current`` (a first deploy): the namespace, the build, all eight Services (``apigw``,
    ``apigw-standby`` and ``<role>-current`` select it; ``<role>-new`` select nothing) and both
    Ingresses. Slot ``new`` (the first steps of a release, for review or a manual release): the
    build and the Services that a release points at it (``apigw-standby``, ``<role>-new``);
    ``apigw`` and ``<role>-current`` are left as they are."""
    settings.check()
    build.check()
    if build.slot == "current":
        return [
            namespace(settings),
            *render_build(settings, build),
            *render_services(settings, current=build.version, new=None),
            *(ingress(settings, name) for name in INGRESSES),
        ]
    return [
        *render_build(settings, build),
        service(settings, "apigw-standby", build.version),
        *(service(settings, f"{role}-new", build.version) for role in ROLES),
    ]


def with_slot(build: Build, slot: str) -> Build:
    return replace(build, slot=slot)


class _Dumper(yaml.SafeDumper):
    """Manifests for people to read: no anchors/aliases (objects share sub-dicts), multi-line
    strings (the bootstrap in its ConfigMap) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump_all(objects: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML, keys in the order written (apiVersion, kind, metadata, spec)."""
    return yaml.dump_all(
        [dict(o) for o in objects], Dumper=_Dumper, sort_keys=False, explicit_start=True
    )
