"""The local runtime: an app's versions as processes with Envoy sidecars on loopback, arranged the
way Kubernetes arranges them, so that a release behaves here as it would there.

- **Instance** = one ``switchback serve --role R`` process + its Envoy sidecar. All traffic to the
  instance enters through the sidecar (inbound listener → local app, or a redirect target).
- **Service** = a named set of endpoints chosen by a selector (role + build), pushed over EDS by
  our control plane. ``apigw`` and ``apigw-standby`` are also real TCP proxies (Envoy
  ``tcp_proxy``), like kube-proxy: a selector change applies to new connections only;
  established connections stay on the instance they reached.
- **Ingress** = an edge Envoy: public port → service ``apigw``, standby port → service
  ``apigw-standby``; it keeps upstream keep-alive connections, as ingress controllers do.

State (ports, pids, selectors) is written to ``runtime.json`` after every change, so a restarted
controller re-adopts live processes and replaces dead ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from switchback import datadir
from switchback.runtime import processes
from switchback.xds.control import AckReport, ControlPlane
from switchback.xds.resources import NodeSpec
from switchback.xds.sidecar import bootstrap_config, envoy_args

log = logging.getLogger("switchback.runtime")

ROLES = ("apigw", "scenario", "transaction")
DEFAULT_REPLICAS = {"apigw": 2, "scenario": 1, "transaction": 1}
VERSION_HEADER = "x-switchback-version"


class RuntimeError_(Exception):
    """A runtime operation failed (a process did not start, a sidecar did not ACK, ...)."""


@dataclass
class Instance:
    id: str
    env: str
    role: str
    build: str
    app_port: int
    sidecar_port: int
    admin_port: int
    outbound_port: int = 0
    app_pid: int | None = None
    envoy_pid: int | None = None
    app_dir: str = ""  # the build's own app (a release deploys another folder beside it)

    @property
    def labels(self) -> dict[str, str]:
        return {"role": self.role, "version": self.build, "environment": self.env}

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sidecar_port)


@dataclass
class Proxy:
    """An Envoy that is not a sidecar: a service's TCP proxy, or the ingress."""

    node_id: str
    port: int
    admin_port: int
    pid: int | None = None
    standby_port: int = 0  # ingress only


