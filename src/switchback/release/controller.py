"""The controller: our xDS control plane, the local runtime and the engine that runs release
transactions, in one process, with a small JSON API that the CLI talks to.

Started in the background by ``switchback up``; its address and token are in
``<data>/controller.json`` (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from switchback import datadir
from switchback.engine import (
    DecisionRefused,
    Engine,
    EngineError,
    RequestInvalid,
    UnknownTransaction,
)
from switchback.engine.errors import Busy, LockTimeout
from switchback.release import scenario as release_scenario
from switchback.release.scenario import (
    POINT_OF_NO_RETURN,
    RELEASE,
    RELEASE_WITH_APPROVAL,
    RELEASE_WITH_APPROVAL_BEFORE_SWITCH,
    release_app,
)
from switchback.runtime.local import LocalRuntime, RuntimeError_
from switchback.runtime.processes import free_port
from switchback.store import open_store
from switchback.store.records import COMPLETED, FINAL, ROLLING_BACK, RUNNING, TxRecord
from switchback.xds.control import ControlPlane
from switchback.xds.pki import Authority

log = logging.getLogger("switchback.controller")


def info_path(data: Path) -> Path:
    return data / "controller.json"


def read_info(data: Path) -> dict[str, Any] | None:
    try:
        return json.loads(info_path(data).read_text())
    except (OSError, ValueError):
        return None


class Controller:
    def __init__(self, data: Path, *, admin_port: int = 0, xds_port: int = 0) -> None:
        self.data = datadir.make_dir(data.resolve())
        previous = read_info(self.data) or {}
        self.admin_port = admin_port or previous.get("admin_port") or free_port()
        # The same xDS port after a restart: running sidecars reconnect to it.
        self.xds_port = xds_port or previous.get("xds_port") or free_port()
        self.token = previous.get("token") or secrets.token_urlsafe(24)
        # The apps' admin token, handed to every instance (the controller calls their API).
        self.app_token = previous.get("app_token") or secrets.token_urlsafe(24)
        # Envoys prove their node id with a certificate from this CA (mutual TLS); the CA, the
        # registered nodes and their pinned certificates survive a restart, so running
        # sidecars reconnect to the restarted controller.
        self.cp = ControlPlane(
            state_file=self.data / "xds-state.json", authority=Authority(self.data / "xds-ca")
        )
        # The apps accept the operator's tokens (if any) and the controller's own.
        tokens = ",".join(
            t
            for t in (os.environ.get("SWITCHBACK_ADMIN_TOKENS"), f"controller={self.app_token}")
            if t
        )
        self.runtime = LocalRuntime(
            self.data / "runtime", self.cp, env_vars={"SWITCHBACK_ADMIN_TOKENS": tokens}
        )
        self.engine = Engine(release_app(), open_store(self.data / "controller"))
        self._stop = asyncio.Event()
        self._background: set[asyncio.Future[Any]] = set()  # aborts under way
        self._aborting: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        log.info(
            "controller starting",
            extra={"pid": os.getpid(), "data": str(self.data), "admin_port": self.admin_port,
                   "xds_port": self.xds_port},
        )  # fmt: skip
        await self.cp.start("127.0.0.1", self.xds_port)
        datadir.make_dir(self.runtime.root)
        self.runtime.load()
        await self.runtime.adopt()
        release_scenario.RUNTIME = self.runtime
        await self.engine.open()
        server = uvicorn.Server(
            uvicorn.Config(
                self.api(),
                host="127.0.0.1",
                port=self.admin_port,
                log_level="warning",
                lifespan="off",
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                await serving  # raises the bind error
            await asyncio.sleep(0.01)
        self._write_info()
        log.info("controller ready", extra={"url": f"http://127.0.0.1:{self.admin_port}"})
        taken = await self.engine.recover()  # a release interrupted by a controller crash goes on
        if taken:
            log.info("releases recovered", extra={"xids": taken})
        sweeper = asyncio.create_task(self.engine.sweep_forever(2.0))
        await self._stop.wait()
        server.should_exit = True
        await serving
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await self.engine.close()
        await self.cp.stop(1.0)
        info_path(self.data).unlink(missing_ok=True)
        log.info("controller stopped")

    def _write_info(self) -> None:
        datadir.write_file(
            info_path(self.data),
            json.dumps(
                {"pid": os.getpid(), "admin_port": self.admin_port, "xds_port": self.xds_port,
                 "token": self.token, "app_token": self.app_token, "url": f"http://127.0.0.1:{self.admin_port}"},
            ),
            secret=True,
        )  # fmt: skip

    # -- API -----------------------------------------------------------------------------------

    def api(self) -> Starlette:
        def guard(handler: Any) -> Any:
            async def wrapped(request: Request) -> JSONResponse:
                given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(given.encode(), self.token.encode()):
                    log.warning("refused: missing or wrong token", extra={"path": request.url.path})
                    return JSONResponse({"error": "missing or wrong controller token"}, 401)
                try:
                    response = await handler(request)
                except Exception as exc:
                    log.warning(
                        "request failed",
                        extra={"method": request.method, "path": request.url.path,
                               "error": f"{type(exc).__name__}: {exc}"[:2000]},
                    )  # fmt: skip
                    return refused(exc)
                return response

            return wrapped

        def refused(exc: Exception) -> JSONResponse:
            if isinstance(exc, (json.JSONDecodeError, ValueError)):
                return JSONResponse({"error": f"bad request: {exc}"}, 400)
            if isinstance(exc, RequestInvalid):
                return JSONResponse(
                    {
                        "error": "request does not match the schema",
                        "detail": {"violations": exc.violations},
                    },
                    422,
                )
            if isinstance(exc, UnknownTransaction):
                return JSONResponse({"error": str(exc)}, 404)
            if isinstance(exc, (DecisionRefused, LockTimeout, RuntimeError_)):
                return JSONResponse({"error": str(exc)}, 409)
            if isinstance(exc, EngineError):
                return JSONResponse({"error": str(exc)}, 400)
            log.error("internal error", exc_info=exc)
            return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

        async def body(request: Request) -> dict[str, Any]:
            raw = await request.body()
            data = json.loads(raw) if raw else {}
            if not isinstance(data, dict):
                raise ValueError("a JSON object is expected")
            return data

        async def healthz(request: Request) -> JSONResponse:
            return JSONResponse({"ok": True, "pid": os.getpid()})

        async def status(request: Request) -> JSONResponse:
            envs = {name: await self.runtime.status(name) for name in self.runtime.environments}
            page, _ = await self.engine.list(limit=int(request.query_params.get("limit", 10)))
            releases = [self._release_summary(await self.engine.get(t.xid)) for t in page]
            return JSONResponse(
                {"environments": envs, "releases": releases, "xds_nodes": len(self.cp.nodes())}
            )

        async def create_env(request: Request) -> JSONResponse:
            d = await body(request)
            name, version, app_dir = (
                d.get("environment", "production"),
                d.get("version", "v1"),
                d.get("app_dir"),
            )
            if not app_dir:
                raise ValueError("app_dir is required")
            data_dir = d.get("data_dir") or str(self.data / "apps" / name)
            public_port = int(d.get("public_port") or 0)
            created = name not in self.runtime.environments
            try:
                env = await self.runtime.create_environment(
                    name, app_dir, data_dir, public_port=public_port,
                    standby_port=int(d.get("standby_port") or 0), replicas=d.get("replicas"),
                )  # fmt: skip
                ingress = env.proxies["ingress"].port
                if public_port and public_port != ingress:
                    raise RuntimeError_(
                        f"{name} already exists with its public port {ingress} (not {public_port}): "
                        f"start it on {ingress}, or remove it with `switchback down --forget`"
                    )
                if env.current is None:
                    await self.runtime.deploy(name, version, "current", app_dir)
                    for svc in (
                        "apigw",
                        "apigw-standby",
                        "apigw-current",
                        "scenario-current",
                        "transaction-current",
                    ):
                        await self.runtime.select(name, svc, version)
                else:
                    # Restarted by adopt() (after `down` or a crash): what ran before runs again.
                    await self.runtime.wait_ready(name)
            except BaseException:
                if created:  # a failed `up` leaves nothing of what it started
                    await self.runtime.remove_environment(name)
                raise
            log.info("environment up", extra={"environment": name, "current": env.current,
                                              **self.runtime.urls(name)})  # fmt: skip
            return JSONResponse(
                {"environment": name, "current": env.current, "app_dir": env.app_dir,
                 "restarted": not created, **self.runtime.urls(name)}
            )  # fmt: skip

        async def start_release(request: Request) -> JSONResponse:
            d = await body(request)
            approval = d.pop("approval", False)
            wait = bool(d.pop("wait", False))
            d.setdefault("environment", "production")
            names = {False: RELEASE, None: RELEASE, True: RELEASE_WITH_APPROVAL, "redirect": RELEASE_WITH_APPROVAL,
                     "switch": RELEASE_WITH_APPROVAL_BEFORE_SWITCH}  # fmt: skip
            if approval not in names:
                raise ValueError("approval must be true, false, 'redirect' or 'switch'")
            name = names[approval]
            actor = str(d.pop("actor", None) or "cli")
            tx = await self.engine.start(name, d, actor=actor)
            log.info("release started", extra={"xid": tx.xid, "environment": d["environment"],
                                               "version": d.get("version"), "actor": actor})  # fmt: skip
            if wait:
                tx = await self.engine.wait(tx.xid)
            return JSONResponse(self._release_detail(tx), 200 if wait else 202)

        async def get_release(request: Request) -> JSONResponse:
            return JSONResponse(self._release_detail(await self._find(request)))

        async def decide(request: Request) -> JSONResponse:
            tx = await self._find(request)
            action = request.path_params["action"]
            d = await body(request)
            actor, reason = str(d.get("actor") or "cli"), d.get("reason")
            wait = bool(d.get("wait", True))
            if action == "approve":
                tx = await self.engine.signal(
                    tx.xid, "approval", {"approved": True}, actor=actor, reason=reason, wait=wait
                )
            elif action in ("reject", "abort"):
                if tx.status == RUNNING and self.engine.is_running_here(tx.xid):
                    return await self._abort_running(tx, action, actor, reason, wait)
                self._refuse_past_point_of_no_return(tx)
                tx = await self.engine.rollback(
                    tx.xid, actor=actor, reason=reason or action, wait=wait
                )
            elif action == "rollforward":
                tx = await self.engine.rollforward(tx.xid, actor=actor, reason=reason, wait=wait)
            else:
                return JSONResponse({"error": f"unknown action {action!r}"}, 404)
            log.info("decision", extra={"xid": tx.xid, "action": action, "actor": actor,
                                        "status": tx.status})  # fmt: skip
            return JSONResponse(self._release_detail(tx))

        async def deploy(request: Request) -> JSONResponse:
            """Low-level: start a build beside the current one (no traffic). For benchmarks and
            tests of the naive switch; a release does this as its first step."""
            d = await body(request)
            name = request.path_params["env"]
            instances = await self.runtime.deploy(name, str(d["version"]), "new", d.get("app_dir"))
            return JSONResponse({"instances": [i.id for i in instances]})

        async def select(request: Request) -> JSONResponse:
            """Low-level: point one service's selector at a build, nothing else — the naive
            switch the seed describes (established connections stay where they are)."""
            d = await body(request)
            version = await self.runtime.select(
                request.path_params["env"], str(d["service"]), d.get("version")
            )
            return JSONResponse({"xds_version": version})

        async def nodes(request: Request) -> JSONResponse:
            from switchback.xds.admin import parse_selector

            # The same query as the standalone admin API's (`switchback xds status -s ...`).
            selector = parse_selector(request.query_params.get("selector"))
            return JSONResponse({"nodes": self.cp.nodes(selector)})

        async def shutdown(request: Request) -> JSONResponse:
            d = await body(request)
            log.info("shutdown requested", extra={"forget": bool(d.get("forget"))})
            await self.runtime.shutdown()
            if d.get("forget"):
                for name in list(self.runtime.environments):
                    await self.runtime.remove_environment(name)
            self._stop.set()
            return JSONResponse({"stopped": True})

        routes = [
            Route("/healthz", healthz),
            Route("/status", guard(status)),
            Route("/environments", guard(create_env), methods=["POST"]),
            Route("/releases", guard(start_release), methods=["POST"]),
            Route("/releases/{xid}", guard(get_release)),
            Route("/releases/{xid}/{action}", guard(decide), methods=["POST"]),
            Route("/environments/{env}/deploy", guard(deploy), methods=["POST"]),
            Route("/environments/{env}/select", guard(select), methods=["POST"]),
            Route("/xds/nodes", guard(nodes)),
            Route("/shutdown", guard(shutdown), methods=["POST"]),
        ]
        return Starlette(routes=routes)

    @staticmethod
    def _refuse_past_point_of_no_return(tx: TxRecord) -> None:
        past = [b for b in tx.blocks if b.name == POINT_OF_NO_RETURN and b.status != "pending"]
        if past and tx.status not in FINAL:
            raise DecisionRefused(
                tx.xid,
                f"the release is past the point of no return ({POINT_OF_NO_RETURN}); roll it forward",
                tx.status,
            )

    async def _abort_running(
        self, tx: TxRecord, action: str, actor: str, reason: str | None, wait: bool
    ) -> JSONResponse:
        """Abort a release that is running: it stops at the next safe point — a smoke test is
        stopped, any other step finishes and the next one does not start (the engine's pause) —
        and is then rolled back. Refused from the point of no return on."""
        self._refuse_past_point_of_no_return(tx)
        step = tx.blocks[tx.cursor].name
        note = (
            f"the release was running ({step}): the {action} takes effect at the next safe point "
            f"({'the smoke test is stopped' if step == 'smoke' else f'once {step} ends'}), "
            "then the release is rolled back"
        )
        log.info(f"{action} of a running release", extra={"xid": tx.xid, "step": step,
                                                          "actor": actor})  # fmt: skip
        self._aborting.add(tx.xid)  # before the answer: a client that follows sees it at once
        task = asyncio.ensure_future(self._pause_then_rollback(tx.xid, action, actor, reason))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(self._abort_ended)
        if not wait:
            return JSONResponse({**self._release_detail(tx), "note": note}, 202)
        try:
            done = await asyncio.shield(task)
        except DecisionRefused as exc:
            return JSONResponse({"error": str(exc), "note": note}, 409)
        return JSONResponse({**self._release_detail(done), "note": note})

    @staticmethod
    def _abort_ended(task: asyncio.Future[TxRecord]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("abort not done", extra={"error": f"{type(exc).__name__}: {exc}"})

    async def _pause_then_rollback(
        self, xid: str, action: str, actor: str, reason: str | None
    ) -> TxRecord:
        why = reason or action
        release_scenario.request_abort(xid)
        try:
            tx = await self.engine.pause(xid, actor=actor, reason=f"{action}: {why}", wait=True)
            while tx.status in (RUNNING, ROLLING_BACK) and self.engine.is_running_here(xid):
                tx = await self.engine.wait(xid)
            if tx.status == COMPLETED:
                raise DecisionRefused(xid, f"the release completed before the {action} took effect")
            past = any(b.name == POINT_OF_NO_RETURN and b.status != "pending" for b in tx.blocks)
            if past:
                # It passed the point of no return before the pause took hold: it goes on.
                await self.engine.rollforward(
                    xid, actor=actor, reason=f"{action} came after {POINT_OF_NO_RETURN}", wait=False
                )
                raise DecisionRefused(
                    xid,
                    f"the release passed the point of no return ({POINT_OF_NO_RETURN}) before the "
                    f"{action} took effect; it goes on",
                )
            for _ in range(50):
                try:
                    return await self.engine.rollback(xid, actor=actor, reason=why, wait=True)
                except Busy:
                    # Parked at a wait block as the pause came: the engine parks it in the
                    # background (its claim is short); then the rollback applies.
                    await self.engine.wait(xid, 0.1)
            return await self.engine.rollback(xid, actor=actor, reason=why, wait=True)
        finally:
            release_scenario.abort_done(xid)
            self._aborting.discard(xid)

    async def _find(self, request: Request) -> TxRecord:
        """``latest`` (optionally ``?environment=``) means the newest release, if any."""
        xid = request.path_params["xid"]
        if xid != "latest":
            return await self.engine.get(xid)
        env = request.query_params.get("environment", "production")
        cursor = None
        while True:
            page, cursor = await self.engine.list(limit=50, cursor=cursor)
            for t in page:
                full = await self.engine.get(t.xid)
                if full.request.get("environment") == env:
                    return full
            if not cursor:
                raise UnknownTransaction(f"latest release of {env}")

    @staticmethod
    def _release_summary(tx: TxRecord) -> dict[str, Any]:
        """What a list of releases shows: the versions, from → to (the old one is known once
        ``deploy_new`` has run), and the step it is at."""
        request = tx.request if isinstance(tx.request, dict) else {}
        deployed = next((b.output for b in tx.blocks if b.name == "deploy_new"), None)
        step = tx.blocks[tx.cursor].name if tx.cursor < len(tx.blocks) else None
        return {"xid": tx.xid, "scenario": tx.scenario, "status": tx.status, "reason": tx.reason,
                "created_at": tx.created_at, "cursor": tx.cursor, "step": step,
                "environment": request.get("environment"), "to": request.get("version"),
                "from": deployed.get("old") if isinstance(deployed, dict) else None,
                "warnings": release_scenario.warnings([b.to_dict() for b in tx.blocks])}  # fmt: skip

    def _release_detail(self, tx: TxRecord) -> dict[str, Any]:
        d = tx.to_dict()
        # An abort of this running release is under way (it parks, then rolls back).
        d["aborting"] = tx.xid in self._aborting
        d["step"] = d["current_block"]
        d["warnings"] = release_scenario.warnings(d["blocks"])
        return d
