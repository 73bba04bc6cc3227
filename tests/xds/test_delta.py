"""Incremental (delta) xDS against real Envoy processes (`--xds-api delta` bootstraps)."""

from __future__ import annotations

from pathlib import Path

import httpx

from switchback.xds.cache import CLUSTER, ENDPOINT, ROUTE, StreamEvent
from switchback.xds.control import ControlPlane
from switchback.xds.pki import Authority
from switchback.xds.resources import REDIRECT_HEADER

from .conftest import Sidecar, SidecarFactory, free_port, push_bad_route, wait_until
from .test_envoy_sidecar import _redirect_setup, one_connection_client
from .test_restart_and_fleet import get_app

OLD = {"role": "apigw", "version": "current"}


def events(cp: ControlPlane, node_id: str, since: int = 0) -> list[StreamEvent]:
    st = cp.cache.status(node_id)
    assert st is not None
    return list(st.log)[since:]


def sends(evs: list[StreamEvent]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """What the server sent: (type, resources carried, names removed), in order."""
    return [(e.type, e.names, e.removed) for e in evs if e.kind == "send"]


def index(evs: list[StreamEvent], kind: str, type_url: str) -> int:
    return next(i for i, e in enumerate(evs) if (e.kind, e.type) == (kind, type_url))


def held_versions(sc: Sidecar) -> dict[str, str]:
    """Per-resource versions of what Envoy holds, as Envoy itself reports them."""
    dump = sc.envoy.admin_get("/config_dump").json()
    out: dict[str, str] = {}
    for cfg in dump["configs"]:
        for c in cfg.get("dynamic_active_clusters", []):
            out[f"cds/{c['cluster']['name']}"] = c["version_info"]
        for lis in cfg.get("dynamic_listeners", []):
            out[f"lds/{lis['name']}"] = lis["active_state"]["version_info"]
        for rc in cfg.get("dynamic_route_configs", []):
            out[f"rds/{rc['route_config']['name']}"] = rc["version_info"]
    return out


def snapshot_version(resource_version: str) -> int:
    return int(resource_version.partition(".")[0])


async def test_delta_sidecar_redirect_and_back(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    old, _new = await _redirect_setup(cp, sidecars, app_factory, xds_api="delta")
    assert {n["id"]: n["api"] for n in cp.nodes()} == {"old-1": "delta", "new-1": "delta"}
    async with one_connection_client(old.url) as client:
        assert (await client.get("/a")).json() == {"app": "old", "redirected_by": None}
        v = await cp.set_redirect(OLD, "apigw-new")
        report = await cp.wait_acked(OLD, v, timeout=5)
        assert report.ok and report.acked == ["old-1"], report
        for i in range(5):
            r = await client.get(f"/b/{i}")
            assert r.json() == {"app": "new", "redirected_by": "old-1"}
            assert r.headers[REDIRECT_HEADER] == "old-1"
        v = await cp.clear_redirect(OLD)
        report = await cp.wait_acked(OLD, v, timeout=5)
        assert report.ok and report.acked == ["old-1"], report
        for i in range(5):
            r = await client.get(f"/c/{i}")
            assert r.json() == {"app": "old", "redirected_by": None}
    [node] = cp.nodes({"id": "old-1"})
    assert node["in_sync"] and node["acked_version"] == v and node["types"]["rds"]["acked"] == v
    await wait_until(
        lambda: "svc:apigw-new" not in old.envoy.admin_get("/clusters").text,
        what="cluster removal",
    )


async def test_delta_sends_only_what_changed_and_removes_after_the_route(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    a, b, c = app_factory("a"), app_factory("b"), app_factory("c")
    scenario_port = free_port()
    await cp.set_endpoints("scenario", [("127.0.0.1", a.port)])
    await cp.set_endpoints("billing", [("127.0.0.1", c.port)])
    await cp.set_endpoints("apigw-new", [("127.0.0.1", c.port)])
    outbound = {"scenario": scenario_port, "billing": free_port()}
    await sidecars(cp, "n1", app_factory("apigw"), outbound=outbound, xds_api="delta")
    assert (await cp.wait_acked({"id": "n1"}, timeout=5)).ok

    # One service's endpoints change: that one load assignment is all that goes out.
    mark = len(events(cp, "n1"))
    v = await cp.set_endpoints("scenario", [("127.0.0.1", b.port)])
    assert (await cp.wait_acked({"id": "n1"}, v, timeout=5)).ok
    assert sends(events(cp, "n1", mark)) == [(ENDPOINT, ("svc:scenario",), ())]
    assert await get_app(f"http://127.0.0.1:{scenario_port}/") == "b"

    # Redirect: only the new cluster, its endpoints, then the one route config.
    mark = len(events(cp, "n1"))
    v = await cp.set_redirect({"id": "n1"}, "apigw-new")
    assert (await cp.wait_acked({"id": "n1"}, v, timeout=5)).ok
    assert sends(events(cp, "n1", mark)) == [
        (CLUSTER, ("svc:apigw-new",), ()),
        (ENDPOINT, ("svc:apigw-new",), ()),
        (ROUTE, ("inbound",), ()),
    ]

    # Clear: the route moves first; the cluster is removed only once that route is ACKed,
    # and its endpoints are never removed while a route could still use them.
    mark = len(events(cp, "n1"))
    v = await cp.clear_redirect({"id": "n1"})
    assert (await cp.wait_acked({"id": "n1"}, v, timeout=5)).ok
    evs = events(cp, "n1", mark)
    assert sends(evs) == [(ROUTE, ("inbound",), ()), (CLUSTER, (), ("svc:apigw-new",))]
    assert index(evs, "ack", ROUTE) < index(evs, "send", CLUSTER)
    assert (await get_app(f"http://127.0.0.1:{scenario_port}/")) == "b"


async def test_delta_nack_is_recorded_and_last_good_config_kept(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    sc = await sidecars(cp, "old-1", app_factory("old"), xds_api="delta")
    good = cp.nodes()[0]["acked_version"]
    bad = push_bad_route(cp, "old-1")
    report = await cp.wait_acked({"id": "old-1"}, bad.version, timeout=5)
    assert not report.ok and list(report.nacked) == ["old-1"], report
    assert "no-such-cluster" in report.nacked["old-1"]
    [node] = cp.nodes()
    assert node["last_nack"]["type"] == "rds" and node["last_nack"]["version"] == bad.version
    assert "no-such-cluster" in node["last_nack"]["error"]
    assert node["acked_version"] == good and not node["in_sync"]
    assert not node["types"]["rds"]["pending"]
    assert await get_app(f"{sc.url}/still") == "old"
    assert snapshot_version(held_versions(sc)["rds/inbound"]) == good

    # A good update after the NACK is applied.
    new_app = app_factory("new")
    await cp.set_endpoints("apigw-new", [("127.0.0.1", new_app.port)])
    v = await cp.set_redirect({"id": "old-1"}, "apigw-new")
    assert (await cp.wait_acked({"id": "old-1"}, v, timeout=5)).ok
    assert await get_app(f"{sc.url}/after") == "new"


async def test_delta_control_plane_restart(
    state_file: Path, authority: Authority, sidecars: SidecarFactory, app_factory
) -> None:
    cp1 = ControlPlane(state_file=state_file, authority=authority)
    port = await cp1.start()
    try:
        old, _new = await _redirect_setup(cp1, sidecars, app_factory, xds_api="delta")
        v1 = await cp1.set_redirect(OLD, "apigw-new")
        assert (await cp1.wait_acked(None, v1, timeout=5)).ok
        before = held_versions(old)
        assert snapshot_version(before["rds/inbound"]) == v1
    finally:
        await cp1.stop(0)
    assert await get_app(old.url) == "new"  # control plane down: last config keeps serving

    # A new process would load the CA and the registered nodes from disk: so does this one.
    cp2 = ControlPlane(state_file=state_file, authority=Authority(authority.directory))
    await cp2.start(port=port)
    try:
        await wait_until(
            lambda: {n["id"] for n in cp2.nodes() if n["connected"]} == {"old-1", "new-1"},
            what="sidecars to reconnect",
        )
        assert (await cp2.wait_acked(None, timeout=5)).ok
        # initial_resource_versions told the new plane what each Envoy holds: same content,
        # so nothing was sent again, and the counter was raised above what Envoy reported.
        for node_id in ("old-1", "new-1"):
            assert sends(events(cp2, node_id)) == []
        assert cp2.state.version > v1
        assert held_versions(old) == before
        assert await get_app(old.url) == "new"

        v2 = await cp2.clear_redirect(OLD)
        assert v2 > v1
        assert (await cp2.wait_acked(OLD, v2, timeout=5)).ok
        assert await get_app(old.url) == "old"
        after = held_versions(old)
        assert snapshot_version(after["rds/inbound"]) == v2
        for key, ver in after.items():
            assert snapshot_version(ver) >= snapshot_version(before.get(key, ver)), key
    finally:
        await cp2.stop(0)


async def test_sotw_and_delta_nodes_on_one_control_plane(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    new = await sidecars(cp, "new-1", app_factory("new"), version="new", xds_api="delta")
    await cp.set_endpoints("apigw-new", [("127.0.0.1", new.listen_port)])
    sotw = await sidecars(cp, "old-sotw", app_factory("old-s"), xds_api="sotw")
    delta = await sidecars(cp, "old-delta", app_factory("old-d"), xds_api="delta")
    assert {n["id"]: n["api"] for n in cp.nodes()} == {
        "new-1": "delta",
        "old-sotw": "sotw",
        "old-delta": "delta",
    }
    mark = {n: len(events(cp, n)) for n in ("old-sotw", "old-delta")}
    v = await cp.set_redirect(OLD, "apigw-new")
    report = await cp.wait_acked(OLD, v, timeout=5)
    assert report.ok and report.acked == ["old-delta", "old-sotw"], report
    async with httpx.AsyncClient(timeout=5.0) as http:
        for sc in (sotw, delta):
            r = await http.get(f"{sc.url}/x")
            assert r.json() == {"app": "new", "redirected_by": sc.node_id}
    # The same make-before-break order; SotW sends the whole cluster set, delta the new one.
    assert sends(events(cp, "old-sotw", mark["old-sotw"]))[0] == (
        CLUSTER,
        ("local-app", "svc:apigw-new"),
        (),
    )
    assert sends(events(cp, "old-delta", mark["old-delta"]))[0] == (
        CLUSTER,
        ("svc:apigw-new",),
        (),
    )
    v = await cp.clear_redirect(OLD)
    report = await cp.wait_acked(OLD, v, timeout=5)
    assert report.ok and report.acked == ["old-delta", "old-sotw"], report
    assert await get_app(sotw.url) == "old-s"
    assert await get_app(delta.url) == "old-d"