@dataclass
class Environment:
    name: str
    app_dir: str
    data_dir: str
    current: str | None = None
    new: str | None = None
    replicas: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_REPLICAS))
    selectors: dict[str, str | None] = field(default_factory=dict)  # service -> build
    instances: list[Instance] = field(default_factory=list)
    proxies: dict[str, Proxy] = field(default_factory=dict)  # "apigw", "apigw-standby", "ingress"

    def of(self, build: str | None, role: str | None = None) -> list[Instance]:
        return [i for i in self.instances if i.build == build and (role is None or i.role == role)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Environment:
        env = cls(**{k: v for k, v in d.items() if k not in ("instances", "proxies")})
        env.instances = [Instance(**i) for i in d.get("instances", [])]
        env.proxies = {k: Proxy(**p) for k, p in d.get("proxies", {}).items()}
        return env


@dataclass
class DrainReport:
    """What a drain found: ``timed_out`` when connections were still there at its limit."""

    timed_out: bool
    seconds: float
    still_connected: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def service_name(env: str, service: str) -> str:
    """The control plane's (cluster-wide) name of an environment's service."""
    return f"{env}.{service}"


def pinned(role: str, build: str) -> str:
    """A service that selects exactly one build of a role: how an instance calls its peers, so
    that apigw of build B always reaches scenario of build B."""
    return f"{role}.{build}"


def _abs(path: str) -> str:
    return os.path.abspath(path)  # string work only: no filesystem access


def check_build(build: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", build):
        raise RuntimeError_(f"invalid version {build!r}: use 1-31 of a-z, 0-9 and '-'")
    return build


class LocalRuntime:
    """Runs environments on this machine. All methods are coroutines of the controller's loop."""

    def __init__(
        self, root: Path, cp: ControlPlane, *, env_vars: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.cp = cp
        self.env_vars = dict(env_vars or {})
        self.state_file = root / "runtime.json"
        self.environments: dict[str, Environment] = {}
        self._lock = asyncio.Lock()

    # -- state ---------------------------------------------------------------------------------

    def load(self) -> None:
        if self.state_file.exists():
            data = json.loads(self.state_file.read_text())
            self.environments = {
                k: Environment.from_dict(v) for k, v in data.get("environments", {}).items()
            }

    def save(self) -> None:
        datadir.write_file(
            self.state_file,
            json.dumps(
                {"environments": {k: e.to_dict() for k, e in self.environments.items()}}, indent=1
            ),
        )

    def env(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise RuntimeError_(f"unknown environment {name!r} (known: {known})") from None

    @property
    def xds_port(self) -> int:
        assert self.cp.port is not None, "control plane not started"
        return self.cp.port

    # -- processes -----------------------------------------------------------------------------

    def _envoy(self, node_id: str, spec: NodeSpec, admin_port: int) -> int:
        workdir = datadir.make_dir(self.root / "envoy" / node_id)
        # The control plane serves this spec (not what the Envoy reports), and only to the holder
        # of these fresh credentials; an earlier certificate of this node id is revoked.
        creds = self.cp.enroll(node_id, spec, workdir / "tls")
        cfg = workdir / "bootstrap.yaml"
        datadir.write_file(
            cfg,
            yaml.safe_dump(
                bootstrap_config(node_id, "127.0.0.1", self.xds_port, spec, admin_port, tls=creds),
                sort_keys=False,
            ),
        )
        return processes.spawn(envoy_args(str(cfg)), workdir / "envoy.log")

    def _enrolled(self, node_id: str) -> bool:
        """Was this node's Envoy spawned with credentials the control plane accepts? An Envoy
        started by a version without xDS credentials cannot reconnect: it is replaced."""
        return self.cp.registered(node_id) is not None

    def _start_instance(self, env: Environment, inst: Instance) -> None:
        outbound = (
            {service_name(env.name, pinned("scenario", inst.build)): inst.outbound_port}
            if inst.outbound_port
            else {}
        )
        spec = NodeSpec(
            kind="sidecar",
            listen_port=inst.sidecar_port,
            app_port=inst.app_port,
            outbound=outbound,
            labels=inst.labels,
        )
        inst.envoy_pid = self._envoy(inst.id, spec, inst.admin_port)
        argv = [
            sys.executable, "-m", "switchback.cli", "serve", inst.app_dir or env.app_dir, "--role", inst.role,
            "--port", str(inst.app_port), "--data", env.data_dir, "--log-level", "info",
        ]  # fmt: skip
        if inst.outbound_port:
            argv += ["--scenario-url", f"http://127.0.0.1:{inst.outbound_port}"]
        penv = {
            **os.environ,
            **self.env_vars,
            "SWITCHBACK_VERSION": inst.build,
            "SWITCHBACK_INSTANCE": inst.id,
        }
        inst.app_pid = processes.spawn(argv, self.root / "logs" / f"{inst.id}.log", env=penv)

    def _start_proxy(self, env: Environment, key: str) -> None:
        p = env.proxies[key]
        if key == "ingress":
            spec = NodeSpec(
                kind="ingress",
                routes={
                    p.port: service_name(env.name, "vip.apigw"),
                    p.standby_port: service_name(env.name, "vip.apigw-standby"),
                },
                labels={"environment": env.name, "role": "ingress"},
            )
        else:
            spec = NodeSpec(
                kind="service-proxy", listen_port=p.port, service=service_name(env.name, key),
                labels={"environment": env.name, "role": f"svc-{key}"},
            )  # fmt: skip
        p.pid = self._envoy(p.node_id, spec, p.admin_port)

    def log_files(self, node_id: str) -> list[Path]:
        """The logs of an instance (its app, then its sidecar) or of a proxy."""
        return [
            p
            for p in (
                self.root / "logs" / f"{node_id}.log",
                self.root / "envoy" / node_id / "envoy.log",
            )
            if p.exists()
        ]

    def explain(self, node_id: str, lines: int = 15) -> str:
        """The last lines of a node's logs, for an error message that says why."""
        parts = []
        for path in self.log_files(node_id):
            tail = processes.tail(path, lines)
            parts.append(f"--- last lines of {path}:\n{tail}" if tail else f"--- {path}: empty")
        return "\n".join(parts)

    async def _wait_http(
        self, url: str, what: str, timeout: float, pids: list[int | None], node_id: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                for pid in pids:
                    processes.reap(pid or 0)
                    if not processes.alive(pid):
                        why = f"{what} exited before it was ready\n{self.explain(node_id or what)}"
                        log.error("not ready: exited", extra={"node": node_id or what})
                        raise RuntimeError_(why)
                if time.monotonic() > deadline:
                    log.error("not ready in time", extra={"node": node_id or what, "url": url})
                    raise RuntimeError_(
                        f"{what} not ready within {timeout:g} s ({url})\n{self.explain(node_id or what)}"
                    )
                await asyncio.sleep(0.05)

    # -- environments --------------------------------------------------------------------------

    async def create_environment(
        self, name: str, app_dir: str, data_dir: str, *, public_port: int = 0, standby_port: int = 0,
        replicas: dict[str, int] | None = None,
    ) -> Environment:  # fmt: skip
        """The environment's ingress and service proxies (no version deployed yet)."""
        async with self._lock:
            if name in self.environments:
                return self.environments[name]
            env = Environment(
                name=name,
                app_dir=_abs(app_dir),
                data_dir=_abs(data_dir),
            )
            if replicas:
                env.replicas.update(replicas)
            for key in ("apigw", "apigw-standby"):
                env.proxies[key] = Proxy(
                    f"{name}.svc.{key}", processes.free_port(), processes.free_port()
                )
            env.proxies["ingress"] = Proxy(
                f"{name}.ingress", public_port or processes.free_port(), processes.free_port(),
                standby_port=standby_port or processes.free_port(),
            )  # fmt: skip
            self.environments[name] = env
            # The ingress reaches each service through its TCP proxy (its "ClusterIP").
            for key in ("apigw", "apigw-standby"):
                await self.cp.set_endpoints(
                    service_name(name, f"vip.{key}"), [("127.0.0.1", env.proxies[key].port)]
                )
            for key in env.proxies:
                self._start_proxy(env, key)
            self.save()
        log.info(
            "environment created",
            extra={"environment": name, "public_port": env.proxies["ingress"].port},
        )
        await self._wait_proxies(env)
        return env

    async def _wait_proxies(self, env: Environment) -> None:
        await asyncio.gather(
            *(
                self._wait_http(
                    f"http://127.0.0.1:{p.admin_port}/ready", f"proxy {key}", 20, [p.pid], p.node_id
                )
                for key, p in env.proxies.items()
            )
        )

    async def _wait_instances(self, instances: list[Instance], timeout: float = 60) -> None:
        await asyncio.gather(
            *(
                self._wait_http(
                    f"http://127.0.0.1:{i.sidecar_port}/readyz",
                    i.id,
                    timeout,
                    [i.app_pid, i.envoy_pid],
                    i.id,
                )
                for i in instances
            )
        )

    async def wait_ready(self, env_name: str, timeout: float = 60) -> None:
        """Every proxy and instance of the environment ready (after a restart by ``adopt``)."""
        env = self.env(env_name)
        await self._wait_proxies(env)
        await self._wait_instances(env.instances, timeout)

    async def remove_environment(self, name: str) -> None:
        """Stop every process of an environment and forget it (a failed ``up`` that created it)."""
        env = self.environments.get(name)
        if env is None:
            return
        await self._stop_all(env)
        async with self._lock:
            self.environments.pop(name, None)
            for node in env.instances:
                self.cp.forget_node(node.id)
            for p in env.proxies.values():
                self.cp.forget_node(p.node_id)
            await self._forget_redirects(name, None)
            self.save()
        log.info("environment removed", extra={"environment": name})

    async def deploy(
        self, env_name: str, build: str, slot: str, app_dir: str | None = None
    ) -> list[Instance]:
        """Start every role of ``build`` (each instance with its sidecar) and wait until all are
        ready through their sidecars. ``slot`` is "current" or "new"."""
        check_build(build)
        async with self._lock:
            env = self.env(env_name)
            if env.of(build):
                raise RuntimeError_(f"version {build!r} is already deployed in {env_name}")
            if app_dir:
                env.app_dir = _abs(app_dir)
            # A rule left for an earlier instance of this build name must not route the new one
            # away from itself (it would never get ready).
            await self._forget_redirects(env_name, build)
            started: list[Instance] = []
            for role in ROLES:
                for n in range(env.replicas.get(role, 1)):
                    inst = Instance(
                        id=f"{env_name}.{role}.{build}.{n}", env=env_name, role=role, build=build,
                        app_port=processes.free_port(), sidecar_port=processes.free_port(),
                        admin_port=processes.free_port(),
                        outbound_port=processes.free_port() if role == "apigw" else 0,
                        app_dir=env.app_dir,
                    )  # fmt: skip
                    env.instances.append(inst)
                    started.append(inst)
            setattr(env, slot, build)
            # Peers first: apigw's sidecar resolves "scenario of my build" through EDS.
            for role in ROLES:
                await self._select(env, pinned(role, build), role, build)
            for inst in started:
                self._start_instance(env, inst)
            self.save()
        log.info(
            "deploying", extra={"environment": env_name, "version": build, "slot": slot,
                                "instances": [i.id for i in started]},
        )  # fmt: skip
        try:
            await self._wait_instances(started)
            report = await self.cp.wait_acked(
                {"environment": env_name, "version": build},
                None,
                timeout=20,
                expect=[i.id for i in started],
            )
            if not report.ok:
                raise RuntimeError_(
                    f"sidecars of {build} did not ACK their config: {report.as_dict()}"
                )
        except BaseException as exc:
            log.error(
                "deploy failed; removing what it started",
                extra={"environment": env_name, "version": build, "error": str(exc)[:500]},
            )
            await self.delete(env_name, build, drain_timeout=0)
            raise
        log.info("deployed", extra={"environment": env_name, "version": build, "slot": slot})
        return started

    async def delete(self, env_name: str, build: str, *, drain_timeout: float = 10.0) -> None:
        """Stop every instance of ``build``: first wait (up to ``drain_timeout``) until their
        sidecars carry no request, then SIGTERM (the apps finish what they hold), then forget
        them, their services and every redirect rule of the build."""
        env = self.env(env_name)
        victims = env.of(build)
        if drain_timeout > 0 and victims:
            await self.drain(victims, drain_timeout, requests_only=True)
        await asyncio.gather(*(asyncio.to_thread(self._stop_instance, i) for i in victims))
        async with self._lock:
            env.instances = [i for i in env.instances if i.build != build]
            for role in ROLES:
                await self._select(env, pinned(role, build), role, None)
            for node in victims:
                self.cp.forget_node(node.id)
            await self._forget_redirects(env_name, build)
            if env.new == build:
                env.new = None
            if env.current == build:
                env.current = None
            self.save()
        log.info("deleted", extra={"environment": env_name, "version": build})

    @staticmethod
    def _stop_instance(inst: Instance) -> None:
        processes.stop(inst.app_pid, timeout=15)
        processes.stop(inst.envoy_pid, timeout=5)
        inst.app_pid = inst.envoy_pid = None

    # -- services ------------------------------------------------------------------------------

    async def _select(self, env: Environment, service: str, role: str, build: str | None) -> int:
        env.selectors[service] = build
        endpoints = [i.endpoint for i in env.of(build, role)] if build else []
        return await self.cp.set_endpoints(service_name(env.name, service), endpoints)

    async def select(
        self, env_name: str, service: str, build: str | None, *, wait: float = 10.0
    ) -> int:
        """Point a service's selector at a build (``None``: no endpoints) and wait until the
        nodes that use it have ACKed. Established connections are not moved (kube-proxy)."""
        role = service.removesuffix("-standby").removesuffix("-current").removesuffix("-new")
        if role not in ROLES:
            raise RuntimeError_(f"unknown service {service!r}")
        async with self._lock:
            env = self.env(env_name)
            version = await self._select(env, service, role, build)
            self.save()
        report = await self.cp.wait_acked({"environment": env_name}, version, timeout=wait)
        if not report.ok:
            raise RuntimeError_(f"selector change of {service} not ACKed: {report.as_dict()}")
        return version

    async def redirect(
        self, env_name: str, role: str, build: str, target: str | None, *, wait: float = 10.0
    ) -> AckReport:
        """Tell the sidecars of ``role``@``build`` to forward every request to service ``target``
        (``None``: serve locally again), and wait for every one of them to ACK."""
        env = self.env(env_name)
        selector = {"environment": env_name, "role": role, "version": build}
        if target is None:
            version = await self.cp.clear_redirect(selector)
        else:
            version = await self.cp.set_redirect(selector, service_name(env_name, target))
        expect = [i.id for i in env.of(build, role)]
        report = await self.cp.wait_acked(selector, version, timeout=wait, expect=expect)
        if not report.ok:
            raise RuntimeError_(
                f"redirect of {role}@{build} not ACKed by every sidecar: {report.as_dict()}"
            )
        return report

    async def _forget_redirects(self, env_name: str, build: str | None) -> None:
        """Drop every redirect rule of ``build`` in the environment (``None``: of every build)."""

        def stale(selector: dict[str, Any]) -> bool:
            return selector.get("environment") == env_name and (
                build is None or selector.get("version") == build
            )

        if await self.cp.remove_redirects(stale) is not None:
            log.info("redirect rules removed", extra={"environment": env_name, "version": build})

    # -- draining ------------------------------------------------------------------------------

    async def sidecar_stats(
        self, inst: Instance, client: httpx.AsyncClient | None = None
    ) -> dict[str, int]:
        if client is None:
            async with httpx.AsyncClient(timeout=2.0) as own:
                return await self.sidecar_stats(inst, own)
        r = await client.get(
            f"http://127.0.0.1:{inst.admin_port}/stats",
            params={"filter": r"^http\.inbound\.downstream_(cx|rq)_active$"},
        )
        out = {}
        for line in r.text.splitlines():
            name, _, value = line.partition(": ")
            out[name.rsplit(".", 1)[-1]] = int(value)
        return out

    async def drain(
        self, instances: list[Instance], timeout: float, *, requests_only: bool = False
    ) -> DrainReport:
        """Ask the sidecars to drain and wait until they report no active downstream connection
        (or no active request, with ``requests_only``), at most ``timeout`` seconds.

        A busy keep-alive connection is closed by Envoy at the end of its next response
        (``--drain-strategy immediate``); an idle one by its client, our own Envoys, whose pools
        close what has been idle for ``UPSTREAM_IDLE_TIMEOUT``. What is still connected at the
        limit is reported (``timed_out``), never passed off as drained."""
        began = time.monotonic()
        deadline = began + timeout
        key = "downstream_rq_active" if requests_only else "downstream_cx_active"

        async def stats(client: httpx.AsyncClient, inst: Instance) -> dict[str, int]:
            try:
                return await self.sidecar_stats(inst, client)
            except httpx.HTTPError:
                return {}  # a sidecar that is gone carries nothing

        async with httpx.AsyncClient(timeout=2.0) as client:
            if not requests_only:

                async def drain_one(inst: Instance) -> None:
                    with contextlib.suppress(httpx.HTTPError):
                        await client.post(
                            f"http://127.0.0.1:{inst.admin_port}/drain_listeners",
                            params={"graceful": ""},
                        )

                await asyncio.gather(*(drain_one(i) for i in instances))
            while True:
                found = await asyncio.gather(*(stats(client, i) for i in instances))
                left = {
                    i.id: st for i, st in zip(instances, found, strict=True) if st.get(key, 0) > 0
                }
                now = time.monotonic()
                if not left or now > deadline:
                    report = DrainReport(
                        timed_out=bool(left), seconds=round(now - began, 3), still_connected=left
                    )
                    level = logging.WARNING if left else logging.INFO
                    log.log(level, "drain", extra={"instances": [i.id for i in instances],
                                                   **report.as_dict()})  # fmt: skip
                    return report
                await asyncio.sleep(0.05)

    # -- adoption ------------------------------------------------------------------------------

    async def adopt(self) -> list[str]:
        """After a controller restart or ``switchback down``: keep live processes, restart dead
        ones (on fresh ports, except the ingress's, which users know), and drop every redirect
        rule that names a build no instance runs any more. Returns what was restarted."""
        restarted = []
        for env in self.environments.values():
            for key, p in env.proxies.items():
                if not processes.alive(p.pid) or not self._enrolled(p.node_id):
                    await asyncio.to_thread(processes.stop, p.pid, 5)  # frees its port
                    if key != "ingress":
                        p.port, p.admin_port = processes.free_port(), processes.free_port()
                    self._start_proxy(env, key)
                    restarted.append(p.node_id)
            for inst in env.instances:
                if not (
                    processes.alive(inst.app_pid)
                    and processes.alive(inst.envoy_pid)
                    and self._enrolled(inst.id)
                ):
                    await asyncio.to_thread(self._stop_instance, inst)
                    inst.app_port, inst.sidecar_port = processes.free_port(), processes.free_port()
                    inst.admin_port = processes.free_port()
                    if inst.outbound_port:
                        inst.outbound_port = processes.free_port()
                    self._start_instance(env, inst)
                    restarted.append(inst.id)
            for service, build in env.selectors.items():
                role = (
                    service.split(".")[0]
                    .removesuffix("-standby")
                    .removesuffix("-current")
                    .removesuffix("-new")
                )
                await self._select(env, service, role, build)
            for key in ("apigw", "apigw-standby"):
                await self.cp.set_endpoints(
                    service_name(env.name, f"vip.{key}"), [("127.0.0.1", env.proxies[key].port)]
                )
            self.save()
        running = {(i.env, i.build) for e in self.environments.values() for i in e.instances}

        def stale(selector: dict[str, Any]) -> bool:
            return (selector.get("environment"), selector.get("version")) not in running

        if await self.cp.remove_redirects(stale) is not None:
            log.info("stale redirect rules removed at start")
        if restarted:
            log.info("restarted", extra={"nodes": restarted})
        return restarted

    async def _stop_all(self, env: Environment) -> None:
        await asyncio.gather(*(asyncio.to_thread(self._stop_instance, i) for i in env.instances))
        for p in env.proxies.values():
            await asyncio.to_thread(processes.stop, p.pid, 5)
            p.pid = None

    async def shutdown(self) -> None:
        """Stop every process of every environment (``switchback down``). The environments are
        remembered (versions, selectors, redirects of a release under way): the next ``up``
        restarts what ran, the same current version on the same public port."""
        for env in list(self.environments.values()):
            await self._stop_all(env)
        self.save()
        log.info("every environment stopped", extra={"environments": sorted(self.environments)})

    # -- status --------------------------------------------------------------------------------

    def urls(self, env_name: str) -> dict[str, str]:
        ing = self.env(env_name).proxies["ingress"]
        return {
            "public": f"http://127.0.0.1:{ing.port}",
            "standby": f"http://127.0.0.1:{ing.standby_port}",
        }

    async def status(self, env_name: str) -> dict[str, Any]:
        env = self.env(env_name)
        instances = []
        for inst in env.instances:
            try:
                stats = await self.sidecar_stats(inst)
            except httpx.HTTPError:
                stats = {}
            instances.append(
                {
                    **asdict(inst),
                    "alive": processes.alive(inst.app_pid) and processes.alive(inst.envoy_pid),
                    **stats,
                }
            )
        redirects = {
            f"{sel.get('role')}@{sel.get('version')}": target
            for sel, target in self.cp.redirects()
            if sel.get("environment") == env_name
        }
        return {
            "environment": env.name,
            "app_dir": env.app_dir,
            "current": env.current,
            "new": env.new,
            "selectors": env.selectors,
            "redirects": redirects,
            "urls": self.urls(env_name),
            "instances": instances,
        }
