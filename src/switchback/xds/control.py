"""`ControlPlane`: the Python API the release controller (and the admin HTTP app) calls.

    cp = ControlPlane(state_file="state/xds.json")
    await cp.start(port=18000)
    v = await cp.set_endpoints("apigw-new", [("127.0.0.1", 21001)])
    v = await cp.set_redirect({"role": "apigw", "version": "current"}, "apigw-new")
    report = await cp.wait_acked({"role": "apigw", "version": "current"}, v, timeout=5)
    assert report.ok, report

Selectors are dicts matched against a node's labels: its registered spec's labels (kind, role,
version, environment, ...; for an unregistered node on a plaintext control plane, its bootstrap
metadata) plus `id` and `cluster`; a list value means "any of".

With an `Authority` the control plane serves ADS over mutual TLS only, and a stream must prove
the node id it names: the client certificate's URI SAN is the node's identity, the node must be
registered (`enroll` / `register_node`), and if a certificate was pinned at enrollment only that
one is accepted. What a node reports in its metadata never changes its config: the registered
spec does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from switchback.xds.cache import SHORT_NAMES, NodeStatus, Selector, SnapshotCache, matches
from switchback.xds.pki import Authority, NodeCredentials, fingerprint, node_identity
from switchback.xds.resources import NodeSpec, build_snapshot, validate_endpoints
from switchback.xds.server import Admission, AdsServicer, Refused
from switchback.xds.state import Registration, StateStore

_LOOPBACK = ("127.0.0.1", "::1", "[::1]", "localhost")


@dataclass
class AckReport:
    """Outcome of `wait_acked`: who has the config, who refused it, who is gone."""

    version: int | None
    acked: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    nacked: dict[str, str] = field(default_factory=dict)
    disconnected: list[str] = field(default_factory=list)
    timed_out: bool = False
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.pending or self.nacked or self.disconnected)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def node_view(st: NodeStatus, snapshot_version: int | None) -> dict[str, Any]:
    return {
        "id": st.id,
        "cluster": st.cluster,
        "metadata": st.metadata,
        "connected": st.connected,
        "api": st.api,
        "peer": st.peer,
        "connected_at": st.connected_at,
        "disconnected_at": st.disconnected_at,
        "version": snapshot_version,
        "acked_version": st.acked_version,
        "in_sync": snapshot_version is not None and st.acked_version == snapshot_version,
        "types": {
            SHORT_NAMES.get(t, t): {
                "sent": ts.sent_version,
                "acked": ts.acked_version,
                "pending": ts.pending,
            }
            for t, ts in st.types.items()
        },
        "last_nack": st.last_nack.as_dict() if st.last_nack else None,
        "nacks": st.nacks,
        "error": st.error,
    }


class ControlPlane:
    """Our xDS control plane: intent in, versioned snapshots per node out, over ADS."""

    def __init__(
        self,
        state_file: str | os.PathLike[str] | None = None,
        authority: Authority | None = None,
    ) -> None:
        self.cache = SnapshotCache()
        self.cache.on_new_node = self._on_new_node
        self.state = StateStore(state_file)
        self.authority = authority
        self._specs: dict[str, NodeSpec] = {}
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None
        self._lock = asyncio.Lock()

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve ADS on host:port (0 = pick a free port); returns the bound port.

        With an authority: mutual TLS. Without: plaintext, and only on loopback (tests and
        benchmarks; anyone who can connect could then speak for any node)."""
        server = grpc.aio.server(
            options=[
                # Envoy keeps one long-lived stream; answer its keepalive pings.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.max_concurrent_streams", 100_000),
            ]
        )
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
            AdsServicer(self.cache, self._version_seen, self._admit), server
        )
        if self.authority is not None:
            creds = self.authority.server_credentials(host)
            self.port = server.add_secure_port(f"{host}:{port}", creds)
        elif host in _LOOPBACK:
            self.port = server.add_insecure_port(f"{host}:{port}")
        else:
            raise ValueError(f"plaintext ADS only on loopback, not {host!r}: give an Authority")
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    # --- nodes ---------------------------------------------------------------------------
    def register_node(
        self, node_id: str, spec: NodeSpec, cert_fingerprint: str | None = None
    ) -> None:
        """Declare what a node is (persisted): the control plane serves it this spec, whatever
        the node reports. `cert_fingerprint` pins the one client certificate accepted from it
        (None keeps the pinned one; a new one revokes the previous certificate)."""
        old = self.state.registrations.get(node_id)
        if cert_fingerprint is None:
            cert_fingerprint = old.fingerprint if old is not None else ""
        self.state.registrations[node_id] = Registration(spec, cert_fingerprint)
        if old is not None and old.fingerprint != cert_fingerprint:
            self.cache.wake(node_id)  # a stream holding the replaced certificate is ended
        self._specs[node_id] = spec
        st = self.cache.status(node_id)
        if st is not None:
            st.cluster, st.metadata = self._declared(spec)
        fresh = self.cache.snapshot(node_id) is None
        self._rebuild([node_id], self.state.version if fresh else self._bump())
        self.state.save()

    def enroll(
        self, node_id: str, spec: NodeSpec, directory: str | os.PathLike[str]
    ) -> NodeCredentials | None:
        """Register a node and write its new credentials to `directory` (for an Envoy spawned
        on this host); any certificate issued before for this node id stops being accepted.
        Returns None on a plaintext control plane (nothing to write)."""
        if self.authority is None:
            self.register_node(node_id, spec)
            return None
        creds = self.authority.enroll_files(node_id, directory)
        self.register_node(node_id, spec, creds.fingerprint)
        return creds

    def enroll_request(self, node_id: str, spec: NodeSpec, csr_pem: str) -> dict[str, str]:
        """Register a node and sign its certificate request (the key stays with the node).
        -> {"certificate", "ca", "identity"} as PEM text."""
        if self.authority is None:
            raise ValueError("this control plane serves plaintext ADS: there is nothing to sign")
        cert = self.authority.sign_request(node_id, csr_pem)
        self.register_node(node_id, spec, fingerprint(cert))
        return {
            "certificate": cert.decode(),
            "ca": self.authority.trust_bundle().decode(),
            "identity": node_identity(node_id),
        }

    def registered(self, node_id: str) -> NodeSpec | None:
        reg = self.state.registrations.get(node_id)
        return reg.spec if reg is not None else None

    @staticmethod
    def _declared(spec: NodeSpec) -> tuple[str, dict[str, Any]]:
        """(cluster, metadata) of a registered node, as its bootstrap would say it."""
        return spec.labels.get("role") or spec.kind, spec.to_metadata()

    def _admit(self, node_id: str, cluster: str, metadata: dict[str, Any], auth: Any) -> Admission:
        """May this stream speak for `node_id`? -> what it is known by, and the check that it
        still may (re-asked when the node's registration or config changes)."""
        reg = self.state.registrations.get(node_id)
        valid: Any = lambda: True  # noqa: E731
        if self.authority is not None:
            denied = grpc.StatusCode.PERMISSION_DENIED
            peer = b"".join(auth.get("peer_spiffe_id", [])[:1]).decode(errors="replace")
            try:
                want = node_identity(node_id)
            except ValueError as e:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
            if peer != want:
                raise Refused(
                    denied,
                    f"the client certificate is for {peer or 'no node'}, not {want}",
                )
            if reg is None:
                raise Refused(denied, f"node {node_id!r} is not registered (enroll it first)")
            pem = b"".join(auth.get("x509_pem_cert", [])[:1])
            presented = fingerprint(pem) if pem else ""
            if reg.fingerprint and presented != reg.fingerprint:
                raise Refused(
                    denied,
                    f"this certificate of node {node_id!r} was replaced by a newer one",
                )

            def valid() -> bool:
                now = self.state.registrations.get(node_id)
                return now is not None and now.fingerprint in ("", presented)

        if reg is not None:
            return Admission(*self._declared(reg.spec), valid=valid)
        return Admission(cluster, metadata, valid=valid)

    def _on_new_node(self, st: NodeStatus) -> None:
        try:
            spec = self.registered(st.id) or NodeSpec.from_metadata(st.metadata)
        except (ValueError, TypeError) as e:
            st.error = f"bad node metadata: {e}"  # visible in nodes(); no config is sent
            return
        st.error = None
        self._specs[st.id] = spec
        # A changed spec for a node that already has a snapshot needs a fresh version.
        fresh = self.cache.snapshot(st.id) is None
        self._rebuild([st.id], self.state.version if fresh else self._bump())

    def _version_seen(self, node_id: str, seen: int) -> None:
        self.state.ensure_above(seen)
        snap = self.cache.snapshot(node_id)
        if snap is not None and snap.version <= seen:
            self.cache.set_snapshot(node_id, snap.with_version(self.state.version))

    def _labels(self, node_id: str) -> dict[str, Any]:
        st = self.cache.status(node_id)
        if st is not None:
            return st.labels()
        return {**self._specs[node_id].labels, "id": node_id}

    def _redirect_for(self, node_id: str) -> str | None:
        labels = self._labels(node_id)
        target: str | None = None
        for selector, tgt in self.state.intent.redirects:
            if matches(selector, labels):
                target = tgt
        return target

    def _rebuild(self, node_ids: Iterable[str], version: int) -> list[str]:
        """Rebuild snapshots; only nodes whose content changed get `version`."""
        changed = []
        for node_id in node_ids:
            spec = self._specs.get(node_id)
            if spec is None:
                continue
            snap = build_snapshot(
                node_id, spec, version, self._redirect_for(node_id), self.state.intent
            )
            old = self.cache.snapshot(node_id)
            if not snap.same_content(old):
                self.cache.set_snapshot(node_id, snap)
                changed.append(node_id)
        return changed

    def _bump(self) -> int:
        version = self.state.next_version()
        self.state.save()  # before pushing: a restart must never reuse the version
        return version

    async def _apply(self) -> int:
        """Persist the intent with a fresh version, then push to every node it changes."""
        version = self._bump()
        self._rebuild(list(self._specs), version)
        return version

    # --- the API -------------------------------------------------------------------------
    async def set_redirect(self, selector: Selector, target_service: str) -> int:
        """Route every request arriving at the selected sidecars to `svc:<target_service>`.

        Returns the version to pass to `wait_acked`."""
        if not target_service:
            raise ValueError("target_service is required")
        return await self._set_rule(selector, target_service)

    async def clear_redirect(self, selector: Selector) -> int:
        """Send traffic of the selected sidecars back to their local app."""
        return await self._set_rule(selector, None)

    async def _set_rule(self, selector: Selector, target: str | None) -> int:
        async with self._lock:
            sel = dict(selector)
            rules = [(s, t) for s, t in self.state.intent.redirects if s != sel]
            # Clearing everything for a selector that no longer narrows anything: drop it.
            if target is not None or rules:
                rules.append((sel, target))
            self.state.intent.redirects = rules
            return await self._apply()

    async def remove_redirects(self, which: Callable[[dict[str, Any]], bool]) -> int | None:
        """Drop every redirect rule whose selector ``which`` accepts (rules of a build that is
        gone: kept, they would route a new instance of the same name away from itself).
        Returns the version to wait for, or None when no rule matched."""
        async with self._lock:
            rules = self.state.intent.redirects
            kept = [(s, t) for s, t in rules if not which(s)]
            if len(kept) == len(rules):
                return None
            self.state.intent.redirects = kept
            return await self._apply()

    async def set_endpoints(self, service: str, endpoints: Sequence[Sequence[Any]]) -> int:
        """Set the (ip, port) endpoints of a service (EDS for every node that uses it)."""
        eps = validate_endpoints(endpoints)
        async with self._lock:
            self.state.intent.endpoints[service] = eps
            return await self._apply()

    def endpoints(self) -> dict[str, list[tuple[str, int]]]:
        return {s: list(e) for s, e in self.state.intent.endpoints.items()}

    def redirects(self) -> list[tuple[dict[str, Any], str | None]]:
        return list(self.state.intent.redirects)

    def nodes(self, selector: Selector | None = None) -> list[dict[str, Any]]:
        """Every node seen (also disconnected ones), with versions sent/ACKed and last NACK."""
        out = []
        for st in self.cache.statuses(selector):
            snap = self.cache.snapshot(st.id)
            out.append(node_view(st, snap.version if snap else None))
        return sorted(out, key=lambda n: n["id"])

    def forget_node(self, node_id: str) -> None:
        """A node that is gone for good: its status, config and registration (so its
        certificate is not accepted any more)."""
        self.cache.forget(node_id)
        self._specs.pop(node_id, None)
        if self.state.registrations.pop(node_id, None) is not None:
            self.state.save()
            self.cache.wake(node_id)  # a stream still open for it is ended

    def _classify(self, st: NodeStatus, version: int | None) -> tuple[str, str]:
        """-> (acked | pending | nacked | disconnected, NACK error text)."""
        snap = self.cache.snapshot(st.id)
        if snap is None:
            return ("pending", "") if st.connected else ("disconnected", "")
        # A node untouched since `version` is done once it has its current snapshot.
        target = snap.version if version is None else min(version, snap.version)
        if st.acked_version is not None and st.acked_version >= target:
            return "acked", ""
        if not st.connected:
            return "disconnected", ""
        if st.last_nack is not None and st.last_nack.version >= target:
            return "nacked", st.last_nack.error
        return "pending", ""

    async def wait_acked(
        self,
        selector: Selector | None = None,
        version: int | None = None,
        timeout: float = 10.0,
        expect: Iterable[str] = (),
    ) -> AckReport:
        """Wait until every selected node has ACKed `version` (default: its latest snapshot).

        Returns early when no node is still pending: a node that NACKed or is disconnected
        will not ACK by waiting. `expect` names nodes that must be among them (a node not
        connected yet is pending). `report.ok` is True only if all selected nodes ACKed."""
        expect = tuple(expect)
        start = time.monotonic()
        deadline = start + timeout
        state: dict[str, tuple[str, str]] = {}
        waiting: set[str] = set()
        dirty: set[str | None] = {None}
        wake = asyncio.Event()

        def on_change(node_id: str | None) -> None:
            dirty.add(node_id)
            wake.set()

        unsubscribe = self.cache.subscribe(on_change)
        try:
            while True:
                changed = set(dirty)
                dirty.clear()
                wake.clear()
                if None in changed:
                    state = {
                        st.id: self._classify(st, version) for st in self.cache.statuses(selector)
                    }
                    waiting = {n for n, (c, _) in state.items() if c == "pending"}
                else:
                    # Only the nodes that moved are re-checked.
                    for node_id in changed:
                        assert node_id is not None
                        st = self.cache.status(node_id)
                        if st is None:
                            state.pop(node_id, None)
                        elif node_id in state or matches(selector, st.labels()):
                            state[node_id] = self._classify(st, version)
                        else:
                            continue
                        if state.get(node_id, ("",))[0] == "pending":
                            waiting.add(node_id)
                        else:
                            waiting.discard(node_id)
                missing = [n for n in expect if n not in state]
                pending = bool(missing or waiting)
                now = time.monotonic()
                if not pending or now >= deadline:
                    rep = AckReport(version, pending=missing, timed_out=bool(pending))
                    for node_id, (cat, error) in sorted(state.items()):
                        if cat == "nacked":
                            rep.nacked[node_id] = error
                        else:
                            getattr(rep, cat).append(node_id)
                    rep.elapsed = now - start
                    return rep
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), deadline - now)
        finally:
            unsubscribe()
