"""DORA's four keys: worked examples with the numbers a person would compute by hand, and
properties that hold for any history (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchback.valuestream import (
    Change,
    Deployment,
    Window,
    change_failure_rate,
    deployment_frequency,
    dora,
    lead_time,
    time_to_restore,
)
from switchback.valuestream.metrics import DAY, daily_deployments, percentile

HOUR = 3600.0
W = Window(0.0, 7 * DAY)


def dep(
    run: str,
    at: float,
    *,
    lead: float = HOUR,
    outcome: str = "replaced",
    restored: float | None = None,
    changes: tuple[Change, ...] = (),
) -> Deployment:
    return Deployment(run, f"c-{run}", at - lead, at, outcome, restored, changes)  # type: ignore[arg-type]


def test_a_week_by_hand() -> None:
    history = [
        dep("1", 1 * DAY, lead=1 * HOUR),
        dep("2", 2 * DAY, lead=2 * HOUR, outcome="rolled_back", restored=2 * DAY + 600),
        dep("3", 3 * DAY, lead=3 * HOUR),
        dep("4", 4 * DAY, lead=4 * HOUR, outcome="failed"),  # nobody rolled it back
        dep("5", 5 * DAY, lead=5 * HOUR, outcome="serving"),
        dep("old", -1 * DAY),  # before the window
        dep("late", 8 * DAY),  # after it
    ]
    f = deployment_frequency(history, W)
    assert (f.deployments, f.days, f.per_day, f.per_week) == (5, 7.0, 5 / 7, 5.0)
    lt = lead_time(history, W)
    assert (lt.count, lt.median, lt.p90) == (5, 3 * HOUR, 5 * HOUR)
    cfr = change_failure_rate(history, W)
    assert (cfr.deployments, cfr.failures, cfr.rate) == (5, 2, 0.4)
    ttr = time_to_restore(history, W)
    # 2: its rollback finished 10 min later; 4: the next success (5) a day later
    assert (ttr.count, ttr.median, ttr.p90, ttr.unrestored) == (2, (600 + DAY) / 2, DAY, 0)
    assert daily_deployments(history, W) == [0, 1, 1, 1, 1, 1, 0]


def test_lead_time_counts_every_change_a_deployment_brought() -> None:
    d = Deployment(
        "1", "c3", 10 * HOUR, 12 * HOUR,
        changes=(Change("c1", 0.0), Change("c2", 6 * HOUR), Change("c3", 10 * HOUR)),
    )  # fmt: skip
    lt = lead_time([d], Window(0, DAY))
    assert (lt.count, lt.median, lt.p90) == (3, 6 * HOUR, 12 * HOUR)


def test_a_failure_not_yet_restored_is_counted_apart() -> None:
    ttr = time_to_restore([dep("1", DAY, outcome="failed")], W)
    assert (ttr.count, ttr.median, ttr.unrestored) == (0, None, 1)
    # a rollback that finishes after the window's end is not known at its end either
    late = time_to_restore([dep("1", DAY, outcome="rolled_back", restored=10 * DAY)], W)
    assert late.unrestored == 1


def test_nothing_deployed() -> None:
    m = dora([], W)
    assert m.deployment_frequency.deployments == 0 and m.deployment_frequency.per_day == 0
    assert (m.lead_time.count, m.lead_time.median, m.lead_time.p90) == (0, None, None)
    assert m.change_failure_rate.rate is None
    assert m.to_dict()["change_failure_rate"] == {"deployments": 0, "failures": 0, "rate": None}


def test_bad_records_and_windows() -> None:
    with pytest.raises(ValueError, match="unknown outcome"):
        Deployment("1", "c", 0, 1, "exploded")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before deployed_at"):
        Deployment("1", "c", 0, 10, "rolled_back", restored_at=5)
    with pytest.raises(ValueError, match="ends after it starts"):
        Window(10, 10)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_percentile_is_a_value_that_happened() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([float(i) for i in range(1, 11)], 90) == 9.0
    assert percentile([], 90) is None


# -- properties ----------------------------------------------------------------------------------

outcomes = st.sampled_from(["serving", "replaced", "rolled_back", "failed"])


@st.composite
def deployments(draw: st.DrawFn) -> Deployment:
    at = draw(st.floats(-2 * DAY, 9 * DAY, allow_nan=False))
    lead = draw(st.floats(0, 5 * DAY, allow_nan=False))
    outcome = draw(outcomes)
    restored = None
    if outcome in ("rolled_back", "failed") and draw(st.booleans()):
        restored = at + draw(st.floats(0, 2 * DAY, allow_nan=False))
    return Deployment(f"r{at}", "c", at - lead, at, outcome, restored)


histories = st.lists(deployments(), max_size=40)


@given(histories)
def test_every_key_stays_in_its_range(history: list[Deployment]) -> None:
    m = dora(history, W)
    inside = [d for d in history if W.start <= d.deployed_at < W.end]
    assert m.deployment_frequency.deployments == len(inside)
    assert sum(daily_deployments(history, W)) == len(inside)
    assert m.change_failure_rate.failures <= m.change_failure_rate.deployments
    if m.change_failure_rate.rate is not None:
        assert 0.0 <= m.change_failure_rate.rate <= 1.0
    for dist in (m.lead_time, m.time_to_restore):
        if dist.count:
            assert dist.median is not None and dist.p90 is not None
            assert 0.0 <= dist.median <= dist.p90 + 1e-9
    failures = m.change_failure_rate.failures
    assert m.time_to_restore.count + m.time_to_restore.unrestored == failures


@given(histories, st.randoms())
def test_the_order_of_the_records_does_not_matter(history: list[Deployment], rnd: object) -> None:
    shuffled = list(history)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert dora(shuffled, W) == dora(history, W)


@given(histories)
def test_lead_times_lie_between_the_shortest_and_the_longest(history: list[Deployment]) -> None:
    inside = [t for d in history if W.start <= d.deployed_at < W.end for t in d.lead_times()]
    lt = lead_time(history, W)
    if inside:
        assert min(inside) <= lt.median <= max(inside)  # type: ignore[operator]
        assert lt.p90 in inside


def test_a_success_at_the_same_instant_does_not_restore_a_failure() -> None:
    # Found by hypothesis: with a tie, "the next deployment" depended on the order given.
    failed, same = dep("f", DAY, outcome="failed"), dep("s", DAY)
    for history in ([failed, same], [same, failed]):
        ttr = time_to_restore(history, W)
        assert (ttr.count, ttr.unrestored) == (0, 1)
