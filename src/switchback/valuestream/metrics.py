"""Delivery metrics (DORA's four keys) as pure functions over run records.

Inputs are :class:`Deployment` records: one per pipeline run that reached production (runs that
stopped before it are not deployments), with the changes it brought there. Every function takes
a window ``[start, end)`` of seconds since the epoch and counts the deployments that reached
production inside it. The definitions (``docs/pipeline.md`` has them with examples):

* **Deployment frequency**: deployments that reached production in the window, per day and per
  week of the window's length.
* **Lead time for changes**: for every change (commit) a deployment brought to production, the
  time from its commit to the deployment serving in production; median and 90th percentile.
  A run that deploys three commits pushed together counts three changes, as DORA counts
  commits, not runs; a record without its list of changes counts its head commit.
* **Change failure rate**: of the deployments in the window, the share that failed in
  production afterwards — rolled back, or failed after serving (a smoke test or a decision).
* **Time to restore**: for every failed deployment in the window, from the moment it started
  serving to the moment production was good again: its rollback finished (production back on
  the version before) or, if sooner, the next successful deployment started serving. A failure
  not yet restored at ``end`` is counted apart (``unrestored``), never as a number that would
  keep growing.

Percentiles are by the nearest-rank method (the value at rank ⌈p·n⌉ of the sorted sample), so a
reported lead time is always one that happened.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

DAY = 86400.0
WEEK = 7 * DAY

Outcome = Literal["serving", "replaced", "rolled_back", "failed"]
GOOD: frozenset[str] = frozenset({"serving", "replaced"})  # succeeded; later superseded or not


@dataclass(frozen=True)
class Change:
    commit: str
    committed_at: float


@dataclass(frozen=True)
class Deployment:
    """A run that reached production.

    ``outcome``: ``serving`` (still there), ``replaced`` (a later deployment took over: a
    success), ``rolled_back`` (the run was rolled back after reaching production), ``failed``
    (it failed after serving and production was left to a person). ``restored_at``: when
    production was good again after a failure (its rollback finished), if known."""

    run: str
    commit: str
    committed_at: float
    deployed_at: float  # started serving in production
    outcome: Outcome = "serving"
    restored_at: float | None = None
    changes: tuple[Change, ...] = ()

    def __post_init__(self) -> None:
        if self.outcome not in ("serving", "replaced", "rolled_back", "failed"):
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if self.restored_at is not None and self.restored_at < self.deployed_at:
            raise ValueError("restored_at is before deployed_at")

    @property
    def failed(self) -> bool:
        return self.outcome not in GOOD

    def lead_times(self) -> list[float]:
        changes = self.changes or (Change(self.commit, self.committed_at),)
        return [max(0.0, self.deployed_at - c.committed_at) for c in changes]


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValueError("a window ends after it starts")

    @property
    def days(self) -> float:
        return (self.end - self.start) / DAY

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end


def _in(deployments: Iterable[Deployment], window: Window) -> list[Deployment]:
    return sorted((d for d in deployments if d.deployed_at in window), key=lambda d: d.deployed_at)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in (0, 100]); None for no values."""
    if not values:
        return None
    if not 0 < p <= 100:
        raise ValueError("p is in (0, 100]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Distribution:
    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        if not values:
            return cls(0, None, None)
        return cls(len(values), float(statistics.median(values)), percentile(values, 90))


@dataclass(frozen=True)
class DeploymentFrequency:
    deployments: int
    days: float
    per_day: float
    per_week: float


def deployment_frequency(deployments: Iterable[Deployment], window: Window) -> DeploymentFrequency:
    n = len(_in(deployments, window))
    return DeploymentFrequency(n, window.days, n / window.days, n / (window.days / 7))


def daily_deployments(deployments: Iterable[Deployment], window: Window) -> list[int]:
    """Deployments per day of the window (its first day first; a last partial day counts as a
    day): the series behind a frequency chart."""
    counts = [0] * max(1, math.ceil(window.days))
    for d in _in(deployments, window):
        counts[int((d.deployed_at - window.start) // DAY)] += 1
    return counts


def lead_time(deployments: Iterable[Deployment], window: Window) -> Distribution:
    """Seconds from each change's commit to its deployment serving in production."""
    return Distribution.of([t for d in _in(deployments, window) for t in d.lead_times()])


@dataclass(frozen=True)
class ChangeFailureRate:
    deployments: int
    failures: int
    rate: float | None  # None when nothing was deployed


def change_failure_rate(deployments: Iterable[Deployment], window: Window) -> ChangeFailureRate:
    inside = _in(deployments, window)
    failures = sum(1 for d in inside if d.failed)
    return ChangeFailureRate(len(inside), failures, failures / len(inside) if inside else None)


@dataclass(frozen=True)
class TimeToRestore(Distribution):
    unrestored: int = 0


def time_to_restore(deployments: Iterable[Deployment], window: Window) -> TimeToRestore:
    """Seconds from each failed deployment serving to production being good again (see the
    module's doc). Later successes are looked for beyond the window (up to ``end``)."""
    every = sorted(
        (d for d in deployments if d.deployed_at < window.end), key=lambda d: d.deployed_at
    )
    durations: list[float] = []
    unrestored = 0
    for d in every:
        if not d.failed or d.deployed_at not in window:
            continue
        candidates = (
            [d.restored_at] if d.restored_at is not None and d.restored_at < window.end else []
        )
        # the first success after it (strictly later: a success at the same instant restored
        # nothing it could have seen, and ties would make the answer depend on the order given)
        nxt = next((e for e in every if e.deployed_at > d.deployed_at and not e.failed), None)
        if nxt is not None:
            candidates.append(nxt.deployed_at)
        if candidates:
            durations.append(min(candidates) - d.deployed_at)
        else:
            unrestored += 1
    base = Distribution.of(durations)
    return TimeToRestore(base.count, base.median, base.p90, unrestored)


@dataclass(frozen=True)
class Dora:
    window: Window
    deployment_frequency: DeploymentFrequency
    lead_time: Distribution
    change_failure_rate: ChangeFailureRate
    time_to_restore: TimeToRestore

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dora(deployments: Iterable[Deployment], window: Window) -> Dora:
    """The four keys over one window."""
    records = list(deployments)
    return Dora(
        window=window,
        deployment_frequency=deployment_frequency(records, window),
        lead_time=lead_time(records, window),
        change_failure_rate=change_failure_rate(records, window),
        time_to_restore=time_to_restore(records, window),
    )
