"""Who may speak for a node: mutual TLS, the node id bound to the certificate, the registered
spec served whatever a node reports, the admin API behind a token. Real gRPC, real Envoy."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from switchback.xds.admin import admin_app
from switchback.xds.cache import CLUSTER
from switchback.xds.client import AdsClient
from switchback.xds.control import ControlPlane
from switchback.xds.pki import Authority, NodeCredentials, make_csr, node_identity
from switchback.xds.resources import NodeSpec

from .conftest import Sidecar, SidecarFactory, enrolled_client
from .test_restart_and_fleet import get_app

TOKEN = "admin-token-for-tests"


def hijacker_md(app_port: int) -> dict[str, Any]:
    """What an attacker reports: the victim's labels, its own app's port."""
    return {"kind": "sidecar", "role": "apigw", "version": "current", "environment": "test",
            "listen_port": 1, "app_port": app_port}  # fmt: skip


async def refused(client: AdsClient) -> grpc.aio.AioRpcError:
    """Start a client and wait until its stream is over; it must have failed."""
    await client.start()
    try:
        await client.wait_for(lambda c: c.ended.is_set(), timeout=10)
    finally:
        await client.stop()
    assert client.error is not None, "the stream was accepted"
    assert client.resources[CLUSTER] == {}, "config was sent to a refused stream"
    return client.error


def local_app_port(client: AdsClient) -> int:
    c = client.resources[CLUSTER]["local-app"]
    return int(
        c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value
    )


async def victim(cp: ControlPlane, sidecars: SidecarFactory, app_factory) -> Sidecar:
    sc = await sidecars(cp, "victim-1", app_factory("victim"))
    assert await get_app(sc.url) == "victim"
    return sc


def node(cp: ControlPlane, node_id: str) -> dict[str, Any]:
    [n] = cp.nodes({"id": node_id})
    return n


async def test_hijack_without_credentials_is_refused(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory
) -> None:
    """The issue's attack: a process with no credentials claims a live sidecar's node id with
    its own app_port. Plaintext and TLS-without-a-client-certificate are both refused before
    they name a node; the sidecar keeps serving its own app, also after the attempt."""
    sc = await victim(cp, sidecars, app_factory)
    evil = app_factory("attacker")
    before = node(cp, "victim-1")
    target = f"127.0.0.1:{cp.port}"

    plain = AdsClient(target, "victim-1", hijacker_md(evil.port))
    assert (await refused(plain)).code() == grpc.StatusCode.UNAVAILABLE

    ca_only = grpc.ssl_channel_credentials(cp.authority.trust_bundle())  # type: ignore[union-attr]
    no_cert = AdsClient(target, "victim-1", hijacker_md(evil.port), credentials=ca_only)
    assert (await refused(no_cert)).code() == grpc.StatusCode.UNAVAILABLE

    after = node(cp, "victim-1")
    assert after["connected"] and after["in_sync"]
    assert after["metadata"] == before["metadata"] and after["peer"] == before["peer"]
    assert after["version"] == before["version"]
    for _ in range(5):
        assert await get_app(sc.url) == "victim"
    assert evil.seen == []


async def test_a_node_certificate_cannot_claim_another_node(
    cp: ControlPlane, sidecars: SidecarFactory, app_factory, tmp_path: Path
) -> None:
    """Node B's valid credentials, naming node A: refused with PERMISSION_DENIED, A untouched."""
    sc = await victim(cp, sidecars, app_factory)
    evil = app_factory("attacker")
    spec_b = NodeSpec(kind="sidecar", listen_port=1, app_port=evil.port)
    creds_b = cp.enroll("other-b", spec_b, tmp_path / "b")
    assert creds_b is not None
    before = node(cp, "victim-1")
    stolen = AdsClient(
        f"127.0.0.1:{cp.port}",
        "victim-1",
        hijacker_md(evil.port),
        credentials=creds_b.channel_credentials(),
    )
    err = await refused(stolen)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert node_identity("other-b") in (err.details() or "")
    after = node(cp, "victim-1")
    assert (after["connected"], after["metadata"], after["version"]) == (
        True,
        before["metadata"],
        before["version"],
    )
    assert await get_app(sc.url) == "victim" and evil.seen == []


