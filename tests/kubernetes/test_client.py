"""The Kubernetes runtime's API calls (``switchback.kubernetes.client``) against the API test
double: apply, patch a selector, wait for a rollout by watching, delete a build, list and watch
pods — and their failures: 409 conflicts, 404, 410 Gone on a watch, a rollout that never
completes. The double runs no controllers: the tests play the Deployment controller's part
(``set_status``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from lightkube import ApiError

from switchback.kubernetes.client import (
    ConflictRetriesExhausted,
    KubeClient,
    KubeError,
    RolloutFailed,
    RolloutTimeout,
    rollout_state,
)
from switchback.kubernetes.install import RBAC_RULES
from switchback.kubernetes.manifests import (
    Build,
    Settings,
    render,
    render_build,
    service_selector,
    slot_selector,
)
from tests.eventually import eventually_async
from tests.kubernetes.apidouble import KubeApiDouble, RequestInfo
from tests.kubernetes.conftest import NS

SETTINGS = Settings(app="provision", environment=NS)


def objects(version: str = "v1", slot: str = "current") -> list[dict[str, Any]]:
    return [o for o in render(SETTINGS, Build(version, slot)) if o["kind"] != "Namespace"]


def done(replicas: int = 2, generation: int = 1) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }


def stuck() -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
             "message": "Deployment does not have minimum availability."},
        ],
    }  # fmt: skip


def count(double: KubeApiDouble, verb: str, resource: str) -> int:
    return sum(1 for r in double.requests if r.verb == verb and r.resource == resource)


# -- apply ---------------------------------------------------------------------------------------


async def test_apply_creates_then_replaces(kube: KubeClient, double: KubeApiDouble) -> None:
    stored = await kube.apply(objects())
    assert [(o["kind"], o["metadata"]["name"]) for o in stored] == [
        (o["kind"], o["metadata"]["name"]) for o in objects()
    ]
    dep = double.get_object("deployments", NS, "apigw-v1")
    assert dep is not None and dep["metadata"]["generation"] == 1
    assert double.get_object("services", NS, "apigw")["spec"]["selector"] == service_selector(
        SETTINGS, "apigw", "v1"
    )
    # Again, unchanged: replaced at the version just read, nothing changes on the server.
    rv = dep["metadata"]["resourceVersion"]
    await kube.apply(objects())
    assert double.get_object("deployments", NS, "apigw-v1")["metadata"]["resourceVersion"] == rv
    # Changed: a new generation (the Deployment controller would roll the pods).
    more = Settings(app="provision", environment=NS, replicas={"apigw": 3})
    (changed,) = [o for o in render_build(more, Build("v1")) if o["metadata"]["name"] == "apigw-v1"]
    out = await kube.apply_one(changed)
    assert out["metadata"]["generation"] == 2 and out["spec"]["replicas"] == 3


async def test_apply_retries_when_someone_writes_between_read_and_replace(
    kube: KubeClient, double: KubeApiDouble
) -> None:
    (dep,) = [o for o in objects() if o["metadata"]["name"] == "apigw-v1"]
    await kube.apply_one(dep)
    writes = 0

    async def interfere(r: RequestInfo) -> None:
        nonlocal writes
        if r.verb == "update" and r.name == "apigw-v1" and writes < 2:
            writes += 1  # another writer, just before our PUT: ours is now stale (409)
            await double.modify(
                "deployments", NS, "apigw-v1", {"metadata": {"annotations": {"x": str(writes)}}}
            )

    double.hooks.append(interfere)
    wanted = {**dep, "spec": {**dep["spec"], "replicas": 5}}
    out = await kube.apply_one(wanted)
    assert out["spec"]["replicas"] == 5
    assert count(double, "update", "deployments") == 3  # two conflicts, then success


async def test_apply_gives_up_on_endless_conflicts(kube: KubeClient, double: KubeApiDouble) -> None:
    (dep,) = [o for o in objects() if o["metadata"]["name"] == "apigw-v1"]
    await kube.apply_one(dep)
    n = 0

    async def always(r: RequestInfo) -> None:
        nonlocal n
        if r.verb == "update":
            n += 1
            await double.modify(
                "deployments", NS, "apigw-v1", {"metadata": {"labels": {"n": str(n)}}}
            )

    double.hooks.append(always)
    with pytest.raises(ConflictRetriesExhausted, match=r"Deployment production/apigw-v1"):
        await kube.apply_one({**dep, "spec": {**dep["spec"], "replicas": 5}})


async def test_apply_surfaces_other_errors(kube: KubeClient) -> None:
    (svc,) = [o for o in objects() if o["kind"] == "Service" and o["metadata"]["name"] == "apigw"]
    await kube.apply_one(svc)
    moved = {**svc, "spec": {**svc["spec"], "clusterIP": "10.0.0.99"}}
    with pytest.raises(ApiError) as exc:
        await kube.apply_one(moved)
    assert exc.value.status.code == 422


# -- services --------------------------------------------------------------------------------------


async def test_point_service_switches_the_selector_exactly(
    kube: KubeClient, double: KubeApiDouble
) -> None:
    await kube.apply(objects())
    await double.modify("services", NS, "apigw", {"spec": {"selector": {"stray": "x"}}})
    svc = await kube.point_service("apigw", service_selector(SETTINGS, "apigw", "v2"))
    assert svc["spec"]["selector"] == service_selector(SETTINGS, "apigw", "v2")  # stray gone
    svc = await kube.point_service("scenario-new", None)
    assert "selector" not in svc["spec"] or not svc["spec"]["selector"]
    with pytest.raises(KubeError, match=r"service production/nope not found"):
        await kube.point_service("nope", {"a": "b"})


async def test_point_service_retries_a_conflict(kube: KubeClient, double: KubeApiDouble) -> None:
    await kube.apply(objects())
    hit = False

    async def interfere(r: RequestInfo) -> None:
        nonlocal hit
        if r.verb == "patch" and r.resource == "services" and not hit:
            hit = True
            await double.modify("services", NS, "apigw", {"spec": {"selector": {"tier": "x"}}})

    double.hooks.append(interfere)
    svc = await kube.point_service("apigw", service_selector(SETTINGS, "apigw", "v2"))
    # The key added meanwhile was read on the retry and removed: exactly what was asked.
    assert svc["spec"]["selector"] == service_selector(SETTINGS, "apigw", "v2")
    assert count(double, "patch", "services") == 2


# -- rollouts ----------------------------------------------------------------------------------


def test_rollout_state_follows_kubectl_rollout_status() -> None:
    base = {"metadata": {"generation": 2}, "spec": {"replicas": 2}}
    assert "observed" in rollout_state({**base, "status": done(generation=1)}).message
    assert rollout_state({**base, "status": done(generation=2)}).done
    old_left = {**done(generation=2), "replicas": 3}
    assert (
        "1 old replicas pending termination" == rollout_state({**base, "status": old_left}).message
    )
    deadline = {**done(generation=2), "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": "ReplicaSet has timed out progressing."}]}  # fmt: skip
    assert rollout_state({**base, "status": deadline}).failed


async def test_wait_rollout_watches_until_ready(kube: KubeClient, double: KubeApiDouble) -> None:
    await kube.apply(objects())
    waiting = asyncio.create_task(kube.wait_rollout("apigw-v1", timeout=20))
    await eventually_async(lambda: count(double, "watch", "deployments") == 1, what="the watch")
    for status in (
        {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1},
        stuck(),
        {**stuck(), "readyReplicas": 2},
    ):
        await double.set_status("deployments", NS, "apigw-v1", status)
    assert not waiting.done()
    await double.set_status("deployments", NS, "apigw-v1", done())
    dep = await asyncio.wait_for(waiting, 10)
    assert dep["status"]["availableReplicas"] == 2
    # Watched, not polled: one list and one watch whatever the number of changes.
    assert count(double, "list", "deployments") == 1
    assert count(double, "watch", "deployments") == 1


async def test_wait_rollout_times_out_naming_the_deployment_and_its_conditions(
    kube: KubeClient, double: KubeApiDouble
) -> None:
    await kube.apply(objects())
    await double.set_status("deployments", NS, "apigw-v1", stuck())
    with pytest.raises(RolloutTimeout) as exc:
        await kube.wait_rollout("apigw-v1", timeout=0.5)
    msg = str(exc.value)
    assert "deployment production/apigw-v1 not rolled out within" in msg
    assert "1 of 2 updated replicas available" in msg and "ready 1" in msg
    assert "Available=False (MinimumReplicasUnavailable" in msg


async def test_wait_rollout_fails_at_once_past_the_progress_deadline(
    kube: KubeClient, double: KubeApiDouble
) -> None:
    await kube.apply(objects())
    waiting = asyncio.create_task(kube.wait_rollout("apigw-v1", timeout=30))
    await eventually_async(lambda: count(double, "watch", "deployments") == 1, what="the watch")
    await double.set_status("deployments", NS, "apigw-v1", {**stuck(), "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "apigw-v1-5d9" has timed out progressing.'}]})  # fmt: skip
    with pytest.raises(RolloutFailed, match=r"progress deadline exceeded.*timed out progressing"):
        await asyncio.wait_for(waiting, 5)


async def test_wait_rollout_relists_after_410_gone(kube: KubeClient, double: KubeApiDouble) -> None:
    await kube.apply(objects())
    expired = False

    async def compact_before_the_first_watch(r: RequestInfo) -> None:
        nonlocal expired
        if r.verb == "watch" and not expired:
            expired = True  # progress happens, then the history is compacted: the watch from
            await double.set_status("deployments", NS, "apigw-v1", stuck())  # the list's
            await double.compact()  # version gets 410 Expired

    double.hooks.append(compact_before_the_first_watch)
    waiting = asyncio.create_task(kube.wait_rollout("apigw-v1", timeout=20))
    await eventually_async(lambda: count(double, "watch", "deployments") == 2, what="re-watch")
    assert count(double, "list", "deployments") == 2  # listed again after the 410
    await double.set_status("deployments", NS, "apigw-v1", done())
    assert (await asyncio.wait_for(waiting, 10))["status"]["readyReplicas"] == 2


async def test_wait_rollout_resumes_a_closed_watch_without_missing_a_change(
    kube: KubeClient, double: KubeApiDouble
) -> None:
    await kube.apply(objects())
    waiting = asyncio.create_task(kube.wait_rollout("apigw-v1", timeout=20))
    await eventually_async(lambda: count(double, "watch", "deployments") == 1, what="the watch")
    await double.close_watches()  # the server's watch timeout
    await double.set_status("deployments", NS, "apigw-v1", done())  # while no watch is open
    assert (await asyncio.wait_for(waiting, 10))["status"]["availableReplicas"] == 2
    assert count(double, "list", "deployments") == 1  # resumed from its version, not re-listed


async def test_wait_rollout_of_a_missing_or_deleted_deployment(
    kube: KubeClient, double: KubeApiDouble
) -> None:
    with pytest.raises(KubeError, match="deployment production/nope not found"):
        await kube.wait_rollout("nope", timeout=5)
    await kube.apply(objects())
    waiting = asyncio.create_task(kube.wait_rollout("apigw-v1", timeout=20))
    await eventually_async(lambda: count(double, "watch", "deployments") == 1, what="the watch")
    await kube.delete_build(slot_selector(SETTINGS, "v1"))
    with pytest.raises(RolloutFailed, match="deleted during its rollout"):
        await asyncio.wait_for(waiting, 5)


# -- builds and slots ----------------------------------------------------------------------------


async def test_delete_build_removes_one_build_only(kube: KubeClient, double: KubeApiDouble) -> None:
    await kube.apply(objects("v1"))
    await kube.apply(objects("v2", "new"))
    deleted = await kube.delete_build(slot_selector(SETTINGS, "v1"))
    assert sorted(d.split("/")[0] for d in deleted) == ["configmap"] * 3 + ["deployment"] * 3
    left = {k[2] for k in double.objects if k[0] in ("deployments", "configmaps")}
    assert left and all("-v2" in name for name in left)
    assert await kube.delete_build(slot_selector(SETTINGS, "v1")) == []


async def test_delete_build_tolerates_objects_already_gone(
    kube: KubeClient, double: KubeApiDouble
) -> None:
    await kube.apply(objects("v1"))

    async def race(r: RequestInfo) -> None:
        if r.verb == "delete" and r.resource == "deployments" and r.name == "scenario-v1":
            if double.get_object("deployments", NS, "scenario-v1"):
                await double.delete_object("deployments", NS, "scenario-v1")

    double.hooks.append(race)
    deleted = await kube.delete_build(slot_selector(SETTINGS, "v1"))
    assert "deployment/scenario-v1" in deleted
    assert not [k for k in double.objects if k[0] == "deployments"]


async def test_set_slot_relabels_without_touching_pods(
    kube: KubeClient, double: KubeApiDouble
) -> None:
    await kube.apply(objects("v2", "new"))
    names = await kube.set_slot(slot_selector(SETTINGS, "v2"), "current")
    assert sorted(names) == ["apigw-v2", "scenario-v2", "transaction-v2"]
    dep = double.get_object("deployments", NS, "apigw-v2")
    assert dep["metadata"]["labels"]["version"] == "current"
    assert dep["metadata"]["generation"] == 1  # no spec change: no new pods
    with pytest.raises(ValueError):
        await kube.set_slot(slot_selector(SETTINGS, "v2"), "old")


# -- pods ----------------------------------------------------------------------------------------


def pod(name: str, version: str, ready: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"app": "provision", "role": "apigw", "switchback.io/build": version}},
        "spec": {"containers": [{"name": "app", "image": "x"}]},
        "status": {"podIP": "10.1.0.7", "conditions": [{"type": "Ready", "status": str(ready)}]},
    }  # fmt: skip


async def test_pods_and_watch_pods_through_a_410(kube: KubeClient, double: KubeApiDouble) -> None:
    await double.create_object(pod("apigw-v1-a", "v1"))
    await double.create_object(pod("apigw-v2-a", "v2"))
    assert [p["metadata"]["name"] for p in await kube.pods(slot_selector(SETTINGS, "v1"))] == [
        "apigw-v1-a"
    ]
    seen: list[set[str]] = []

    async def follow() -> None:
        async with contextlib.aclosing(kube.watch_pods(slot_selector(SETTINGS, "v1"))) as stream:
            async for state in stream:
                seen.append(set(state))
                if state.keys() == {"apigw-v1-b"}:
                    return

    task = asyncio.create_task(follow())
    await eventually_async(lambda: seen == [{"apigw-v1-a"}], what="the listed state")
    await double.create_object(pod("apigw-v1-b", "v1"))
    await eventually_async(lambda: seen[-1] == {"apigw-v1-a", "apigw-v1-b"}, what="ADDED")

    # The server closes the watch; before the client watches again, a pod goes and the history
    # is compacted past the client's version: its re-watch gets 410, its re-list sees the pod
    # gone.
    async def meanwhile(r: RequestInfo) -> None:
        if (
            r.verb == "watch"
            and r.resource == "pods"
            and double.get_object("pods", NS, "apigw-v1-a")
        ):
            await double.delete_object("pods", NS, "apigw-v1-a")
            await double.create_object(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "unrelated", "namespace": NS},
                }
            )
            await double.compact()

    double.hooks.append(meanwhile)
    await double.close_watches()
    await asyncio.wait_for(task, 10)
    assert count(double, "list", "pods") == 3  # pods(), the first list, the re-list


# -- RBAC ------------------------------------------------------------------------------------------


async def test_the_role_grants_exactly_what_the_client_uses(
    kube: KubeClient, double: KubeApiDouble
) -> None:
    """Every call of the client once (and its retry paths), then: the (group, resource, verb)
    set the double saw is the Role's, no more (it would be refused) and no less (an unused
    permission is one too many)."""
    await kube.apply(objects("v1"))
    await kube.apply(objects("v1"))  # the replace path: get + update
    await kube.point_service("apigw", service_selector(SETTINGS, "apigw", "v1"))
    await kube.set_slot(slot_selector(SETTINGS, "v1"), "current")
    waiting = asyncio.create_task(kube.wait_rollout("apigw-v1", timeout=10))
    await eventually_async(lambda: count(double, "watch", "deployments") == 1, what="the watch")
    await double.set_status("deployments", NS, "apigw-v1", done())
    await waiting
    await kube.pods(slot_selector(SETTINGS, "v1"))
    async with contextlib.aclosing(kube.watch_pods(slot_selector(SETTINGS, "v1"))) as stream:
        await anext(stream)  # the list
        await double.create_object(pod("apigw-v1-a", "v1"))
        await anext(stream)  # from the watch
    await kube.delete_build(slot_selector(SETTINGS, "v1"))
    granted = {(r.group, r.resource, v) for r in RBAC_RULES for v in r.verbs}
    assert double.verbs_used() == granted
