"""The second device flavour of examples/provision: a static route on a real FRRouting router
(zebra + staticd in a network namespace made by the fixture), over HTTP (``POST /routes``) and
with the blocks called directly for the in-doubt cases. What each test asserts is seen through
FRR itself — ``show running-config staticd``, ``show ip route PREFIX json`` and the namespace's
kernel table — not through switchback's own records."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from provision_app import frr, frr_lab

from switchback.engine import BlockContext
from tests.examples.conftest import Server

pytestmark = pytest.mark.timeout(60)

REACHABLE = "192.0.2.254"  # in the router's connected network (192.0.2.1/24 on sb0)
BLACKHOLE_REFUSAL = "Route cannot have blackhole and non-blackhole nexthops simultaneously"


def request(prefix: str, next_hop: str = REACHABLE) -> dict[str, Any]:
    return {"router": "edge1", "prefix": prefix, "next_hop": next_hop}


def configured(router: frr_lab.FrrRouter, prefix: str) -> list[str]:
    """staticd's running-configuration lines for ``prefix``."""
    return [line for line in router.static_config() if line.split()[2] == prefix]


def installed(router: frr_lab.FrrRouter, prefix: str, next_hop: str) -> dict[str, Any] | None:
    """zebra's installed static entry for ``prefix`` through ``next_hop`` (show ip route json)."""
    return frr.installed(router.routes(prefix).get(prefix, []), next_hop)


def in_kernel(router: frr_lab.FrrRouter, prefix: str) -> list[str]:
    return [line for line in router.kernel_routes().splitlines() if line.startswith(prefix)]


@contextmanager
def blackholed(router: frr_lab.FrrRouter, prefix: str) -> Iterator[None]:
    """An operator null-routes ``prefix``: FRR then refuses any gateway route to it."""
    router.vtysh("configure terminal", f"ip route {prefix} Null0")
    try:
        yield
    finally:
        router.vtysh("configure terminal", f"no ip route {prefix} Null0")


def test_success_installs_the_route(frr_server: Server, frr_router: frr_lab.FrrRouter) -> None:
    r = frr_server.client.post("/routes", json=request("198.51.100.0/24"))
    assert r.status_code == 200, r.text
    body = r.json()
    xid, tag = body["xid"], frr.tag_of(body["xid"])
    assert body["status"] == "completed"
    assert body["result"] == {
        "router": "edge1",
        "prefix": "198.51.100.0/24",
        "next_hop": REACHABLE,
        "installed": True,
        "interface": "sb0",
        "distance": 1,
        "tag": tag,
        "created": True,
    }
    assert configured(frr_router, "198.51.100.0/24") == [
        f"ip route 198.51.100.0/24 {REACHABLE} tag {tag}"
    ]
    entry = installed(frr_router, "198.51.100.0/24", REACHABLE)
    assert entry is not None and entry["selected"] and entry["tag"] == tag, entry
    ((kernel,),) = [in_kernel(frr_router, "198.51.100.0/24")]
    assert f"via {REACHABLE} dev sb0 proto static" in kernel
    tx = frr_server.tx(xid)
    assert [(b["name"], b["status"]) for b in tx["blocks"]] == [
        ("static_route", "done"),
        ("verify", "done"),
    ]


def test_bad_request_is_refused_before_any_block(
    frr_server: Server, frr_router: frr_lab.FrrRouter
) -> None:
    bad = {**request("198.51.199.0/33", "192.0.2.300"), "distance": 5}
    r = frr_server.client.post("/routes", json=bad)
    assert r.status_code == 422, r.text
    paths = {v["path"] for v in r.json()["detail"]["violations"]}
    assert paths == {"/", "/prefix", "/next_hop"}, r.json()  # "/": distance is not accepted
    assert configured(frr_router, "198.51.199.0/24") == []


