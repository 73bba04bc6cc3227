"""The controller's own install: its namespace, ServiceAccount, Deployment and Service, and in
every environment's namespace a Role and RoleBinding granting exactly what the Kubernetes
runtime's API calls (``switchback.kubernetes.client``) use — nothing cluster-wide.

The install creates the environments' namespaces itself, so that the controller needs no
permission on namespaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from switchback import __version__
from switchback.kubernetes.manifests import (
    APP_UID,
    DNS_LABEL,
    ENV_LABEL,
    MANAGED_BY,
    ManifestError,
    Resources,
    SecretRef,
    hardened,
    meta,
)


@dataclass(frozen=True)
class Rule:
    group: str  # "" = the core group
    resource: str
    verbs: tuple[str, ...]

    def to_k8s(self) -> dict[str, Any]:
        return {"apiGroups": [self.group], "resources": [self.resource], "verbs": list(self.verbs)}


# Every verb is here because a call of `switchback.kubernetes.client` makes it (the tests run
# every call against the API test double and check that the set of (group, resource, verb) they
# made is exactly this one).
RBAC_RULES: tuple[Rule, ...] = (
    # apply: create, or get + update (replace); wait_rollout: list + watch; set_slot: patch;
    # delete_build: list + delete
    Rule("apps", "deployments", ("get", "list", "watch", "create", "update", "patch", "delete")),
    # apply; point_service: patch (the selector)
    Rule("", "services", ("get", "create", "update", "patch")),
    # apply
    Rule("networking.k8s.io", "ingresses", ("get", "create", "update")),
    # apply (the sidecars' bootstraps); delete_build: list + delete
    Rule("", "configmaps", ("get", "list", "create", "update", "delete")),
    # pods / watch_pods: the sidecars of a build (their node ids for ACKs, IPs for EDS, drain)
    Rule("", "pods", ("list", "watch")),
)

CONTROLLER = "switchback-controller"
CONTROLLER_DB = SecretRef("switchback-controller-db", "url")
CONTROLLER_RESOURCES = Resources("100m", "256Mi", "1", "512Mi")


@dataclass(frozen=True)
class ControllerSettings:
    namespace: str = "switchback-system"
    environments: tuple[str, ...] = ("production",)
    image: str = f"switchback:{__version__}"
    xds_port: int = 18000
    api_port: int = 8080
    database: SecretRef = CONTROLLER_DB
    resources: Resources = CONTROLLER_RESOURCES
    image_pull_secrets: tuple[str, ...] = ()
    extra_labels: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        for ns in (self.namespace, *self.environments):
            if not DNS_LABEL.fullmatch(ns):
                raise ManifestError(f"invalid namespace {ns!r}: a DNS label")
        if not self.environments:
            raise ManifestError("at least one environment is needed")
        if len(set(self.environments)) != len(self.environments):
            raise ManifestError(f"environments repeated: {', '.join(self.environments)}")
        if self.namespace in self.environments:
            raise ManifestError(
                f"the controller's namespace {self.namespace!r} cannot also be an environment"
            )
        for p in (self.xds_port, self.api_port):
            if not 1 <= p <= 65535:
                raise ManifestError(f"port {p} out of range")
        if self.xds_port == self.api_port:
            raise ManifestError("the xDS and API ports must differ")
        self.resources.to_k8s()


def _labels(s: ControllerSettings) -> dict[str, str]:
    return {"app.kubernetes.io/name": CONTROLLER, **MANAGED_BY, **s.extra_labels}


def controller_deployment(s: ControllerSettings) -> dict[str, Any]:
    selector = {"app.kubernetes.io/name": CONTROLLER}
    pod: dict[str, Any] = {
        "serviceAccountName": CONTROLLER,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "controller",
                "image": s.image,
                "imagePullPolicy": "IfNotPresent",
                "command": [
                    "switchback",
                    "controller",
                    "run",
                    "--data",
                    "/var/lib/switchback",
                    "--xds-port",
                    str(s.xds_port),
                    "--admin-port",
                    str(s.api_port),
                ],
                "env": [
                    {
                        "name": "POD_NAMESPACE",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                    },
                    s.database.env("SWITCHBACK_DB"),
                ],
                "ports": [
                    {"name": "xds", "containerPort": s.xds_port, "protocol": "TCP"},
                    {"name": "api", "containerPort": s.api_port, "protocol": "TCP"},
                ],
                "resources": s.resources.to_k8s(),
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": "api"},
                    "periodSeconds": 5,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "api"},
                    "periodSeconds": 10,
                    "failureThreshold": 3,
                },
                "securityContext": hardened(APP_UID),
                "volumeMounts": [
                    {"name": "data", "mountPath": "/var/lib/switchback"},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    if s.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in s.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(CONTROLLER, s.namespace, _labels(s)),
        "spec": {
            "replicas": 1,
            # One controller at a time: it is the xDS server every sidecar follows and the
            # owner of the releases in flight; two would push conflicting routes.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": {**selector, **MANAGED_BY}}, "spec": pod},
        },
    }


def controller_service(s: ControllerSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(CONTROLLER, s.namespace, _labels(s)),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": CONTROLLER},
            "ports": [
                {
                    "name": "xds",
                    "port": s.xds_port,
                    "targetPort": "xds",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": "api",
                    "port": s.api_port,
                    "targetPort": "api",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
            ],
        },
    }


def render_install(s: ControllerSettings) -> list[dict[str, Any]]:
    s.check()
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(s.namespace, None, _labels(s))},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(CONTROLLER, s.namespace, _labels(s)),
        },
        controller_deployment(s),
        controller_service(s),
    ]
    for env in s.environments:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": meta(env, None, {ENV_LABEL: env, **MANAGED_BY}),
            }
        )
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta(CONTROLLER, env, _labels(s)),
                "rules": [r.to_k8s() for r in RBAC_RULES],
            }
        )
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta(CONTROLLER, env, _labels(s)),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": CONTROLLER,
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": CONTROLLER, "namespace": s.namespace}
                ],
            }
        )
    return out
