"""The rendered manifests: strictly valid for the three newest Kubernetes minor versions, equal to
the golden files, laid out as the deck says, with pods whose probes, ports and hooks match what
their containers actually serve (cross-checked against the sidecar's bootstrap, which real Envoy
validates)."""

from __future__ import annotations

import difflib
import re
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml
from kubernetes_validate import utils as kv

from switchback.cli import k8s as k8s_cli
from switchback.cli import release as release_cli
from switchback.cli.serve import serve
from switchback.kubernetes.install import RBAC_RULES, ControllerSettings, render_install
from switchback.kubernetes.manifests import (
    ADMIN_CLUSTER,
    APP_CLUSTER,
    BOOTSTRAP_KEY,
    HEALTH_LISTENER,
    Build,
    ManifestError,
    Ports,
    Resources,
    Settings,
    Shutdown,
    dump_all,
    node_labels,
    peer_service,
    render,
    service_names,
    sidecar_bootstrap,
)
from switchback.xds.resources import NodeSpec
from switchback.xds.sidecar import bootstrap_config, find_envoy
from tests.kubernetes.regen import CASES, GOLDEN, produce

ROLES = ("apigw", "scenario", "transaction")


def newest_minors(n: int = 3) -> list[str]:
    minors = {kv.major_minor(v) for v in kv.all_versions()}
    return sorted(minors, key=lambda v: tuple(int(x) for x in v.split(".")))[-n:]


VERSIONS = newest_minors()
RICH = Settings(
    app="provision",
    environment="production",
    ingress_class="nginx",
    tls_secret="tls",
    image_pull_secrets=("regcred",),
)


def everything() -> list[dict[str, Any]]:
    return [
        *render(RICH, Build("v1", "current", "registry.example.com/provision:v1")),
        *render(RICH, Build("v2", "new")),
        *render(Settings(app="provision", environment="staging"), Build("v1")),
        *render_install(ControllerSettings(environments=("production", "staging"))),
    ]


