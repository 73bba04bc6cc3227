"""Prometheus metrics: HTTP requests by route and status, transactions by status, block
durations. One registry per gateway app, so that several apps can live in one process (tests)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from switchback.engine import EngineObserver
from switchback.store.records import FINAL, TxRecord

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics(EngineObserver):
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "switchback_http_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "switchback_http_request_duration_seconds",
            "HTTP request duration by route template",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.transactions = Counter(
            "switchback_transactions",
            "Transactions entering a status, by scenario and status (this process)",
            ["scenario", "status"],
            registry=self.registry,
        )
        self.blocks = Histogram(
            "switchback_block_duration_seconds",
            "Duration of DO/UNDO attempts, by scenario, block, phase and outcome",
            ["scenario", "block", "phase", "outcome"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
        )
        # Last status seen per live transaction, so only changes are counted. Entries go away
        # when the transaction is final; parked ones stay until decided.
        self._last: dict[str, str] = {}
        # labels() costs a lock and a dict lookup per call; the children are cached here.
        self._req_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    # EngineObserver
    def transaction_changed(self, tx: TxRecord) -> None:
        if self._last.get(tx.xid) != tx.status:
            self.transactions.labels(tx.scenario, tx.status).inc()
        if tx.status in FINAL:
            self._last.pop(tx.xid, None)
        else:
            self._last[tx.xid] = tx.status

    def block_finished(
        self, tx: TxRecord, block: str, phase: str, ok: bool, seconds: float
    ) -> None:
        self.blocks.labels(tx.scenario, block, phase, "ok" if ok else "error").observe(seconds)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._req_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            # Routes are templates and methods a few, so this stays small; bound it anyway.
            if len(self._req_children) < 10_000:
                self._req_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