async def test_reported_metadata_never_changes_the_config(cp: ControlPlane, tmp_path: Path) -> None:
    """Even with its own valid certificate, a node gets the spec it was registered with: what it
    reports (another app_port, other labels) neither routes traffic nor matches selectors."""
    registered = {"kind": "sidecar", "role": "apigw", "version": "current", "listen_port": 1,
                  "app_port": 2000}  # fmt: skip
    honest = enrolled_client(cp, "n1", registered, tmp_path)
    creds = NodeCredentials.read(tmp_path / "n1")
    await honest.start()
    await honest.wait_for(lambda c: "local-app" in c.resources[CLUSTER])
    await honest.stop()
    liar = AdsClient(
        f"127.0.0.1:{cp.port}",
        "n1",
        {**registered, "app_port": 6666, "role": "scenario"},
        credentials=creds.channel_credentials(),
    )
    await liar.start()
    try:
        await liar.wait_for(lambda c: "local-app" in c.resources[CLUSTER])
        assert local_app_port(liar) == 2000
        n = node(cp, "n1")
        assert n["metadata"]["app_port"] == 2000 and n["metadata"]["role"] == "apigw"
        assert cp.nodes({"role": "scenario"}) == []
    finally:
        await liar.stop()


async def test_a_replaced_or_forgotten_certificate_is_refused(
    cp: ControlPlane, tmp_path: Path
) -> None:
    md = {"kind": "sidecar", "role": "apigw", "listen_port": 1, "app_port": 2}
    spec = NodeSpec.from_metadata(md)
    first = cp.enroll("n1", spec, tmp_path / "first")
    second = cp.enroll("n1", spec, tmp_path / "second")  # a respawn: new key, new certificate
    assert first is not None and second is not None
    target = f"127.0.0.1:{cp.port}"
    old = AdsClient(target, "n1", md, credentials=first.channel_credentials())
    err = await refused(old)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "replaced" in (err.details() or "")
    current = AdsClient(target, "n1", md, credentials=second.channel_credentials())
    await current.start()
    await current.wait_for(lambda c: "local-app" in c.resources[CLUSTER])
    await current.stop()
    cp.forget_node("n1")  # decommissioned: its certificate is worth nothing any more
    again = AdsClient(target, "n1", md, credentials=second.channel_credentials())
    err = await refused(again)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "not registered" in (
        err.details() or ""
    )


def test_credentials_on_disk_are_private_and_survive(tmp_path: Path) -> None:
    ca = Authority(tmp_path / "ca")
    creds = ca.enroll_files("n1", tmp_path / "n1")
    for p in [tmp_path / "ca", tmp_path / "n1"]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    for p in [*(tmp_path / "ca").iterdir(), creds.cert, creds.key, creds.ca]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    again = Authority(tmp_path / "ca")  # a restart: the same CA, not a new one
    assert again.cert == ca.cert
    assert again.trust_bundle() == creds.ca.read_bytes()


def test_node_ids_that_cannot_be_identities_are_refused(tmp_path: Path) -> None:
    ca = Authority(tmp_path / "ca")
    for bad in ["", "a/b", "a b", "..", "x" * 201, "é"]:
        with pytest.raises(ValueError, match="node id"):
            ca.enroll_files(bad, tmp_path / "n")
        with pytest.raises(ValueError, match="node id"):
            make_csr(bad)


async def test_admin_api_without_the_token_is_401_and_changes_nothing(
    cp: ControlPlane, tmp_path: Path
) -> None:
    await cp.set_endpoints("apigw-new", [("127.0.0.1", 9)])
    version = cp.state.version
    _key, csr = make_csr("intruder")
    transport = httpx.ASGITransport(app=admin_app(cp, TOKEN))
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/redirect", {"selector": {"role": "apigw"}, "target": "apigw-new"}),
        ("POST", "/redirect/clear", {"selector": {"role": "apigw"}}),
        ("PUT", "/services/apigw-new/endpoints", {"endpoints": ["127.0.0.1:6666"]}),
        ("POST", "/nodes/intruder/enroll", {"spec": {"app_port": 6666}, "csr": csr.decode()}),
        ("DELETE", "/nodes/victim", None),
        ("GET", "/nodes", None),
        ("GET", "/redirects", None),
        ("GET", "/services", None),
        ("POST", "/wait-acked", {"timeout": 0}),
    ]
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
        assert (await http.get("/healthz")).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            for method, path, body in calls:
                r = await http.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.text)
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/redirects", headers=good)).json() == {"redirects": []}
    assert cp.redirects() == [] and cp.endpoints() == {"apigw-new": [("127.0.0.1", 9)]}
    assert cp.registered("intruder") is None and cp.state.version == version


