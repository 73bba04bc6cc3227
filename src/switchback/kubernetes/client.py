"""The Kubernetes API calls the Kubernetes runtime makes, async, on lightkube (typed, async,
maintained; its models are generated from the official API schemas).

Each call is written for the failures a real API server answers with:

- ``apply``: create, and when the object exists (``409 AlreadyExists``) replace it at the
  ``resourceVersion`` just read; a ``409 Conflict`` (someone wrote in between) or a ``404`` (it
  was deleted in between) starts over, a bounded number of times. Create-or-replace rather than
  server-side apply: the controller owns these objects whole, and replace has one meaning
  (this object, exactly) where apply's field ownership would keep fields others set.
- ``point_service``: a merge patch of a Service's selector, with the ``resourceVersion`` read as
  precondition (the keys to remove are computed from what was read), retried on ``409``.
- ``wait_rollout`` / ``watch_pods``: list, then watch from the list's ``resourceVersion``; a
  ``410 Gone`` (the version is too old: the server compacted its history) means list again and
  watch from there (nothing is missed: the new list is the state). Watching, never polling.
  A rollout that does not complete within its timeout raises :class:`RolloutTimeout` naming
  the Deployment, its replica counts and its conditions; one past its progress deadline raises
  :class:`RolloutFailed` at once.
- ``delete_build``: a ``404`` is success (already gone).

Every (resource, verb) used here is granted by ``install.RBAC_RULES``, and nothing else is
(tests check both directions against the API test double).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.codecs import from_dict
from lightkube.core.resource import NamespacedResource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Pod, Service
from lightkube.types import PatchType

from switchback.kubernetes.manifests import SLOTS

FIELD_MANAGER = "switchback"


class KubeError(Exception):
    """A Kubernetes call failed in a way the caller has to decide about."""


class ConflictRetriesExhausted(KubeError):
    pass


class RolloutFailed(KubeError):
    """The Deployment controller gave up (progress deadline exceeded) or it was deleted."""


class RolloutTimeout(KubeError):
    """The rollout did not complete in time; the message says where it stands."""


def _code(exc: BaseException) -> int | None:
    if isinstance(exc, ApiError):
        return exc.status.code
    if isinstance(exc, httpx2.HTTPStatusError):
        return exc.response.status_code
    return None


def _reason(exc: ApiError) -> str:
    return exc.status.reason or ""


@dataclass(frozen=True)
class Rollout:
    """Where a Deployment's rollout stands (the rule of ``kubectl rollout status``)."""

    done: bool
    failed: bool
    message: str


def rollout_state(dep: Mapping[str, Any]) -> Rollout:
    md, spec, st = dep.get("metadata", {}), dep.get("spec", {}), dep.get("status") or {}
    want = spec.get("replicas", 1)
    gen, observed = md.get("generation", 0), st.get("observedGeneration", 0)
    updated, replicas = st.get("updatedReplicas", 0), st.get("replicas", 0)
    available = st.get("availableReplicas", 0)
    if observed < gen:
        return Rollout(False, False, "waiting for the deployment spec update to be observed")
    for c in st.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return Rollout(False, True, f"progress deadline exceeded: {c.get('message', '')}")
    if updated < want:
        return Rollout(False, False, f"{updated} of {want} new replicas updated")
    if replicas > updated:
        return Rollout(False, False, f"{replicas - updated} old replicas pending termination")
    if available < updated:
        return Rollout(False, False, f"{available} of {updated} updated replicas available")
    return Rollout(True, False, "rolled out")


def describe(dep: Mapping[str, Any] | None) -> str:
    if dep is None:
        return "not seen"
    md, st = dep.get("metadata", {}), dep.get("status") or {}
    counts = ", ".join(
        f"{k} {st.get(f, 0)}"
        for k, f in (("replicas", "replicas"), ("updated", "updatedReplicas"),
                     ("ready", "readyReplicas"), ("available", "availableReplicas"))
    )  # fmt: skip
    conds = "; ".join(
        f"{c.get('type')}={c.get('status')} ({c.get('reason', '')}: {c.get('message', '')})"
        for c in st.get("conditions") or []
    )
    return (
        f"{rollout_state(dep).message} (generation {md.get('generation', 0)}, observed "
        f"{st.get('observedGeneration', 0)}, {counts}); conditions: {conds or 'none'}"
    )


