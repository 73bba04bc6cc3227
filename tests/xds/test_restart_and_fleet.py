"""Control-plane restart and many sidecars, against real Envoy processes."""

from __future__ import annotations

from pathlib import Path

import httpx

from switchback.xds.control import ControlPlane
from switchback.xds.pki import Authority

from .conftest import Sidecar, SidecarFactory, wait_until

OLD = {"role": "apigw", "version": "current"}


def envoy_versions(sc: Sidecar) -> dict[str, int]:
    """The last version_info Envoy applied, per type, as Envoy itself reports it."""
    dump = sc.envoy.admin_get("/config_dump").json()
    out: dict[str, int] = {}
    for cfg in dump["configs"]:
        kind = cfg["@type"].rsplit(".", 1)[-1]
        if cfg.get("version_info"):  # CDS and LDS: version of the last applied response
            out[kind] = int(cfg["version_info"])
        for rc in cfg.get("dynamic_route_configs", []):
            out[kind] = max(out.get(kind, 0), int(rc["version_info"]))
    return out


async def get_app(url: str) -> str:
    async with httpx.AsyncClient(timeout=5.0) as c:
        r = await c.get(url)
    assert r.status_code == 200
    return str(r.json()["app"])


async def test_control_plane_restart(
    state_file: Path, authority: Authority, sidecars: SidecarFactory, app_factory
) -> None:
    cp1 = ControlPlane(state_file=state_file, authority=authority)
    port = await cp1.start()
    try:
        old = await sidecars(cp1, "old-1", app_factory("old"))
        new = await sidecars(cp1, "new-1", app_factory("new"), version="new")
        await cp1.set_endpoints("apigw-new", [("127.0.0.1", new.listen_port)])
        v1 = await cp1.set_redirect(OLD, "apigw-new")
        assert (await cp1.wait_acked(None, v1, timeout=5)).ok
        assert await get_app(old.url) == "new"
        before = envoy_versions(old)
        assert max(before.values()) == v1
    finally:
        await cp1.stop(0)

    # Control plane down: sidecars keep serving with their last config.
    assert await get_app(old.url) == "new"
    assert await get_app(new.url) == "new"

    # A new process would load the CA and the registered nodes from disk: so does this one.
    cp2 = ControlPlane(state_file=state_file, authority=Authority(authority.directory))
    await cp2.start(port=port)
    try:
        await wait_until(
            lambda: {n["id"] for n in cp2.nodes() if n["connected"]} == {"old-1", "new-1"},
            what="sidecars to reconnect",
        )
        # The restarted plane rebuilt the same intent (redirect kept), at no older version.
        assert (await cp2.wait_acked(None, timeout=5)).ok
        for n in cp2.nodes():
            assert n["version"] > v1 or n["acked_version"] >= v1
        assert await get_app(old.url) == "new"

        # The next update is applied and its version is higher than anything seen before.
        v2 = await cp2.clear_redirect(OLD)
        assert v2 > v1
        report = await cp2.wait_acked(OLD, v2, timeout=5)
        assert report.ok, report
        assert await get_app(old.url) == "old"
        after = envoy_versions(old)
        assert after["RoutesConfigDump"] == v2
        assert all(after[k] >= before[k] for k in before), (before, after)
    finally:
        await cp2.stop(0)


async def test_wait_acked_covers_all_sidecars_and_reports_disconnected(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    new = await sidecars(cp, "new-1", app_factory("new"), version="new")
    await cp.set_endpoints("apigw-new", [("127.0.0.1", new.listen_port)])
    olds = [await sidecars(cp, f"old-{i}", app_factory(f"old{i}")) for i in range(3)]

    v = await cp.set_redirect(OLD, "apigw-new")
    report = await cp.wait_acked(OLD, v, timeout=5)
    assert report.ok and report.acked == ["old-0", "old-1", "old-2"], report
    # wait_acked returned only when every node had ACKed: each one serves the redirect now.
    for sc in olds:
        assert await get_app(sc.url) == "new"
        [node] = cp.nodes({"id": sc.node_id})
        assert node["acked_version"] >= v and node["types"]["rds"]["acked"] >= v

    # One sidecar dies; the next push reports it instead of hanging until the timeout.
    olds[1].envoy.kill()
    await wait_until(
        lambda: not cp.nodes({"id": "old-1"})[0]["connected"], what="disconnect noticed"
    )
    v2 = await cp.clear_redirect(OLD)
    report = await cp.wait_acked(OLD, v2, timeout=5)
    assert report.acked == ["old-0", "old-2"]
    assert report.disconnected == ["old-1"]
    assert not report.ok and not report.timed_out
    assert await get_app(olds[0].url) == "old0"
    assert await get_app(olds[2].url) == "old2"
    # The unaffected new sidecar counts as ACKed for v2 (its config did not change).
    assert (await cp.wait_acked({"id": "new-1"}, v2, timeout=1)).ok
