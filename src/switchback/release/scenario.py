"""The built-in ``release`` scenario. Each block is one step of the make-before-break cutover
(design.md "The cutover, in order") with its UNDO, so aborting a release is rolling back its
transaction, and a failed step parks the release like any transaction.

Blocks reach the runtime through :data:`RUNTIME`, set by the controller that runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

from switchback.engine import BlockContext
from switchback.model import App, Scenario, scenario
from switchback.runtime.local import ROLES, LocalRuntime, pinned

RELEASE = "release"
RELEASE_WITH_APPROVAL = "release_with_approval"  # approval before the redirect (the default)
RELEASE_WITH_APPROVAL_BEFORE_SWITCH = "release_with_approval_before_switch"
# Blocks from which an abort (rollback) is refused: draining stops the old sidecars' listeners.
POINT_OF_NO_RETURN = "drain_old"

RUNTIME: LocalRuntime | None = None

# Releases being aborted, and the smoke tests running now: the smoke test is the one step that
# can stop in its middle with nothing to undo. Every other step finishes, and the release parks
# before the next one (the engine's pause).
_ABORTING: set[str] = set()
_SMOKES: dict[str, asyncio.Event] = {}


def request_abort(xid: str) -> bool:
    """An abort of release ``xid`` is under way: its smoke test stops (now, or at once if it
    starts later). True if a running smoke test was told to stop."""
    _ABORTING.add(xid)
    event = _SMOKES.get(xid)
    if event is not None:
        event.set()
    return event is not None


def abort_done(xid: str) -> None:
    _ABORTING.discard(xid)


REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["environment", "version"],
    "properties": {
        "environment": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,30}$"},
        "version": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,30}$"},
        "app_dir": {"type": "string"},
        "smoke": {"type": ["string", "null"]},
        "smoke_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 300},
        "drain_timeout": {"type": "number", "minimum": 0, "default": 30},
        "ack_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 10},
    },
}


def rt() -> LocalRuntime:
    if RUNTIME is None:
        raise RuntimeError("no runtime: release blocks run inside the controller")
    return RUNTIME


def _req(ctx: BlockContext) -> tuple[str, str, str]:
    """environment, new version, old version."""
    return ctx.request["environment"], ctx.request["version"], ctx.outputs["deploy_new"]["old"]


def _ack(ctx: BlockContext) -> float:
    return float(ctx.request.get("ack_timeout", 10))


# -- 1. deploy new / delete new ---------------------------------------------------------------


async def deploy_new(ctx: BlockContext) -> dict[str, Any]:
    env_name, version = ctx.request["environment"], ctx.request["version"]
    env = rt().env(env_name)
    old = env.current
    if old is None:
        raise RuntimeError(f"nothing is deployed in {env_name}: run `switchback up` first")
    if version == old:
        raise RuntimeError(f"{version} is already the current version of {env_name}")
    if env.new and env.new != version:
        raise RuntimeError(f"{env.new} is already being released to {env_name}")
    if not env.of(version):  # idempotent: a re-run after a crash finds its instances
        await rt().deploy(env_name, version, "new", ctx.request.get("app_dir"))
    return {"old": old, "new": version, "instances": [i.id for i in env.of(version)]}


async def delete_new(ctx: BlockContext) -> dict[str, Any]:
    env_name, version = ctx.request["environment"], ctx.request["version"]
    env = rt().env(env_name)
    report = await rt().drain(env.of(version), float(ctx.request.get("drain_timeout", 30)))
    await rt().delete(env_name, version, drain_timeout=0)
    return {"deleted": version, **report.as_dict()}


# -- 2. standby → new ----------------------------------------------------------------------------


async def point_standby(ctx: BlockContext) -> dict[str, Any]:
    env_name, version, _ = _req(ctx)
    for role in ROLES:
        await rt().select(env_name, f"{role}-new", version, wait=_ack(ctx))
    await rt().select(env_name, "apigw-standby", version, wait=_ack(ctx))
    return {"standby": rt().urls(env_name)["standby"]}


async def point_standby_back(ctx: BlockContext) -> None:
    env_name, _, old = _req(ctx)
    await rt().select(env_name, "apigw-standby", old, wait=_ack(ctx))
    for role in ROLES:
        await rt().select(env_name, f"{role}-new", None, wait=_ack(ctx))


# -- 3. smoke tests through the standby entry point ---------------------------------------------


async def smoke(ctx: BlockContext) -> dict[str, Any]:
    command = ctx.request.get("smoke")
    if not command:
        return {"skipped": True}
    urls = rt().urls(ctx.request["environment"])
    env = {
        **os.environ,
        "SWITCHBACK_STANDBY_URL": urls["standby"],
        "SWITCHBACK_PUBLIC_URL": urls["public"],
    }
    stopped = f"smoke test stopped: the release is being aborted ({command})"
    if ctx.xid in _ABORTING:
        raise RuntimeError(stopped)
    aborted = _SMOKES.setdefault(ctx.xid, asyncio.Event())
    try:
        proc = await asyncio.create_subprocess_shell(
            command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # own process group: stopped whole (the shell, its children)
        )  # fmt: skip
    except BaseException:
        _SMOKES.pop(ctx.xid, None)
        raise
    running = asyncio.ensure_future(proc.communicate())
    stopper = asyncio.ensure_future(aborted.wait())
    try:
        done, _ = await asyncio.wait(
            {running, stopper},
            timeout=float(ctx.request.get("smoke_timeout", 300)),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        stopper.cancel()
        _SMOKES.pop(ctx.xid, None)
        if not running.done():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await running
    if running not in done:
        if stopper in done:
            raise RuntimeError(stopped)
        raise RuntimeError(f"smoke test timed out: {command}")
    out, _ = running.result()
    tail = out.decode(errors="replace")[-2000:]
    if proc.returncode != 0:
        raise RuntimeError(f"smoke test failed (exit {proc.returncode}): {command}\n{tail}")
    return {"command": command, "output": tail}


# -- 4. old sidecars forward to the new version -------------------------------------------------


async def redirect_old(ctx: BlockContext) -> dict[str, Any]:
    env_name, _, old = _req(ctx)
    acked = {}
    for role in ROLES:
        report = await rt().redirect(env_name, role, old, f"{role}-new", wait=_ack(ctx))
        acked[role] = sorted(report.acked)
    return {"acked": acked}


async def restore_old(ctx: BlockContext) -> None:
    env_name, _, old = _req(ctx)
    for role in ROLES:
        await rt().redirect(env_name, role, old, None, wait=_ack(ctx))


# -- 5. main selectors → new ----------------------------------------------------------------------


async def switch(ctx: BlockContext) -> dict[str, Any]:
    env_name, version, _ = _req(ctx)
    for role in ROLES:
        await rt().select(env_name, f"{role}-current", version, wait=_ack(ctx))
    await rt().select(env_name, "apigw", version, wait=_ack(ctx))
    return {"apigw": version}


async def switch_back(ctx: BlockContext) -> None:
    env_name, version, old = _req(ctx)
    # Make-before-break: connections that reached the new version since the switch are
    # forwarded to the old one before the selectors move back and the new version goes away.
    for role in ROLES:
        await rt().redirect(env_name, role, version, pinned(role, old), wait=_ack(ctx))
    await rt().select(env_name, "apigw", old, wait=_ack(ctx))
    for role in ROLES:
        await rt().select(env_name, f"{role}-current", old, wait=_ack(ctx))


# -- 6. drain and retire the old version (the point of no return) ---------------------------------


async def drain_old(ctx: BlockContext) -> dict[str, Any]:
    env_name, _, old = _req(ctx)
    timeout = float(ctx.request.get("drain_timeout", 30))
    report = await rt().drain(rt().env(env_name).of(old), timeout)
    if report.timed_out:
        ctx.log.warning(
            "drain hit its limit: connections still open are cut when the old version stops",
            extra={"still_connected": report.still_connected},
        )
    return report.as_dict()


async def retire_old(ctx: BlockContext) -> dict[str, Any]:
    env_name, version, old = _req(ctx)
    runtime = rt()
    env = runtime.env(env_name)
    if env.of(old):
        await runtime.delete(
            env_name, old, drain_timeout=float(ctx.request.get("drain_timeout", 30))
        )
    env.current, env.new = version, None
    for role in ROLES:
        await runtime.select(env_name, f"{role}-new", None, wait=_ack(ctx))
    runtime.save()
    return {"current": version, "retired": old}


def warnings(blocks: list[dict[str, Any]]) -> list[str]:
    """What a release's steps report that an operator must see (a drain that hit its limit)."""
    out = []
    for b in blocks:
        for what, result in (("", b.get("output")), (" (undo)", b.get("undo_output"))):
            if isinstance(result, dict) and result.get("timed_out"):
                left = result.get("still_connected") or {}
                cx = sum(int(s.get("downstream_cx_active", 0)) for s in left.values())
                rq = sum(int(s.get("downstream_rq_active", 0)) for s in left.values())
                out.append(
                    f"{b['name']}{what}: drain hit its limit after {result.get('seconds')} s with "
                    f"{cx} connection(s), {rq} request(s) still open on {', '.join(sorted(left))}"
                )
    return out


