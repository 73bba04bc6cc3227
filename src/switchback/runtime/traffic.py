"""Steady traffic over keep-alive connections, recording which version served each request.

Used by ``bench/cutover.py`` and the release tests to measure what a user sees during a switch:
requests served by the old version after the switch point, failed requests, and the time until
every response comes from the new version.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

VERSION_HEADER = "x-switchback-version"


@dataclass
class Sample:
    sent: float  # wall clock (time.time()), comparable with the engine's timestamps
    received: float
    status: int  # 0 = no response (connection error)
    version: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


class Traffic:
    """``connections`` workers, each with its own keep-alive connection, together sending about
    ``rate`` requests per second until stopped."""

    def __init__(
        self,
        url: str,
        path: str = "/ping",
        body: Any = None,
        *,
        connections: int = 20,
        rate: float = 200,
    ) -> None:
        self.url = url.rstrip("/")
        self.path = path
        self.body = body if body is not None else {}
        self.connections = connections
        self.interval = connections / rate
        self.samples: list[Sample] = []
        self._stop = asyncio.Event()
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _record(self, sample: Sample) -> None:
        self.samples.append(sample)
        self._progress.set()

    async def _worker(self, index: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=None)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(10.0)) as client:
            next_at = time.monotonic() + self.interval * index / self.connections
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                next_at += self.interval
                sent = time.time()
                try:
                    r = await client.post(self.url + self.path, json=self.body)
                    self._record(Sample(sent, time.time(), r.status_code, r.headers.get(VERSION_HEADER),
                                               None if r.status_code == 200 else r.text[:200]))  # fmt: skip
                except httpx.HTTPError as exc:
                    self._record(Sample(sent, time.time(), 0, None, f"{type(exc).__name__}: {exc}"))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(self.connections)]

    async def stop(self) -> list[Sample]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return sorted(self.samples, key=lambda s: s.sent)

    async def wait_for_samples(
        self, count: int, timeout: float = 30, *, sent_after: float = 0.0
    ) -> None:
        """Wait until ``count`` responses came back for requests sent after ``sent_after``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while sum(1 for s in self.samples if s.sent >= sent_after) < count:
            self._progress.clear()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._progress.wait(), max(left, 0))
            except TimeoutError:
                raise TimeoutError(
                    f"only {len(self.samples)} responses within {timeout:g} s"
                ) from None


@dataclass
class CutoverReport:
    total: int
    failed: int
    served_by_old_after: int  # requests sent after the switch point and served by the old version
    seconds_to_all_new: (
        float | None
    )  # from the switch point to the last old-served response; None if never
    window_after: float
    failures: list[Sample]

    def as_row(self) -> dict[str, Any]:
        return {
            "requests": self.total,
            "failed": self.failed,
            "old after switch": self.served_by_old_after,
            "s to 100% new": "never"
            if self.seconds_to_all_new is None
            else round(self.seconds_to_all_new, 3),
        }


def analyse(
    samples: list[Sample], switch_at: float, old: str, new: str, *, promote_at: float | None = None
) -> CutoverReport:
    """``switch_at``: the moment from which no old-version response is acceptable (the redirect
    ACK, or for the naive switch the selector change). ``promote_at``: when the switch began."""
    after = [s for s in samples if s.sent >= switch_at]
    old_after = [s for s in after if s.version == old]
    begin = promote_at if promote_at is not None else switch_at
    last_old = max(
        (s.received for s in samples if s.version == old and s.received >= begin), default=None
    )
    window_after = (samples[-1].received - switch_at) if samples else 0.0
    tail = [s for s in samples if s.sent >= (samples[-1].sent - 1.0)] if samples else []
    still_old_at_end = any(s.version == old for s in tail)
    seconds = (
        None if still_old_at_end else (0.0 if last_old is None else max(0.0, last_old - begin))
    )
    failures = [s for s in samples if not s.ok]
    return CutoverReport(
        len(samples), len(failures), len(old_after), seconds, window_after, failures[:5]
    )
