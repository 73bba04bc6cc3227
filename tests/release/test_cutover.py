"""The seed's problem and its fix, on real processes: a naive selector switch leaves pinned
keep-alive connections on the old version; a switchback release moves every request to the
new version from the redirect ACK on, and no request fails. Aborts keep traffic on current."""

from __future__ import annotations

import time
from typing import Any

from switchback.release.client import ControllerClient
from switchback.runtime.traffic import Traffic, analyse

from .conftest import PING

LOAD = {"connections": 10, "rate": 100}


def versions_after(samples: list[Any], t: float) -> set[str | None]:
    return {s.version for s in samples if s.sent >= t}


async def test_naive_switch_leaves_residual_traffic(
    controller: ControllerClient, urls: dict[str, str]
) -> None:
    await controller.call("POST", "/environments/production/deploy", {"version": "v2"})
    traffic = Traffic(urls["public"], **LOAD)
    traffic.start()
    await traffic.wait_for_samples(50)
    await controller.call(
        "POST", "/environments/production/select", {"service": "apigw", "version": "v2"}
    )
    switch_at = time.time()
    # Until 100 requests were sent after the switch: with pinned connections they keep going to v1.
    await traffic.wait_for_samples(100, sent_after=switch_at)
    samples = await traffic.stop()
    report = analyse(samples, switch_at, "v1", "v2")
    assert report.failed == 0, report.failures
    assert (
        report.served_by_old_after > 50
    )  # the problem reproduced: most still reach the old version


async def test_release_moves_every_request_after_the_redirect_ack(
    controller: ControllerClient, urls: dict[str, str]
) -> None:
    traffic = Traffic(urls["public"], **LOAD)
    traffic.start()
    await traffic.wait_for_samples(50)
    r = await controller.call(
        "POST", "/releases",
        {"environment": "production", "version": "v2", "app_dir": str(PING), "wait": True, "drain_timeout": 10},
    )  # fmt: skip
    assert r["status"] == "completed", r
    after_release = time.time()
    await traffic.wait_for_samples(20, sent_after=after_release)
    samples = await traffic.stop()
    redirect = next(b for b in r["blocks"] if b["name"] == "redirect_old")
    report = analyse(samples, redirect["ended_at"], "v1", "v2", promote_at=redirect["started_at"])
    assert report.failed == 0, report.failures
    assert report.served_by_old_after == 0
    assert report.seconds_to_all_new is not None and report.seconds_to_all_new <= 1.0
    assert {s.version for s in samples} == {"v1", "v2"}
    status = await controller.call("GET", "/status")
    env = status["environments"]["production"]
    assert env["current"] == "v2" and env["new"] is None
    assert {i["build"] for i in env["instances"]} == {"v2"}  # the old version is retired


async def _abort_with_load(
    controller: ControllerClient, urls: dict[str, str], approval: str
) -> list[Any]:
    traffic = Traffic(urls["public"], **LOAD)
    traffic.start()
    await traffic.wait_for_samples(50)
    r = await controller.call(
        "POST", "/releases",
        {"environment": "production", "version": "v2", "app_dir": str(PING), "approval": approval, "wait": True,
         "drain_timeout": 5},
    )  # fmt: skip
    assert r["status"] == "waiting", r
    r = await controller.call("POST", f"/releases/{r['xid']}/abort", {"reason": "test"})
    assert r["status"] == "rolled_back", r
    aborted_at = time.time()
    await traffic.wait_for_samples(30, sent_after=aborted_at)
    samples = await traffic.stop()
    failures = [s for s in samples if not s.ok]
    assert failures == []
    assert versions_after(samples, aborted_at) == {"v1"}
    env = (await controller.call("GET", "/status"))["environments"]["production"]
    assert env["current"] == "v1" and env["new"] is None
    assert {i["build"] for i in env["instances"]} == {"v1"}  # the new version is removed
    assert env["redirects"] in ({}, {"apigw@v1": None, "scenario@v1": None, "transaction@v1": None})
    return samples


async def test_abort_during_the_standby_stage(
    controller: ControllerClient, urls: dict[str, str]
) -> None:
    samples = await _abort_with_load(controller, urls, "redirect")
    assert {s.version for s in samples} == {"v1"}  # users never saw the new version


async def test_abort_after_the_redirect(controller: ControllerClient, urls: dict[str, str]) -> None:
    samples = await _abort_with_load(controller, urls, "switch")
    assert "v2" in {s.version for s in samples}  # it did serve, via the redirect, before the abort


async def test_abort_past_the_point_of_no_return_is_refused(controller: ControllerClient) -> None:
    r = await controller.call(
        "POST", "/releases",
        {"environment": "production", "version": "v2", "app_dir": str(PING), "wait": True, "drain_timeout": 1},
    )  # fmt: skip
    assert r["status"] == "completed"
    try:
        await controller.call("POST", f"/releases/{r['xid']}/abort", {})
    except Exception as exc:  # ControllerError
        assert getattr(exc, "status", None) == 409
    else:
        raise AssertionError("abort of a completed release was accepted")
