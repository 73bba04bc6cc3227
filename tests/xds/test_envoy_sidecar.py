"""Against real Envoy processes and real HTTP apps on loopback."""

from __future__ import annotations

import asyncio
import time

import httpx

from switchback.xds.control import ControlPlane
from switchback.xds.resources import REDIRECT_HEADER

from .conftest import SidecarFactory, envoy_stat, push_bad_route, wait_until

OLD = {"role": "apigw", "version": "current"}


def one_connection_client(base_url: str) -> httpx.AsyncClient:
    # A single pooled connection: the pinned keep-alive connection a redirect must beat.
    return httpx.AsyncClient(
        base_url=base_url,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=5.0,
    )


async def test_sidecar_connects_and_serves_local_app(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    app = app_factory("old")
    sc = await sidecars(cp, "old-1", app)
    async with httpx.AsyncClient(timeout=5.0) as c:
        r = await c.get(f"{sc.url}/hello")
    assert r.status_code == 200
    assert r.json() == {"app": "old", "redirected_by": None}
    [node] = cp.nodes()
    assert node["id"] == "old-1" and node["connected"] and node["in_sync"]
    assert node["metadata"]["role"] == "apigw"
    assert node["acked_version"] == node["version"]


async def _redirect_setup(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory, xds_api: str = "sotw"
):
    old_app, new_app = app_factory("old"), app_factory("new")
    old = await sidecars(cp, "old-1", old_app, xds_api=xds_api)
    new = await sidecars(cp, "new-1", new_app, version="new", xds_api=xds_api)
    await cp.set_endpoints("apigw-new", [("127.0.0.1", new.listen_port)])
    return old, new


async def test_redirect_moves_a_pinned_keepalive_connection(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    old, new = await _redirect_setup(cp, sidecars, app_factory)
    results: list[tuple[float, int, str | None, str | None]] = []
    stop = asyncio.Event()

    async with one_connection_client(old.url) as client:

        async def drive() -> None:
            i = 0
            while not stop.is_set():
                t = time.monotonic()
                try:
                    r = await client.get(f"/req/{i}")
                    body = r.json()
                    results.append((t, r.status_code, body["app"], r.headers.get(REDIRECT_HEADER)))
                except httpx.HTTPError as e:
                    results.append((t, 0, repr(e), None))
                i += 1

        driver = asyncio.create_task(drive())
        await wait_until(lambda: len(results) >= 20, what="requests before the redirect")
        version = await cp.set_redirect(OLD, "apigw-new")
        report = await cp.wait_acked(OLD, version, timeout=5)
        acked_at = time.monotonic()
        assert report.ok and report.acked == ["old-1"], report
        n_at_ack = len(results)
        await wait_until(lambda: len(results) >= n_at_ack + 30, what="requests after the ACK")
        stop.set()
        await driver

    assert all(code == 200 for _, code, _, _ in results), [r for r in results if r[1] != 200]
    before = [r for r in results if r[0] < acked_at]
    after = [r for r in results if r[0] >= acked_at]
    assert before[0][2] == "old"
    assert len(after) >= 30 and all(app == "new" for _, _, app, _ in after)
    assert all(hdr == "old-1" for _, _, _, hdr in after)
    # The new app saw the header naming the redirect.
    assert any(by == "old-1" for _, by in new.app.seen)
    # All of it went over one downstream connection of the old sidecar.
    assert envoy_stat(old, "http.inbound.downstream_cx_total") == 1
    # The redirect was a route (RDS) change only: no listener was modified or drained.
    assert envoy_stat(old, "listener_manager.listener_modified") == 0
    assert envoy_stat(old, "listener_manager.total_listeners_draining") == 0
    assert envoy_stat(old, "http.inbound.rds.inbound.update_success") >= 2


async def test_clear_redirect_returns_traffic_to_local_app(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    old, _new = await _redirect_setup(cp, sidecars, app_factory)
    async with one_connection_client(old.url) as client:
        v = await cp.set_redirect(OLD, "apigw-new")
        assert (await cp.wait_acked(OLD, v, timeout=5)).ok
        assert (await client.get("/a")).json()["app"] == "new"
        v = await cp.clear_redirect(OLD)
        report = await cp.wait_acked(OLD, v, timeout=5)
        assert report.ok, report
        for i in range(10):
            r = await client.get(f"/b/{i}")
            assert r.status_code == 200 and r.json()["app"] == "old"
            assert REDIRECT_HEADER not in r.headers
    # The redirect cluster went away once no route used it (make-before-break removal).
    await wait_until(
        lambda: "svc:apigw-new" not in old.envoy.admin_get("/clusters").text,
        what="cluster removal",
    )


async def test_loop_guard_serves_locally_when_target_also_redirects(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    old, _new = await _redirect_setup(cp, sidecars, app_factory)
    # Misconfiguration: every apigw sidecar, the new one included, redirects to apigw-new.
    v = await cp.set_redirect({"role": "apigw"}, "apigw-new")
    assert (await cp.wait_acked({"role": "apigw"}, v, timeout=5)).ok
    async with httpx.AsyncClient(timeout=5.0) as c:
        r = await c.get(f"{old.url}/x")
    # old -> new sidecar sees the header and serves locally instead of looping.
    assert r.status_code == 200
    assert r.json() == {"app": "new", "redirected_by": "old-1"}


async def test_invalid_update_is_nacked_and_last_good_config_kept(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    app = app_factory("old")
    sc = await sidecars(cp, "old-1", app)
    good = cp.nodes()[0]["acked_version"]

    # The typed API refuses what Envoy would refuse...
    try:
        await cp.set_endpoints("apigw-new", [("not-an-ip", 80)])
        raise AssertionError("expected ValueError")
    except ValueError:
        pass

    # ...so push a bad resource underneath it: a route to a cluster that does not exist.
    bad = push_bad_route(cp, "old-1")

    report = await cp.wait_acked({"id": "old-1"}, bad.version, timeout=5)
    assert not report.ok and list(report.nacked) == ["old-1"], report
    assert "no-such-cluster" in report.nacked["old-1"]
    [node] = cp.nodes()
    assert node["last_nack"]["type"] == "rds"
    assert node["last_nack"]["version"] == bad.version
    assert "no-such-cluster" in node["last_nack"]["error"]
    assert node["acked_version"] == good and not node["in_sync"]

    # Still serving with the last good config.
    async with httpx.AsyncClient(timeout=5.0) as c:
        r = await c.get(f"{sc.url}/still")
    assert r.status_code == 200 and r.json()["app"] == "old"

    # A good update after the NACK is applied.
    new_app = app_factory("new")
    await cp.set_endpoints("apigw-new", [("127.0.0.1", new_app.port)])
    v = await cp.set_redirect({"id": "old-1"}, "apigw-new")
    assert (await cp.wait_acked({"id": "old-1"}, v, timeout=5)).ok
    async with httpx.AsyncClient(timeout=5.0) as c:
        assert (await c.get(f"{sc.url}/after")).json()["app"] == "new"


async def test_outbound_listener_resolves_peer_through_eds(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    from .conftest import free_port

    scenario_a, scenario_b = app_factory("scenario-a"), app_factory("scenario-b")
    out_port = free_port()
    await cp.set_endpoints("scenario", [("127.0.0.1", scenario_a.port)])
    await sidecars(cp, "apigw-1", app_factory("apigw"), outbound={"scenario": out_port})
    async with httpx.AsyncClient(timeout=5.0) as c:
        # The app calls its peer role through its own sidecar's outbound listener.
        assert (await c.get(f"http://127.0.0.1:{out_port}/run")).json()["app"] == "scenario-a"
        v = await cp.set_endpoints("scenario", [("127.0.0.1", scenario_b.port)])
        assert (await cp.wait_acked({"id": "apigw-1"}, v, timeout=5)).ok
        assert (await c.get(f"http://127.0.0.1:{out_port}/run")).json()["app"] == "scenario-b"