def test_unknown_router_is_refused_before_any_block(frr_server: Server) -> None:
    """edge9 is not in the inventory: 422 naming the routers there, no transaction started."""
    before = frr_server.admin("GET", "/transactions", params={"limit": 1000}).json()
    r = frr_server.client.post("/routes", json={**request("198.51.198.0/24"), "router": "edge9"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["violations"] == [
        {"path": "/router", "message": "no device 'edge9' in the inventory (have: edge1)"}
    ]
    assert frr_server.admin("GET", "/transactions", params={"limit": 1000}).json() == before


def test_frr_refuses_then_rollback_leaves_no_route(
    frr_server: Server, frr_router: frr_lab.FrrRouter
) -> None:
    prefix = "198.51.101.0/24"
    with blackholed(frr_router, prefix):
        r = frr_server.client.post("/routes", json=request(prefix))
        assert r.status_code == 424, r.text
        body = r.json()
        xid = body["xid"]
        assert body["status"] == "suspended"
        assert body["failed_block"] == "static_route"
        assert body["error"]["type"] == "FrrError"
        # FRR's own words, through vtysh: staticd's validation of the new next hop.
        assert body["error"]["message"] == (
            f"edge1 refused `ip route {prefix} {REACHABLE} tag {frr.tag_of(xid)}`: "
            f"% Configuration failed. Error type: validation Error description: {BLACKHOLE_REFUSAL}"
        )
        done = frr_server.admin(
            "POST", f"/transactions/{xid}/rollback", json={"reason": "prefix is null-routed"}
        )
        assert done.status_code == 200, done.text
        tx = done.json()
        assert tx["status"] == "rolled_back", tx
        assert tx["blocks"][0]["status"] == "undone"
        assert tx["blocks"][0]["undo_output"]["note"] == "absent"
        # The operator's blackhole is untouched, and no route of ours is left.
        assert configured(frr_router, prefix) == [f"ip route {prefix} Null0"]
    assert configured(frr_router, prefix) == []
    assert installed(frr_router, prefix, REACHABLE) is None
    assert in_kernel(frr_router, prefix) == []


def test_frr_refuses_then_rollforward_after_the_fix(
    frr_server: Server, frr_router: frr_lab.FrrRouter
) -> None:
    prefix = "198.51.102.0/24"
    with blackholed(frr_router, prefix):
        r = frr_server.client.post("/routes", json=request(prefix))
        assert r.status_code == 424, r.text
        xid = r.json()["xid"]
        assert BLACKHOLE_REFUSAL in r.json()["error"]["message"]
    # The operator lifted the null route: run again from the failed block.
    done = frr_server.admin(
        "POST", f"/transactions/{xid}/rollforward", json={"reason": "null route lifted"}
    )
    assert done.status_code == 200, done.text
    tx = done.json()
    assert tx["status"] == "completed", tx
    assert tx["result"]["installed"] is True
    assert configured(frr_router, prefix) == [
        f"ip route {prefix} {REACHABLE} tag {frr.tag_of(xid)}"
    ]
    assert installed(frr_router, prefix, REACHABLE) is not None
    assert len(in_kernel(frr_router, prefix)) == 1


def test_verify_fails_on_an_unreachable_next_hop_then_rollback_removes_the_route(
    frr_server: Server, frr_router: frr_lab.FrrRouter
) -> None:
    prefix, next_hop = "198.51.103.0/24", "203.0.113.254"  # no connected network holds it
    r = frr_server.client.post("/routes", json=request(prefix, next_hop))
    assert r.status_code == 424, r.text
    body = r.json()
    xid, tag = body["xid"], frr.tag_of(body["xid"])
    assert body["failed_block"] == "verify"
    assert body["error"]["message"] == (
        f"edge1: route {prefix} via {next_hop} is not installed after 2s: no route to it in the "
        f"RIB; staticd configuration: `ip route {prefix} {next_hop} tag {tag}`"
    )
    # Block 0 did configure it (FRR accepts the route, but cannot resolve the next hop).
    assert configured(frr_router, prefix) == [f"ip route {prefix} {next_hop} tag {tag}"]
    done = frr_server.admin("POST", f"/transactions/{xid}/rollback", json={"reason": "no link"})
    assert done.status_code == 200, done.text
    tx = done.json()
    assert tx["status"] == "rolled_back", tx
    assert tx["blocks"][0]["status"] == "undone"
    assert tx["blocks"][0]["undo_output"]["removed"] is True
    assert configured(frr_router, prefix) == []
    assert frr_router.routes(prefix) == {}


def test_verify_fails_then_rollforward_once_the_next_hop_is_reachable(
    frr_server: Server, frr_router: frr_lab.FrrRouter
) -> None:
    prefix, next_hop = "198.51.104.0/24", "198.18.0.254"
    r = frr_server.client.post("/routes", json=request(prefix, next_hop))
    assert r.status_code == 424, r.text
    xid = r.json()["xid"]
    assert r.json()["failed_block"] == "verify"
    assert "is not installed" in r.json()["error"]["message"]
    assert installed(frr_router, prefix, next_hop) is None
    frr_router.add_address("198.18.0.1/24")  # the link to the next hop comes up
    done = frr_server.admin(
        "POST", f"/transactions/{xid}/rollforward", json={"reason": "link is up"}
    )
    assert done.status_code == 200, done.text
    tx = done.json()
    assert tx["status"] == "completed", tx
    assert [b["status"] for b in tx["blocks"]] == ["done", "done"]
    assert tx["result"]["interface"] == "sb0"
    assert installed(frr_router, prefix, next_hop) is not None
    assert f"via {next_hop} dev sb0 proto static" in in_kernel(frr_router, prefix)[0]


# ------------------------------------------------------------------ the blocks called directly


@pytest.fixture
def frr_env(monkeypatch: pytest.MonkeyPatch, frr_inventory: Path) -> None:
    monkeypatch.setenv("PROVISION_DEVICES", str(frr_inventory))


def ctx(xid: str, prefix: str, phase: str = "do", **kw: Any) -> BlockContext:
    return BlockContext(
        xid=xid,
        scenario="route",
        block="static_route",
        attempt=1,
        request=request(prefix),
        phase=phase,
        **kw,
    )


def test_do_rerun_in_doubt_and_undo_without_the_dos_output(
    frr_env: None, frr_router: frr_lab.FrrRouter
) -> None:
    xid, prefix = uuid.uuid4().hex, "198.51.106.0/24"
    done = frr.add_route(ctx(xid, prefix))
    again = frr.add_route(ctx(xid, prefix))  # as after a crash before the commit
    assert again == done and done["created"] is True
    assert configured(frr_router, prefix) == [
        f"ip route {prefix} {REACHABLE} tag {frr.tag_of(xid)}"
    ]
    # The DO ran but its output never reached the store: the route's tag says it is ours.
    undone = frr.remove_route(ctx(xid, prefix, "undo", output=None))
    assert undone["removed"] is True
    assert configured(frr_router, prefix) == []
    # Run again (an UNDO in doubt): nothing left to do, no error.
    assert frr.remove_route(ctx(xid, prefix, "undo"))["note"] == "absent"


def test_a_route_that_was_there_before_is_never_removed(
    frr_env: None, frr_router: frr_lab.FrrRouter
) -> None:
    xid, prefix = uuid.uuid4().hex, "198.51.107.0/24"
    mine = f"ip route {prefix} {REACHABLE}"
    frr_router.vtysh("configure terminal", mine)  # configured by hand, before the transaction
    try:
        done = frr.add_route(ctx(xid, prefix))
        assert done["created"] is False and mine in done["note"], done
        for output in (done, None):  # with the DO's output, and without it (in doubt)
            undone = frr.remove_route(ctx(xid, prefix, "undo", output=output))
            assert undone["removed"] is False and undone["note"].startswith("left untouched")
        assert configured(frr_router, prefix) == [mine]
    finally:
        frr_router.vtysh("configure terminal", f"no {mine}")


def test_router_down_then_rollforward_after_restart(
    frr_env: None, frr_server: Server, frr_router: frr_lab.FrrRouter
) -> None:
    prefix = "198.51.105.0/24"
    frr_router.stop_daemons()
    try:
        r = frr_server.client.post("/routes", json=request(prefix))
        assert r.status_code == 424, r.text
        xid = r.json()["xid"]
        assert r.json()["failed_block"] == "static_route"
        message = r.json()["error"]["message"]
        assert message.startswith("edge1: vtysh `show daemons` failed (exit 1): "), message
        assert "failed to connect to any daemons" in message
        # An UNDO meanwhile must not call the route absent: it cannot know.
        with pytest.raises(frr.FrrError, match="failed to connect to any daemons"):
            frr.remove_route(ctx(xid, prefix, "undo"))
    finally:
        if not frr_router.alive():
            frr_router.stop_daemons()
            frr_router.start_daemons()
    done = frr_server.admin(
        "POST", f"/transactions/{xid}/rollforward", json={"reason": "router restarted"}
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed", done.json()
    assert installed(frr_router, prefix, REACHABLE) is not None
