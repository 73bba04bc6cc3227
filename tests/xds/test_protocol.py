"""Protocol behaviour pinned with simulated ADS clients (fast, no Envoy)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from switchback.xds.cache import CLUSTER, ENDPOINT, LISTENER, ROUTE
from switchback.xds.client import AdsClient
from switchback.xds.control import ControlPlane
from switchback.xds.state import StateStore

from .conftest import enrolled_client

OLD = {"role": "apigw", "version": "current"}


def sidecar_md(**kw: Any) -> dict[str, Any]:
    return {"kind": "sidecar", "role": "apigw", "version": "current", "listen_port": 1,
            "app_port": 2, **kw}  # fmt: skip


@pytest.fixture
async def clients(cp: ControlPlane, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[AdsClient] = []

    async def make(node_id: str, **kw: Any) -> AdsClient:
        reject = kw.pop("reject", None)
        c = enrolled_client(cp, node_id, sidecar_md(**kw), tmp_path / "tls", reject=reject)
        made.append(c)
        await c.start()
        return c

    yield make
    for c in made:
        await c.stop()


def routes_to(c: AdsClient) -> set[str]:
    rc = c.resources[ROUTE].get("inbound")
    if rc is None:
        return set()
    return {r.route.cluster for vh in rc.virtual_hosts for r in vh.routes}


async def test_initial_config_and_ack(cp: ControlPlane, clients) -> None:
    c = await clients("n1")
    report = await cp.wait_acked({"id": "n1"}, timeout=5, expect=["n1"])
    assert report.ok, report
    assert set(c.resources[CLUSTER]) == {"local-app"}
    assert set(c.resources[LISTENER]) == {"inbound"}
    assert routes_to(c) == {"local-app"}


async def test_make_before_break_ordering(cp: ControlPlane, clients) -> None:
    c = await clients("n1")
    assert (await cp.wait_acked(None, timeout=5, expect=["n1"])).ok
    await cp.set_endpoints("apigw-new", [("127.0.0.1", 9999)])
    start = len(c.log)
    v = await cp.set_redirect(OLD, "apigw-new")
    assert (await cp.wait_acked(OLD, v, timeout=5)).ok
    seq = [(r.type_url, r.names) for r in c.log[start:]]
    # Cluster, then its endpoints, then the route that uses it.
    assert seq == [
        (CLUSTER, ["local-app", "svc:apigw-new"]),
        (ENDPOINT, ["svc:apigw-new"]),
        (ROUTE, ["inbound"]),
    ]
    assert "svc:apigw-new" in routes_to(c)

    start = len(c.log)
    v = await cp.clear_redirect(OLD)
    assert (await cp.wait_acked(OLD, v, timeout=5)).ok
    seq = [(r.type_url, r.names) for r in c.log[start:]]
    # Route away first; the cluster goes only after that route is ACKed.
    assert seq == [(ROUTE, ["inbound"]), (CLUSTER, ["local-app"])]
    assert routes_to(c) == {"local-app"}


async def test_nack_keeps_last_good_and_is_reported(cp: ControlPlane, clients) -> None:
    def reject(type_url: str, resources: dict[str, Any]) -> str | None:
        if type_url == ENDPOINT and "svc:scenario" in resources:
            eps = resources["svc:scenario"].endpoints
            if eps and eps[0].lb_endpoints:
                return "malformed endpoint (simulated)"
        return None

    c = await clients("n1", outbound={"scenario": 3}, reject=reject)
    assert (await cp.wait_acked(None, timeout=5, expect=["n1"])).ok
    good = cp.nodes()[0]["acked_version"]
    v = await cp.set_endpoints("scenario", [("127.0.0.1", 4000)])
    report = await cp.wait_acked(None, v, timeout=5)
    assert report.nacked == {"n1": "malformed endpoint (simulated)"}
    [node] = cp.nodes()
    assert node["acked_version"] == good
    assert node["last_nack"]["type"] == "eds" and node["last_nack"]["version"] == v
    assert node["types"]["eds"]["pending"] is False
    # The client still holds the old (empty) endpoints: last good config.
    assert not c.resources[ENDPOINT]["svc:scenario"].endpoints[0].lb_endpoints


async def test_wait_acked_times_out_on_a_silent_node(cp: ControlPlane, clients) -> None:
    c = await clients("n1")
    assert (await cp.wait_acked(None, timeout=5, expect=["n1"])).ok
    c.reject = None
    # Stop reading: pretend the client hangs without ACKing.
    c._on_response = lambda resp: None  # type: ignore[method-assign]
    v = await cp.set_redirect({"id": "n1"}, "apigw-new")
    report = await cp.wait_acked({"id": "n1"}, v, timeout=0.3)
    assert report.timed_out and report.pending == ["n1"] and not report.ok


async def test_redirect_applies_to_nodes_that_connect_later(cp: ControlPlane, clients) -> None:
    v = await cp.set_redirect(OLD, "apigw-new")
    c = await clients("late")
    assert (await cp.wait_acked(None, timeout=5, expect=["late"])).ok
    assert "svc:apigw-new" in routes_to(c)
    assert cp.nodes()[0]["acked_version"] >= v


async def test_node_reenrolled_with_a_new_spec_gets_new_config(cp: ControlPlane, clients) -> None:
    c = await clients("n1", listen_port=1000)
    assert (await cp.wait_acked(None, timeout=5, expect=["n1"])).ok
    v1 = cp.nodes()[0]["version"]
    await c.stop()
    c2 = await clients("n1", listen_port=2000)  # same id, restarted elsewhere (enrolled anew)
    await c2.wait_for(lambda c: "inbound" in c.resources[LISTENER])
    assert c2.resources[LISTENER]["inbound"].address.socket_address.port_value == 2000
    assert (await cp.wait_acked(None, timeout=5, expect=["n1"])).ok
    assert cp.nodes()[0]["version"] > v1


def test_state_store_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    s = StateStore(path)
    s.intent.endpoints["a"] = [("127.0.0.1", 1)]
    s.intent.redirects.append(({"role": "apigw"}, "a"))
    v = s.next_version()
    s.save()
    s2 = StateStore(path)
    assert s2.version == v and s2.next_version() == v + 1
    assert s2.intent.endpoints == {"a": [("127.0.0.1", 1)]}
    assert s2.intent.redirects == [({"role": "apigw"}, "a")]
    s2.ensure_above(v + 100)
    assert StateStore(path).version == v + 101