def by(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


# -- strict validation -------------------------------------------------------------------------


def test_the_three_newest_minor_versions_are_checked() -> None:
    assert len(VERSIONS) == 3 and VERSIONS[-1] == kv.major_minor(kv.latest_version())


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_strictly_valid(version: str) -> None:
    problems = []
    # Through YAML, as kubectl would read what `switchback k8s render` prints.
    for obj in yaml.safe_load_all(dump_all(everything())):
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at "
                            f"{'.'.join(map(str, exc.path))}")  # fmt: skip
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("version", VERSIONS)
def test_strict_validation_does_reject_an_unknown_field(version: str) -> None:
    dep = next(o for o in everything() if o["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kv.ValidationError, match="readynessProbe"):
        kv.validate(dep, version, strict=True)


# -- golden files ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    want = (GOLDEN / name).read_text(encoding="utf-8")
    got = produce(CASES[name])
    if got != want:
        diff = "".join(
            difflib.unified_diff(
                want.splitlines(keepends=True),
                got.splitlines(keepends=True),
                f"golden/{name}",
                "rendered now",
            )
        )
        pytest.fail(
            f"the rendered manifests differ from golden/{name}; if intended, run "
            f"`.venv/bin/python -m tests.kubernetes.regen` and review:\n{diff}"
        )


# -- the deck's layout -------------------------------------------------------------------------


def test_a_first_deploy_has_the_decks_objects() -> None:
    objs = render(RICH, Build("v1"))
    assert list(by(objs, "Namespace")) == ["production"]
    assert sorted(by(objs, "Deployment")) == ["apigw-v1", "scenario-v1", "transaction-v1"]
    services = by(objs, "Service")
    assert sorted(services) == sorted(service_names()) == sorted(
        ["apigw", "apigw-standby", "apigw-current", "scenario-current", "transaction-current",
         "apigw-new", "scenario-new", "transaction-new"])  # fmt: skip
    for name, svc in services.items():
        role = name.split("-")[0]
        sel = svc["spec"].get("selector")
        if name.endswith("-new"):
            assert sel is None, name  # no release yet: selects nothing
        else:
            assert sel == {"app": "provision", "role": role, "switchback.io/build": "v1"}, name
    ingresses = by(objs, "Ingress")
    assert sorted(ingresses) == ["apigw", "apigw-standby"]
    for name, ing in ingresses.items():
        assert ing["spec"]["ingressClassName"] == "nginx"
        (path,) = ing["spec"]["rules"][0]["http"]["paths"]
        assert path["backend"]["service"]["name"] == name
    assert {i["spec"]["rules"][0]["host"] for i in ingresses.values()} == {
        "apigw.production.example.com", "apigw-standby.production.example.com"}  # fmt: skip
    assert all(o["metadata"].get("namespace") == "production" for o in objs[1:])


def test_a_new_build_leaves_the_public_service_alone() -> None:
    objs = render(RICH, Build("v2", "new"))
    assert "Namespace" not in {o["kind"] for o in objs} and not by(objs, "Ingress")
    services = by(objs, "Service")
    assert sorted(services) == ["apigw-new", "apigw-standby", "scenario-new", "transaction-new"]
    assert all(s["spec"]["selector"]["switchback.io/build"] == "v2" for s in services.values())
    for dep in by(objs, "Deployment").values():
        assert dep["metadata"]["labels"]["version"] == "new"
    # Both builds coexist: no name in common between their Deployments and ConfigMaps.
    old = {o["metadata"]["name"] for o in render_build_objs("v1")}
    assert not old & {o["metadata"]["name"] for o in objs if o["kind"] != "Service"}


def render_build_objs(version: str) -> list[dict[str, Any]]:
    return [o for o in render(RICH, Build(version)) if o["kind"] in ("Deployment", "ConfigMap")]


# -- pods: what the probes and hooks point at is what the containers serve ---------------------------


@pytest.mark.parametrize("role", ROLES)
def test_pod_of_each_role(role: str) -> None:
    objs = render(RICH, Build("v1", "current", "img@sha256:" + "a" * 64))
    dep = by(objs, "Deployment")[f"{role}-v1"]
    labels = dep["metadata"]["labels"]
    assert {k: labels[k] for k in ("app", "role", "version", "switchback.io/build")} == {
        "app": "provision", "role": role, "version": "current", "switchback.io/build": "v1"}  # fmt: skip
    assert dep["metadata"]["annotations"]["switchback.io/image"] == "img@sha256:" + "a" * 64
    spec = dep["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["replicas"] == {"apigw": 2, "scenario": 1, "transaction": 1}[role]
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    assert "version" not in spec["selector"]["matchLabels"]  # the slot changes; a selector can't
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (envoy,) = pod["initContainers"]
    (app,) = pod["containers"]
    assert envoy["restartPolicy"] == "Always"  # a native sidecar: up before, down after the app
    for c in (envoy, app):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"]
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["allowPrivilegeEscalation"]
        assert c["resources"]["requests"] and c["resources"]["limits"]

    # The sidecar's bootstrap, from the ConfigMap the pod mounts.
    (cm_vol,) = [v for v in pod["volumes"] if "configMap" in v]
    cm = by(objs, "ConfigMap")[cm_vol["configMap"]["name"]]
    assert cm["immutable"] is True
    boot = yaml.safe_load(cm["data"][BOOTSTRAP_KEY])
    md = boot["node"]["metadata"]
    spec_ = NodeSpec.from_metadata(md)
    assert spec_.kind == "sidecar" and spec_.listen_host == "0.0.0.0"
    assert {k: md[k] for k in ("role", "version", "environment")} == node_labels(RICH, role, "v1")
    (health,) = [
        li for li in boot["static_resources"]["listeners"] if li["name"] == HEALTH_LISTENER
    ]
    health_port = health["address"]["socket_address"]["port_value"]
    routes = health["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    paths = {r["match"]["path"] for r in routes["virtual_hosts"][0]["routes"]}
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    admin_port = boot["admin"]["address"]["socket_address"]["port_value"]

    def port_of(cluster: str) -> int:
        ep = clusters[cluster]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        return ep["endpoint"]["address"]["socket_address"]["port_value"]

    assert port_of(ADMIN_CLUSTER) == admin_port and port_of(APP_CLUSTER) == spec_.app_port
    # The app listens where the sidecar sends (local-app) and the health route reaches.
    cmd = app["command"]
    assert cmd[:4] == ["switchback", "serve", "/app", "--role"] and cmd[4] == role
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert int(cmd[cmd.index("--port") + 1]) == spec_.app_port
    # Probes: readiness through the inbound listener (xDS-configured), the rest through the
    # static health listener, on paths it routes.
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": spec_.listen_port}
    for probe in (app["livenessProbe"], app["startupProbe"], envoy["readinessProbe"],
                  envoy["livenessProbe"], envoy["startupProbe"]):  # fmt: skip
        assert probe["httpGet"]["port"] == health_port and probe["httpGet"]["path"] in paths
    assert envoy["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {p["containerPort"] for p in envoy["ports"]} == {spec_.listen_port, health_port}
    # The preStop drains this pod's own sidecar, through its admin port.
    pre = app["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[:3] == ["switchback", "k8s", "prestop"]
    assert int(pre[pre.index("--admin-port") + 1]) == admin_port
    sd = Shutdown()
    assert int(pre[pre.index("--sleep") + 1]) == sd.drain_seconds
    assert pod["terminationGracePeriodSeconds"] > sd.drain_seconds + sd.app_grace_seconds
    # Envoy: the node id from the pod's name (downward API), drain long enough for the app.
    args = envoy["args"]
    assert args[args.index("--service-node") + 1] == "$(POD_NAMESPACE).$(POD_NAME)"
    assert int(args[args.index("--drain-time-s") + 1]) >= sd.drain_seconds + sd.app_grace_seconds
    env_names = {e["name"]: e for e in envoy["env"]}
    assert env_names["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # The app: PostgreSQL from a Secret; apigw calls scenario of its build through its sidecar.
    app_env = {e["name"]: e for e in app["env"]}
    assert app_env["SWITCHBACK_DB"]["valueFrom"]["secretKeyRef"] == {"name": "switchback-db",
                                                                    "key": "url"}  # fmt: skip
    if role == "apigw":
        url = app_env["SWITCHBACK_SCENARIO_URL"]["value"]
        assert url == f"http://127.0.0.1:{spec_.outbound[peer_service(RICH, 'v1')]}"
    else:
        assert "SWITCHBACK_SCENARIO_URL" not in app_env and not spec_.outbound


def test_the_bootstrap_is_the_projects_own_plus_the_health_listener() -> None:
    """Whatever ``bootstrap_config`` grows (TLS to the control plane...) is in the ConfigMap."""
    boot = sidecar_bootstrap(RICH, "apigw", "v1")
    p = RICH.ports
    own = bootstrap_config(
        "production.apigw-v1", RICH.xds_host, RICH.xds_port,
        NodeSpec.from_metadata(boot["node"]["metadata"]), admin_port=p.envoy_admin,
        cluster="apigw", xds_api=RICH.xds_api,
    )  # fmt: skip
    static = boot["static_resources"]
    added = [c for c in static["clusters"] if c["name"] not in {ADMIN_CLUSTER, APP_CLUSTER}]
    assert {**boot, "static_resources": {**static, "clusters": added,
            "listeners": [li for li in static["listeners"] if li["name"] != HEALTH_LISTENER]}} == {
        **own, "static_resources": {**own["static_resources"], "listeners": []}}  # fmt: skip


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """``$(VAR)`` as the kubelet expands it in a container's args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], a) for a in args]


@pytest.mark.parametrize("role", ROLES)
def test_real_envoy_accepts_the_bootstrap_with_the_pods_args(role: str, tmp_path: Path) -> None:
    objs = render(RICH, Build("v1"))
    dep = by(objs, "Deployment")[f"{role}-v1"]
    (envoy,) = dep["spec"]["template"]["spec"]["initContainers"]
    (cm_vol,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    cfg = tmp_path / BOOTSTRAP_KEY
    cfg.write_text(by(objs, "ConfigMap")[cm_vol["configMap"]["name"]]["data"][BOOTSTRAP_KEY])
    args = expand(envoy["args"], {"POD_NAMESPACE": "production", "POD_NAME": f"{role}-v1-x-y"})
    args[args.index("--config-path") + 1] = str(cfg)
    r = subprocess.run(
        [find_envoy(), "--mode", "validate", *args], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def parses(app: typer.Typer, args: list[str]) -> None:
    """The real CLI accepts these arguments (parsed, not run): a renamed or removed option
    fails here instead of in a pod."""
    cmd = typer.main.get_command(app)
    args = list(args)
    if isinstance(cmd, click.Group):
        name = args.pop(0)
        sub = cmd.get_command(click.Context(cmd), name)
        assert sub is not None, f"no command {name!r}"
        cmd = sub
    elif args and args[0] == cmd.name:  # a one-command Typer is that command
        args.pop(0)
    cmd.make_context(cmd.name or "switchback", args)


def test_the_commands_in_the_manifests_are_the_clis(tmp_path: Path) -> None:
    objs = [*render(RICH, Build("v1")), *render_install(ControllerSettings())]
    for dep in by(objs, "Deployment").values():
        for c in dep["spec"]["template"]["spec"]["containers"]:
            cmd = list(c["command"])
            assert cmd[0] == "switchback"
            if cmd[1] == "serve":
                one = typer.Typer()
                one.command()(serve)
                cmd[2] = str(tmp_path)  # /app exists in the image, not here
                parses(one, cmd[2:])
                pre = c["lifecycle"]["preStop"]["exec"]["command"]
                parses(k8s_cli.app, pre[2:])
            else:
                assert cmd[1:3] == ["controller", "run"]
                parses(release_cli.controller_app, cmd[2:])


# -- the controller's install ----------------------------------------------------------------------


def test_install_grants_only_the_rules_in_the_environments() -> None:
    objs = render_install(ControllerSettings(environments=("production", "staging")))
    assert {o["kind"] for o in objs} == {
        "Namespace", "ServiceAccount", "Deployment", "Service", "Role", "RoleBinding"}  # fmt: skip
    assert not [o for o in objs if o["kind"].startswith("Cluster")]  # nothing cluster-wide
    roles = [o for o in objs if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["production", "staging"]
    for role in roles:
        assert role["rules"] == [r.to_k8s() for r in RBAC_RULES]
        assert all("*" not in v for r in role["rules"] for v in r["verbs"] + r["resources"])
    for rb in (o for o in objs if o["kind"] == "RoleBinding"):
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "switchback-controller",
                                   "namespace": "switchback-system"}]  # fmt: skip
    dep = by(objs, "Deployment")["switchback-controller"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert {p["name"] for p in c["ports"]} == {"xds", "api"}
    assert {e["name"]: e for e in c["env"]}["SWITCHBACK_DB"]["valueFrom"]["secretKeyRef"][
        "name"] == "switchback-controller-db"  # fmt: skip
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    svc = by(objs, "Service")["switchback-controller"]
    xds = next(p for p in svc["spec"]["ports"] if p["name"] == "xds")
    # The sidecars' bootstraps point at this Service by default.
    assert RICH.xds_host == "switchback-controller.switchback-system.svc"
    assert xds["port"] == RICH.xds_port


# -- bad input: each kind gets a clear error ---------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "build", "message"),
    [
        (Settings(app="Bad_App", environment="p"), Build("v1"), "invalid app name"),
        (Settings(app="a", environment="prod!"), Build("v1"), "invalid environment"),
        (Settings(app="a", environment="p", namespace="-x"), Build("v1"), "invalid namespace"),
        (Settings(app="a", environment="p"), Build("V1"), "invalid version"),
        (Settings(app="a", environment="p"), Build("v1", "old"), "unknown slot"),
        (Settings(app="a", environment="p", replicas={"web": 1}), Build("v1"), "unknown role"),
        (Settings(app="a", environment="p", replicas={"apigw": 0}), Build("v1"), "at least 1"),
        (Settings(app="a", environment="p", ports=Ports(http=8080)), Build("v1"), "distinct"),
        (Settings(app="a", environment="p", ports=Ports(health=70000)), Build("v1"), "range"),
        (Settings(app="a", environment="p", xds_api="v2"), Build("v1"), "unknown xDS API"),
        (Settings(app="a", environment="p", app_resources=Resources("lots")), Build("v1"),
         "not a Kubernetes quantity"),
        (Settings(app="a", environment="p", host="h", standby_host="h"), Build("v1"),
         "different hosts"),
        (Settings(app="a", environment="p", shutdown=Shutdown(-1)), Build("v1"), "negative"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused(settings: Settings, build: Build, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        render(settings, build)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (ControllerSettings(environments=()), "at least one"),
        (ControllerSettings(environments=("a", "a")), "repeated"),
        (ControllerSettings(environments=("switchback-system",)), "cannot also be"),
        (ControllerSettings(xds_port=8080), "must differ"),
        (ControllerSettings(namespace="Sys"), "invalid namespace"),
    ],
)
def test_bad_install_settings_are_refused(settings: ControllerSettings, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        render_install(settings)