async def test_admin_enroll_signs_a_request_for_the_named_node(
    cp: ControlPlane, tmp_path: Path
) -> None:
    key, csr = make_csr("whatever-the-request-says")
    transport = httpx.ASGITransport(app=admin_app(cp, TOKEN))
    spec = {"kind": "sidecar", "role": "apigw", "listen_port": 1, "app_port": 2}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://admin", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as http:
        bad = await http.post("/nodes/n1/enroll", json={"spec": spec, "csr": "garbage"})
        assert bad.status_code == 400 and "certificate request" in bad.json()["error"]
        assert cp.registered("n1") is None
        r = await http.post("/nodes/n1/enroll", json={"spec": spec, "csr": csr.decode()})
        assert r.status_code == 200, r.text
    got = r.json()
    assert got["identity"] == node_identity("n1")
    d = tmp_path / "n1"
    d.mkdir()
    (d / "node.key").write_bytes(key)
    (d / "node.crt").write_text(got["certificate"])
    (d / "ca.crt").write_text(got["ca"])
    client = AdsClient(
        f"127.0.0.1:{cp.port}",
        "n1",
        spec,
        credentials=NodeCredentials.read(d).channel_credentials(),
    )
    await client.start()
    try:
        await client.wait_for(lambda c: "local-app" in c.resources[CLUSTER])
        assert local_app_port(client) == 2
    finally:
        await client.stop()


async def test_plaintext_only_on_loopback(state_file: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await ControlPlane(state_file=state_file).start("0.0.0.0")


async def test_staged_ca_rotation(tmp_path: Path, state_file: Path) -> None:
    """docs/xds.md's CA rotation: while `trusted.pem` holds the old CA, nodes with certificates
    of the old CA stay accepted by a control plane that now signs with the new one; once it is
    removed they are not."""
    old = Authority(tmp_path / "old-ca")
    md = {"kind": "sidecar", "role": "apigw", "listen_port": 1, "app_port": 2}
    creds = old.enroll_files("n1", tmp_path / "n1")
    current = tmp_path / "xds-ca"
    new = Authority(current)
    # Step 1 happened: the node was (re)spawned trusting both CAs.
    creds.ca.write_bytes(old.trust_bundle() + new.trust_bundle())
    # Step 2: the new CA signs; the old one is still trusted.
    (current / "trusted.pem").write_bytes(old.trust_bundle())

    async def connects() -> grpc.aio.AioRpcError | None:
        cp = ControlPlane(state_file=state_file, authority=Authority(current))
        await cp.start()
        try:
            cp.register_node("n1", NodeSpec.from_metadata(md), creds.fingerprint)
            c = AdsClient(f"127.0.0.1:{cp.port}", "n1", md, credentials=creds.channel_credentials())
            await c.start()
            try:
                await c.wait_for(lambda c: c.ended.is_set() or bool(c.resources[CLUSTER]))
            finally:
                await c.stop()
            return c.error
        finally:
            await cp.stop(0)

    assert await connects() is None
    # Step 3: the old CA is dropped: its certificates are refused at the handshake.
    (current / "trusted.pem").unlink()
    err = await connects()
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE


async def test_an_open_stream_ends_when_its_certificate_is_revoked(
    cp: ControlPlane, tmp_path: Path
) -> None:
    """Re-enrolling a node (a respawn) or forgetting it ends a stream still open with the old
    certificate: a stolen key stops working at once, not at the next reconnect."""
    md = {"kind": "sidecar", "role": "apigw", "listen_port": 1, "app_port": 2}
    spec = NodeSpec.from_metadata(md)
    first = cp.enroll("n1", spec, tmp_path / "first")
    assert first is not None
    target = f"127.0.0.1:{cp.port}"
    old = AdsClient(target, "n1", md, credentials=first.channel_credentials())
    await old.start()
    try:
        await old.wait_for(lambda c: "local-app" in c.resources[CLUSTER])
        second = cp.enroll("n1", spec, tmp_path / "second")
        assert second is not None
        await old.wait_for(lambda c: c.ended.is_set())
        assert old.error is not None and old.error.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await old.stop()
    current = AdsClient(target, "n1", md, credentials=second.channel_credentials())
    await current.start()
    try:
        await current.wait_for(lambda c: "local-app" in c.resources[CLUSTER])
        cp.register_node("n1", spec)  # the same certificate kept: the stream goes on
        v = await cp.set_redirect({"id": "n1"}, "elsewhere")
        assert (await cp.wait_acked({"id": "n1"}, v, timeout=5)).ok
        assert not current.ended.is_set()
        cp.forget_node("n1")
        await current.wait_for(lambda c: c.ended.is_set())
        assert current.error is not None
        assert current.error.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await current.stop()