def _build(name: str, approval: str | None) -> Scenario:
    """``approval``: None, or the step the approval wait comes before ("redirect_old": the
    classic gate after the smoke tests; "switch": after the old sidecars forward to the new
    version, so that real traffic is seen on it before the selectors move)."""
    sc = scenario(
        name,
        request=REQUEST_SCHEMA,
        lock_keys=["environment:{environment}"],
        lock_timeout=0.5,
        timeout=None,
        description="Blue/green release: deploy new beside current, test via standby, redirect, switch, drain, retire.",
    )
    sc.block("deploy_new", idempotent=True, undo_idempotent=True)(deploy_new).undo(delete_new)
    sc.block("point_standby", idempotent=True)(point_standby).undo(point_standby_back)
    sc.block("smoke", partial_effects=False)(smoke)
    if approval == "redirect_old":
        sc.wait("approval")
    sc.block("redirect_old", idempotent=True)(redirect_old).undo(restore_old)
    if approval == "switch":
        sc.wait("approval")
    sc.block("switch", idempotent=True)(switch).undo(switch_back)
    sc.block(POINT_OF_NO_RETURN, idempotent=True)(drain_old)
    sc.block("retire_old", idempotent=True, retry={"attempts": 3, "backoff": 1})(retire_old)
    return sc


def release_app() -> App:
    app = App()
    app.add(_build(RELEASE, approval=None))
    app.add(_build(RELEASE_WITH_APPROVAL, approval="redirect_old"))
    app.add(_build(RELEASE_WITH_APPROVAL_BEFORE_SWITCH, approval="switch"))
    return app
