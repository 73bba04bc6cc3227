"""The Kubernetes API test double against the API conventions it claims (status codes, ``Status``
bodies, resourceVersion, watch semantics), over raw HTTP — and that lightkube reads its errors as
``ApiError``, as it reads the real server's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from lightkube import ApiError
from lightkube.resources.core_v1 import ConfigMap

from tests.kubernetes.apidouble import KubeApiDouble
from tests.kubernetes.conftest import NS

CM = f"/api/v1/namespaces/{NS}/configmaps"
DEP = f"/apis/apps/v1/namespaces/{NS}/deployments"
SVC = f"/api/v1/namespaces/{NS}/services"


def cm(name: str, labels: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": {"k": "v"},
        **kw,
    }


def dep(name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": []}},
        },
    }


@pytest.fixture
async def http(double: KubeApiDouble) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=double.url, timeout=5) as c:
        yield c


def assert_status(r: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    """A failure is a ``Status`` object, served as application/json, its code the HTTP one."""
    assert r.status_code == code, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["reason"] == reason and body["code"] == code
    assert body["message"]
    return body


async def test_create_fills_identity_and_refuses_a_duplicate(http: httpx.AsyncClient) -> None:
    r = await http.post(CM, json=cm("a"))
    assert r.status_code == 201
    md = r.json()["metadata"]
    assert md["namespace"] == NS and md["uid"] and md["resourceVersion"].isdigit()
    assert md["creationTimestamp"].endswith("Z")
    r2 = await http.post(DEP, json=dep("d"))
    assert r2.json()["metadata"]["generation"] == 1
    assert int(r2.json()["metadata"]["resourceVersion"]) > int(md["resourceVersion"])

    body = assert_status(await http.post(CM, json=cm("a")), 409, "AlreadyExists")
    assert body["message"] == 'configmaps "a" already exists'
    assert body["details"] == {"name": "a", "kind": "configmaps"}
    body = assert_status(await http.post(DEP, json=dep("d")), 409, "AlreadyExists")
    assert body["details"] == {"name": "d", "group": "apps", "kind": "deployments"}


async def test_create_in_a_missing_namespace_or_with_a_bad_body(http: httpx.AsyncClient) -> None:
    body = assert_status(
        await http.post("/api/v1/namespaces/nope/configmaps", json=cm("a")), 404, "NotFound"
    )
    assert body["message"] == 'namespaces "nope" not found'
    assert_status(await http.post(CM, json={**cm("a"), "kind": "Secret"}), 400, "BadRequest")
    bad_ns = cm("a")
    bad_ns["metadata"]["namespace"] = "other"
    assert_status(await http.post(CM, json=bad_ns), 400, "BadRequest")
    assert_status(await http.post(CM, json=cm("Not_A_Name")), 422, "Invalid")
    assert_status(await http.post(CM, content=b"{not json"), 400, "BadRequest")


async def test_get_and_delete_of_a_missing_object_are_404(http: httpx.AsyncClient) -> None:
    body = assert_status(await http.get(f"{DEP}/nope"), 404, "NotFound")
    assert body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}
    await http.post(CM, json=cm("a"))
    r = await http.delete(f"{CM}/a")
    assert r.status_code == 200 and r.json()["status"] == "Success"
    assert r.json()["details"]["name"] == "a"
    assert_status(await http.delete(f"{CM}/a"), 404, "NotFound")
    assert_status(await http.get("/apis/nope/v1/things"), 404, "NotFound")


async def test_lightkube_reads_the_errors_as_api_errors(double: KubeApiDouble, kube: Any) -> None:
    with pytest.raises(ApiError) as exc:
        await kube.api.get(ConfigMap, "nope", namespace=NS)
    assert exc.value.status.code == 404 and exc.value.status.reason == "NotFound"


async def test_replace_checks_the_resource_version(http: httpx.AsyncClient) -> None:
    created = (await http.post(DEP, json=dep("d"))).json()
    stale = created["metadata"]["resourceVersion"]
    changed = dep("d", replicas=3)
    changed["metadata"]["resourceVersion"] = stale
    r = await http.put(f"{DEP}/d", json=changed)
    assert r.status_code == 200
    now = r.json()["metadata"]
    assert now["generation"] == 2 and now["resourceVersion"] != stale
    assert now["uid"] == created["metadata"]["uid"]

    again = dep("d", replicas=4)
    again["metadata"]["resourceVersion"] = stale  # read before the last write
    body = assert_status(await http.put(f"{DEP}/d", json=again), 409, "Conflict")
    assert "the object has been modified" in body["message"]
    assert (await http.get(f"{DEP}/d")).json()["spec"]["replicas"] == 3

    # The same content again: nothing changes, not even the resourceVersion.
    same = dep("d", replicas=3)
    r = await http.put(f"{DEP}/d", json=same)
    assert r.json()["metadata"]["resourceVersion"] == now["resourceVersion"]
    assert_status(await http.put(f"{DEP}/other", json=dep("other")), 404, "NotFound")
    assert_status(await http.put(f"{DEP}/d", json=dep("x")), 400, "BadRequest")


async def test_status_changes_only_through_its_subresource(
    http: httpx.AsyncClient, double: KubeApiDouble
) -> None:
    await http.post(DEP, json=dep("d"))
    with_status = {**dep("d"), "status": {"readyReplicas": 2}}
    r = await http.put(f"{DEP}/d", json=with_status)
    assert r.json()["status"] == {}
    r = await http.put(f"{DEP}/d/status", json=with_status)
    assert r.json()["status"] == {"readyReplicas": 2}
    assert r.json()["metadata"]["generation"] == 1  # a status change is no spec change
    await double.set_status("deployments", NS, "d", {"observedGeneration": 1})
    assert (await http.get(f"{DEP}/d")).json()["status"] == {"observedGeneration": 1}


async def test_immutable_fields(http: httpx.AsyncClient) -> None:
    await http.post(DEP, json=dep("d"))
    moved = dep("d")
    moved["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    assert_status(await http.put(f"{DEP}/d", json=moved), 422, "Invalid")

    await http.post(CM, json=cm("frozen", immutable=True))
    edited = cm("frozen", immutable=True)
    edited["data"] = {"k": "changed"}
    body = assert_status(await http.put(f"{CM}/frozen", json=edited), 422, "Invalid")
    assert "immutable" in body["message"]

    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"selector": {"a": "1"}, "ports": [{"port": 80}]}}  # fmt: skip
    ip = (await http.post(SVC, json=svc)).json()["spec"]["clusterIP"]
    # A replace without clusterIP keeps the allocated one (as the API server does).
    r = await http.put(f"{SVC}/s", json={**svc, "spec": {**svc["spec"], "selector": {"a": "2"}}})
    assert r.json()["spec"]["clusterIP"] == ip and r.json()["spec"]["selector"] == {"a": "2"}
    moved_ip = {**svc, "spec": {**svc["spec"], "clusterIP": "10.0.0.1"}}
    assert_status(await http.put(f"{SVC}/s", json=moved_ip), 422, "Invalid")


async def test_list_with_label_and_field_selectors(http: httpx.AsyncClient) -> None:
    for name, labels in (("a", {"app": "x", "build": "v1"}), ("b", {"app": "x", "build": "v2"}),
                         ("c", {"app": "y"})):  # fmt: skip
        await http.post(CM, json=cm(name, labels))

    async def names(**params: str) -> list[str]:
        r = await http.get(CM, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "ConfigMapList" and body["metadata"]["resourceVersion"]
        assert all("kind" not in i for i in body["items"])  # items carry no kind in a list
        return [i["metadata"]["name"] for i in body["items"]]

    assert await names() == ["a", "b", "c"]
    assert await names(labelSelector="app=x") == ["a", "b"]
    assert await names(labelSelector="app==x,build!=v1") == ["b"]
    assert await names(labelSelector="build in (v1, v3)") == ["a"]
    assert await names(labelSelector="build notin (v1)") == ["b", "c"]
    assert await names(labelSelector="build") == ["a", "b"]
    assert await names(labelSelector="!build") == ["c"]
    assert await names(fieldSelector="metadata.name=b") == ["b"]
    assert await names(fieldSelector="metadata.name!=b", labelSelector="app=x") == ["a"]
    assert_status(await http.get(CM, params={"labelSelector": "app=x,,="}), 400, "BadRequest")
    assert_status(await http.get(CM, params={"fieldSelector": "spec.x=1"}), 400, "BadRequest")


async def test_merge_patch_and_strategic_merge_patch(http: httpx.AsyncClient) -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"selector": {"app": "x", "build": "v1"}, "ports": [{"port": 80}]}}  # fmt: skip
    rv = (await http.post(SVC, json=svc)).json()["metadata"]["resourceVersion"]
    merge = {"content-type": "application/merge-patch+json"}
    r = await http.patch(f"{SVC}/s", json={"spec": {"selector": {"build": "v2"}}}, headers=merge)
    assert r.json()["spec"]["selector"] == {"app": "x", "build": "v2"}
    r = await http.patch(
        f"{SVC}/s",
        content=json.dumps({"spec": {"selector": {"build": None, "tier": "a"}}}),
        headers={"content-type": "application/strategic-merge-patch+json"},
    )
    assert r.json()["spec"]["selector"] == {"app": "x", "tier": "a"}
    # A resourceVersion in the patch is a precondition.
    stale = {"metadata": {"resourceVersion": rv}, "spec": {"selector": {"app": "z"}}}
    assert_status(await http.patch(f"{SVC}/s", json=stale, headers=merge), 409, "Conflict")
    assert_status(
        await http.patch(f"{SVC}/nope", json={"spec": {}}, headers=merge), 404, "NotFound"
    )
    assert_status(
        await http.patch(f"{SVC}/s", json={}, headers={"content-type": "text/plain"}),
        415,
        "UnsupportedMediaType",
    )


async def test_what_is_not_emulated_fails_loudly(http: httpx.AsyncClient) -> None:
    await http.post(CM, json=cm("a"))
    for headers, body in (
        ({"content-type": "application/apply-patch+yaml"}, {"data": {}}),
        ({"content-type": "application/json-patch+json"}, [{"op": "add", "path": "/x"}]),
        ({"content-type": "application/strategic-merge-patch+json"}, {"data": [1]}),
    ):
        body_ = assert_status(
            await http.patch(f"{CM}/a", content=json.dumps(body), headers=headers),
            500,
            "InternalError",
        )
        assert body_["message"].startswith("not emulated")
    r = await http.get(CM, params={"limit": "1"})
    assert r.status_code == 500 and "not emulated" in r.json()["message"]


async def watch_lines(
    http: httpx.AsyncClient, path: str, n: int, **params: str
) -> list[dict[str, Any]]:
    """The first ``n`` events of a watch (the stream is then closed)."""
    out: list[dict[str, Any]] = []
    async with http.stream("GET", path, params={"watch": "true", **params}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        async for line in r.aiter_lines():
            if line:
                out.append(json.loads(line))
            if len(out) == n:
                break
    return out


async def test_watch_replays_from_a_resource_version_and_streams_on(
    http: httpx.AsyncClient, double: KubeApiDouble
) -> None:
    rv0 = (await http.get(CM)).json()["metadata"]["resourceVersion"]
    await http.post(CM, json=cm("a", {"app": "x"}))
    await http.put(f"{CM}/a", json={**cm("a", {"app": "x"}), "data": {"k": "2"}})
    await http.delete(f"{CM}/a")
    events = await watch_lines(http, CM, 3, resourceVersion=rv0)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1]["object"]["data"] == {"k": "2"} and events[0]["object"]["kind"] == "ConfigMap"
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv0)

    # No resourceVersion: the current state as ADDED first.
    await http.post(CM, json=cm("b"))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in
            await watch_lines(http, CM, 1)] == [("ADDED", "b")]  # fmt: skip


async def test_watch_selector_entering_and_leaving(http: httpx.AsyncClient) -> None:
    rv0 = (await http.get(CM)).json()["metadata"]["resourceVersion"]
    await http.post(CM, json=cm("a", {"build": "v1"}))
    await http.put(f"{CM}/a", json=cm("a", {"build": "v2"}))  # leaves build=v1
    await http.put(f"{CM}/a", json=cm("a", {"build": "v1"}))  # enters again
    events = await watch_lines(http, CM, 3, resourceVersion=rv0, labelSelector="build=v1")
    assert [e["type"] for e in events] == ["ADDED", "DELETED", "ADDED"]


async def test_watch_from_a_compacted_version_is_410_expired_on_the_stream(
    http: httpx.AsyncClient, double: KubeApiDouble
) -> None:
    rv0 = (await http.get(CM)).json()["metadata"]["resourceVersion"]
    await http.post(CM, json=cm("a"))
    compacted = await double.compact()
    (event,) = await watch_lines(http, CM, 1, resourceVersion=rv0)
    # The real server answers 200 and sends the error as an event (kubernetes#25151).
    assert event["type"] == "ERROR"
    status = event["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"] == f"too old resource version: {rv0} ({compacted})"
    # From the compaction point on, it works again.
    await http.post(CM, json=cm("b"))
    (event,) = await watch_lines(http, CM, 1, resourceVersion=str(compacted))
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "b")


async def test_watch_ends_at_its_timeout_and_when_closed(
    http: httpx.AsyncClient, double: KubeApiDouble
) -> None:
    r = await http.get(CM, params={"watch": "1", "timeoutSeconds": "0"})
    assert r.status_code == 200 and r.text == ""
    rv = (await http.get(CM)).json()["metadata"]["resourceVersion"]
    async with http.stream("GET", CM, params={"watch": "true", "resourceVersion": rv}) as r:
        await double.close_watches()
        assert [line async for line in r.aiter_lines() if line] == []


async def test_requests_are_recorded_with_their_rbac_verbs(
    http: httpx.AsyncClient, double: KubeApiDouble
) -> None:
    await http.post(CM, json=cm("a"))
    await http.get(f"{CM}/a")
    await http.get(CM)
    await http.get(CM, params={"watch": "true", "timeoutSeconds": "0"})
    await http.put(f"{CM}/a", json=cm("a"))
    await http.patch(f"{CM}/a", json={}, headers={"content-type": "application/merge-patch+json"})
    await http.delete(f"{CM}/a")
    assert [r.verb for r in double.requests] == [
        "create", "get", "list", "watch", "update", "patch", "delete",
    ]  # fmt: skip
    assert double.verbs_used() >= {("", "configmaps", "create"), ("", "configmaps", "watch")}