class KubeClient:
    """The calls of the Kubernetes runtime, in one namespace (an environment)."""

    def __init__(self, api: AsyncClient, namespace: str, *, conflict_retries: int = 5) -> None:
        self.api = api
        self.namespace = namespace
        self.conflict_retries = conflict_retries

    @classmethod
    def connect(
        cls,
        namespace: str,
        *,
        server: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> KubeClient:
        """``server``: an API URL (with a bearer ``token`` if given); else the in-cluster
        service account, ``KUBECONFIG`` or ``~/.kube/config``."""
        config = None
        if server:
            config = KubeConfig.from_dict(
                {
                    "clusters": [{"name": "c", "cluster": {"server": server}}],
                    "users": [{"name": "u", "user": {"token": token} if token else {}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        api = AsyncClient(
            config=config,
            namespace=namespace,
            field_manager=FIELD_MANAGER,
            timeout=httpx2.Timeout(timeout),
            trust_env=server is None,
        )
        return cls(api, namespace)

    async def close(self) -> None:
        await self.api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ns(self, res: Any) -> str | None:
        return self.namespace if isinstance(res, NamespacedResource) else None

    # -- apply ----------------------------------------------------------------------------------

    async def apply(self, objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Create or replace each object, in order; returns them as stored."""
        return [await self.apply_one(o) for o in objects]

    async def apply_one(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        for _ in range(self.conflict_retries):
            res = from_dict(dict(obj))
            ns = self._ns(res)
            if ns is not None:
                res.metadata.namespace = ns
            try:
                return (await self.api.create(res)).to_dict()
            except ApiError as exc:
                if _reason(exc) != "AlreadyExists":
                    raise
            try:
                current = await self.api.get(type(res), name, namespace=ns)
                res.metadata.resourceVersion = current.metadata.resourceVersion
                return (await self.api.replace(res)).to_dict()
            except ApiError as exc:
                if exc.status.code not in (404, 409):  # deleted / written in between
                    raise
        raise ConflictRetriesExhausted(
            f"{obj['kind']} {self.namespace}/{name}: still conflicting after "
            f"{self.conflict_retries} attempts (someone else keeps writing it)"
        )

    # -- services -------------------------------------------------------------------------------

    async def point_service(self, name: str, selector: Mapping[str, str] | None) -> dict[str, Any]:
        """Make Service ``name`` select exactly ``selector`` (``None``: no selector, no
        endpoints). Established connections stay where they are (kube-proxy)."""
        for _ in range(self.conflict_retries):
            try:
                current = await self.api.get(Service, name, namespace=self.namespace)
            except ApiError as exc:
                if exc.status.code == 404:
                    raise KubeError(f"service {self.namespace}/{name} not found") from exc
                raise
            old = dict((current.spec.selector if current.spec else None) or {})
            if selector is None:
                patch_sel: dict[str, Any] | None = None
            else:
                patch_sel = {**{k: None for k in old if k not in selector}, **selector}
            patch = {
                "metadata": {"resourceVersion": current.metadata.resourceVersion},
                "spec": {"selector": patch_sel},
            }
            try:
                svc = await self.api.patch(
                    Service, name, patch, namespace=self.namespace, patch_type=PatchType.MERGE
                )
                return svc.to_dict()
            except ApiError as exc:
                if exc.status.code not in (404, 409):  # 404: deleted since read; reported above
                    raise
        raise ConflictRetriesExhausted(
            f"Service {self.namespace}/{name}: selector still conflicting after "
            f"{self.conflict_retries} attempts"
        )

    # -- deployments ----------------------------------------------------------------------------

    async def set_slot(self, labels: Mapping[str, str], slot: str) -> list[str]:
        """Relabel the Deployments matching ``labels`` with ``version: slot`` (a promotion: new
        becomes current). Metadata only: no pod is replaced."""
        if slot not in SLOTS:
            raise ValueError(f"unknown slot {slot!r}")
        names = [
            d.metadata.name
            async for d in self.api.list(Deployment, namespace=self.namespace, labels=dict(labels))
        ]
        for name in names:
            await self.api.patch(
                Deployment,
                name,
                {"metadata": {"labels": {"version": slot}}},
                namespace=self.namespace,
                patch_type=PatchType.MERGE,
            )
        return names

    async def _snapshots(
        self, res: type[Any], *, labels: Mapping[str, str] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> AsyncIterator[dict[str, dict[str, Any]]]:  # fmt: skip
        """The selected objects by name: the listed state, then the state after each change.
        On ``410 Gone`` the watch's history is lost: list again (a fresh, complete state) and
        watch from that list's resourceVersion."""
        sel: dict[str, Any] = {}
        if labels:
            sel["labels"] = dict(labels)
        if fields:
            sel["fields"] = dict(fields)
        while True:
            listing = self.api.list(res, namespace=self.namespace, **sel)
            state = {o.metadata.name: o.to_dict() async for o in listing}
            yield dict(state)
            watch = self.api.watch(
                res, namespace=self.namespace, resource_version=listing.resourceVersion, **sel
            )
            try:
                async for etype, obj in watch:
                    if etype == "DELETED":
                        state.pop(obj.metadata.name, None)
                    elif etype in ("ADDED", "MODIFIED"):
                        state[obj.metadata.name] = obj.to_dict()
                    else:
                        continue  # BOOKMARK
                    yield dict(state)
            except (ApiError, httpx2.HTTPStatusError) as exc:
                if _code(exc) != 410:
                    raise
                # else: expired: list again
            finally:
                await watch.aclose()  # type: ignore[attr-defined]  # the HTTP stream with it

    async def wait_rollout(self, name: str, timeout: float) -> dict[str, Any]:
        """Wait, by watching, until Deployment ``name`` is rolled out; returns it."""
        last: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        try:
            snapshots = self._snapshots(Deployment, fields={"metadata.name": name})
            async with asyncio.timeout(timeout), contextlib.aclosing(snapshots):
                async for state in snapshots:
                    dep = state.get(name)
                    if dep is None:
                        if last is not None:
                            raise RolloutFailed(
                                f"deployment {self.namespace}/{name} was deleted during its rollout"
                            )
                        raise KubeError(f"deployment {self.namespace}/{name} not found")
                    last = dep
                    st = rollout_state(dep)
                    if st.failed:
                        raise RolloutFailed(
                            f"deployment {self.namespace}/{name} failed: {describe(dep)}"
                        )
                    if st.done:
                        return dep
        except TimeoutError:
            waited = timeout - max(0.0, deadline - time.monotonic())
            raise RolloutTimeout(
                f"deployment {self.namespace}/{name} not rolled out within {waited:.3g} s: "
                f"{describe(last)}"
            ) from None
        raise AssertionError("unreachable: the watch ends only by an error")

    async def delete_build(self, labels: Mapping[str, str]) -> list[str]:
        """Delete the Deployments and ConfigMaps matching ``labels`` (one build of an app).
        Returns what was deleted; an object already gone is no error."""
        deleted = []
        for res in (Deployment, ConfigMap):
            names = [
                o.metadata.name
                async for o in self.api.list(res, namespace=self.namespace, labels=dict(labels))
            ]
            for name in names:
                try:
                    await self.api.delete(res, name, namespace=self.namespace)
                except ApiError as exc:
                    if exc.status.code != 404:
                        raise
                deleted.append(f"{res.__name__.lower()}/{name}")
        return deleted

    # -- pods -----------------------------------------------------------------------------------

    async def pods(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return [
            p.to_dict()
            async for p in self.api.list(Pod, namespace=self.namespace, labels=dict(labels))
        ]

    def watch_pods(self, labels: Mapping[str, str]) -> AsyncIterator[dict[str, dict[str, Any]]]:
        """The pods matching ``labels`` by name, now and after every change (re-listed after a
        ``410``): what the runtime follows for its sidecars' node ids and addresses."""
        return self._snapshots(Pod, labels=labels)
