"""`switchback k8s ...`: manifests for Kubernetes, the controller's install, a Dockerfile, and
the preStop hook that runs inside the app's pods.

Nothing here talks to a cluster or builds an image: the commands print (or write) files for
`kubectl apply -f -` and `docker build`. See docs/kubernetes.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import typer

from switchback.cli.common import err, fail, load_app_or_fail
from switchback.kubernetes.manifests import (
    APP_RESOURCES,
    DEFAULT_REPLICAS,
    ENVOY_RESOURCES,
    ROLES,
    Build,
    ManifestError,
    Ports,
    Resources,
    SecretRef,
    Settings,
    Shutdown,
    dump_all,
    render,
)

app = typer.Typer(
    help="Kubernetes: manifests of an app (the deck's layout), the controller's install, a "
    "Dockerfile. Prints files only: nothing is applied to a cluster and no image is built here.",
    no_args_is_help=True,
)


def _default_name(app_dir: Path) -> str:
    return app_dir.resolve().name.lower().replace("_", "-")


def _secret(value: str, default_key: str, what: str, optional: bool = False) -> SecretRef:
    name, _, key = value.partition(":")
    if not name:
        raise typer.BadParameter(f"{what}: expected NAME or NAME:KEY, got {value!r}")
    return SecretRef(name, key or default_key, optional=optional)


def _replicas(items: list[str] | None) -> dict[str, int]:
    out = dict(DEFAULT_REPLICAS)
    for item in items or []:
        role, sep, n = item.partition("=")
        if not sep or role not in ROLES or not n.isdigit() or int(n) < 1:
            raise typer.BadParameter(
                f"--replicas: expected ROLE=N with ROLE one of {', '.join(ROLES)} and N >= 1, "
                f"got {item!r}"
            )
        out[role] = int(n)
    return out


def _resources(default: Resources, cpu: str | None, memory: str | None, what: str) -> Resources:
    """``REQUEST[/LIMIT]`` per resource; a side left empty keeps the default."""

    def split(value: str | None, req: str, lim: str) -> tuple[str, str]:
        if value is None:
            return req, lim
        r, _, l_ = value.partition("/")
        return r or req, l_ or lim

    cpu_r, cpu_l = split(cpu, default.cpu_request, default.cpu_limit)
    mem_r, mem_l = split(memory, default.memory_request, default.memory_limit)
    return Resources(cpu_r, mem_r, cpu_l, mem_l)


def _xds(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"--xds: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@app.command("render")
def render_cmd(
    app_dir: Path = typer.Argument(..., help="App folder", exists=True, file_okay=False),
    environment: str = typer.Option(..., "--environment", "-e", help="Environment (namespace)"),
    version: str = typer.Option(..., "--version", help="Build id, e.g. v2 (in object names)"),
    slot: str = typer.Option(
        "current",
        "--slot",
        help="current: a first deploy (namespace, build, all Services, Ingresses); "
        "new: a release's new build and the Services pointed at it (apigw-standby, <role>-new)",
    ),
    image: str | None = typer.Option(
        None,
        "--image",
        help="The app's image [default: APP:VERSION]; build it from "
        "`switchback k8s dockerfile`, pin it by digest (REPO@sha256:...)",
    ),
    envoy_image: str = typer.Option(Settings.envoy_image, "--envoy-image", help="Sidecar image"),
    ingress_class: str | None = typer.Option(
        None, "--ingress-class", help="IngressClass [default: the cluster's default class]"
    ),
    name: str | None = typer.Option(
        None, "--app-name", help="The app's name (label `app`) [default: the folder's name]"
    ),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="[default: the environment's name]"
    ),
    host: str | None = typer.Option(None, "--host", help="Public host [apigw.ENV.DOMAIN]"),
    standby_host: str | None = typer.Option(
        None, "--standby-host", help="Standby host [apigw-standby.ENV.DOMAIN]"
    ),
    domain: str = typer.Option("example.com", "--domain", help="Domain of the default hosts"),
    tls_secret: str | None = typer.Option(None, "--tls-secret", help="TLS Secret of both hosts"),
    replicas: list[str] = typer.Option(
        None, "--replicas", help="ROLE=N (repeatable) [apigw=2, scenario=1, transaction=1]"
    ),
    xds: str = typer.Option(
        f"{Settings.xds_host}:{Settings.xds_port}", "--xds", help="The controller's xDS Service"
    ),
    xds_api: str = typer.Option("sotw", "--xds-api", help="sotw or delta"),
    db_secret: str = typer.Option(
        "switchback-db:url", "--db-secret", help="Secret NAME[:KEY] holding the PostgreSQL URL"
    ),
    tokens_secret: str = typer.Option(
        "switchback-admin-tokens:tokens",
        "--tokens-secret",
        help="Secret NAME[:KEY] with the admin tokens (optional in the pod)",
    ),
    app_cpu: str | None = typer.Option(
        None, "--app-cpu", help="REQUEST\\[/LIMIT] (default 100m/1)"
    ),
    app_memory: str | None = typer.Option(
        None, "--app-memory", help="REQUEST\\[/LIMIT] (default 256Mi/512Mi)"
    ),
    envoy_cpu: str | None = typer.Option(
        None, "--envoy-cpu", help="REQUEST\\[/LIMIT] (default 50m/500m)"
    ),
    envoy_memory: str | None = typer.Option(
        None, "--envoy-memory", help="REQUEST\\[/LIMIT] (default 64Mi/256Mi)"
    ),
    drain_seconds: int = typer.Option(
        Shutdown.drain_seconds, "--drain-seconds", min=0, help="preStop wait after the drain"
    ),
    pull_secret: list[str] = typer.Option(None, "--image-pull-secret", help="Repeatable"),
) -> None:
    """Print an app's manifests for one environment as multi-document YAML (for
    `kubectl apply -f -`). Nothing is applied and no image is built here."""
    load_app_or_fail(app_dir)  # a broken app fails here, not in its pods
    xds_host, xds_port = _xds(xds)
    try:
        settings = Settings(
            app=name or _default_name(app_dir),
            environment=environment,
            namespace=namespace or "",
            envoy_image=envoy_image,
            ingress_class=ingress_class,
            host=host or "",
            standby_host=standby_host or "",
            domain=domain,
            tls_secret=tls_secret,
            replicas=_replicas(replicas),
            app_resources=_resources(APP_RESOURCES, app_cpu, app_memory, "app"),
            envoy_resources=_resources(ENVOY_RESOURCES, envoy_cpu, envoy_memory, "envoy"),
            ports=Ports(),
            shutdown=Shutdown(drain_seconds=drain_seconds),
            xds_host=xds_host,
            xds_port=xds_port,
            xds_api=xds_api,
            database=_secret(db_secret, "url", "--db-secret"),
            admin_tokens=_secret(tokens_secret, "tokens", "--tokens-secret", optional=True),
            image_pull_secrets=tuple(pull_secret or ()),
        )
        objects = render(settings, Build(version, slot, image or ""))
    except ManifestError as exc:
        fail(str(exc))
    print(dump_all(objects), end="")


@app.command("install")
def install_cmd(
    namespace: str = typer.Option(
        "switchback-system", "--namespace", "-n", help="The controller's namespace"
    ),
    environment: list[str] = typer.Option(
        None,
        "--environment",
        "-e",
        help="An environment the controller manages (repeatable) [production]: its namespace, "
        "and a Role + RoleBinding there",
    ),
    image: str | None = typer.Option(None, "--image", help="switchback's image"),
    db_secret: str = typer.Option(
        "switchback-controller-db:url",
        "--db-secret",
        help="Secret NAME[:KEY] with the controller's PostgreSQL URL",
    ),
    pull_secret: list[str] = typer.Option(None, "--image-pull-secret", help="Repeatable"),
) -> None:
    """Print the controller's own install (namespace, ServiceAccount, Deployment with the xDS
    and API ports, Service; per environment a namespace, Role and RoleBinding with only what the
    Kubernetes runtime calls)."""
    from switchback.kubernetes.install import ControllerSettings, render_install

    kw = {"image": image} if image else {}
    try:
        objects = render_install(
            ControllerSettings(
                namespace=namespace,
                environments=tuple(environment or ("production",)),
                database=_secret(db_secret, "url", "--db-secret"),
                image_pull_secrets=tuple(pull_secret or ()),
                **kw,
            )
        )
    except ManifestError as exc:
        fail(str(exc))
    print(dump_all(objects), end="")


@app.command("dockerfile")
def dockerfile_cmd(
    app_dir: Path = typer.Argument(..., help="App folder", exists=True, file_okay=False),
    output: str | None = typer.Option(
        None, "--output", "-o", help="Where to write it ('-': stdout) [APP_DIR/Dockerfile]"
    ),
    python: str = typer.Option("3.11", "--python", help="Python of the base image"),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing Dockerfile"),
) -> None:
    """Write a Dockerfile (and a .dockerignore) for an app build: python slim base, the app's
    locked dependencies (APP_DIR/requirements.lock, switchback pinned in it), the app in /app,
    a non-root user, `switchback serve` as the entrypoint. No image is built here (no container
    engine): build it with `docker build -t IMAGE APP_DIR` where one runs."""
    from switchback.kubernetes.dockerfile import DOCKERIGNORE, plan

    load_app_or_fail(app_dir)
    try:
        p = plan(app_dir, python=python)
    except ManifestError as exc:
        fail(str(exc))
    if output == "-":
        print(p.text, end="")
        return
    target = Path(output) if output else app_dir / "Dockerfile"
    if target.exists() and not force:
        fail(f"{target} exists (use --force to overwrite)")
    target.write_text(p.text, encoding="utf-8")
    ignore = target.parent / ".dockerignore"
    if not ignore.exists():
        ignore.write_text(DOCKERIGNORE, encoding="utf-8")
    err.print(
        f"wrote {target} (dependencies from {p.lock}"
        f"{', hash-checked' if p.hashes else ''}); build it where a container engine runs: "
        f"docker build -t IMAGE {target.parent}"
    )


@app.command("prestop")
def prestop_cmd(
    admin_port: int = typer.Option(15000, "--admin-port", help="The sidecar's Envoy admin port"),
    sleep: float = typer.Option(5.0, "--sleep", min=0, help="Seconds to wait after the drain"),
) -> None:
    """Inside an app pod (its preStop hook): ask the sidecar to drain — each keep-alive
    connection is closed at the end of its next response, new ones are still accepted — then
    wait, so that the pod's endpoint is gone everywhere before the app gets SIGTERM."""
    try:
        r = httpx.post(
            f"http://127.0.0.1:{admin_port}/drain_listeners", params={"graceful": ""}, timeout=2
        )
        if r.status_code != 200:
            err.print(f"envoy drain: HTTP {r.status_code} {r.text.strip()}")
    except httpx.HTTPError as exc:  # no sidecar to drain: still give the endpoint time to go
        err.print(f"envoy drain: {type(exc).__name__}: {exc}")
    # A sleep is the point here: kubelet sends SIGTERM when this hook returns.
    time.sleep(sleep)
