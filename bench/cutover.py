"""The cutover, measured: the naive switch (only the main selector changes, as in the seed)
next to a switchback release, under the same steady keep-alive load through the ingress; then,
under that load still, an abort of a second release after its redirect.

    .venv/bin/python bench/cutover.py [--connections 32] [--rate 400] [--after 10]

Prints, for each: requests served by the old version after the switch point, failed requests,
and the time until 100% of responses come from the new version. The switch point is, for the
naive switch, when the selector change was ACKed; for the release, when every old sidecar ACKed
the redirect (the time to 100% new is counted from the start of the redirect step). Then the
whole release and the whole abort, end to end as the caller sees them, with each step's share.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from switchback.release.client import ControllerClient
from switchback.runtime.traffic import CutoverReport, Traffic, analyse

APP = Path(__file__).resolve().parent.parent / "examples" / "ping"


async def naive(data: Path, connections: int, rate: float, after: float) -> CutoverReport:
    ctl = ControllerClient(data)
    ctl.up(APP, env="naive", version="v1")
    try:
        urls = await ctl.urls("naive")
        await ctl.call("POST", "/environments/naive/deploy", {"version": "v2"})
        traffic = Traffic(urls["public"], connections=connections, rate=rate)
        traffic.start()
        await traffic.wait_for_samples(connections * 5)
        await ctl.call("POST", "/environments/naive/select", {"service": "apigw", "version": "v2"})
        switch_at = time.time()
        await asyncio.sleep(after)  # the observation window: how long old traffic lingers
        samples = await traffic.stop()
        return analyse(samples, switch_at, "v1", "v2")
    finally:
        ctl.down()


def steps(r: dict[str, Any]) -> str:
    return "  ".join(
        f"{b['name']} {b['ended_at'] - b['started_at']:.2f}"
        for b in r["blocks"]
        if b["started_at"] and b["ended_at"]
    )


def undo_steps(r: dict[str, Any], began: float) -> str:
    """Each UNDO's share of an abort: the rollback runs them newest first, one after the other."""
    done = sorted((b["ended_at"], b["name"]) for b in r["blocks"] if b["status"] == "undone")
    out, last = [], began
    for ended, name in done:
        out.append(f"{name} {ended - last:.2f}")
        last = ended
    return "  ".join(out)


async def release(
    data: Path, connections: int, rate: float, after: float
) -> tuple[CutoverReport, dict[str, str]]:
    ctl = ControllerClient(data)
    ctl.up(APP, env="production", version="v1")
    try:
        urls = await ctl.urls("production")
        traffic = Traffic(urls["public"], connections=connections, rate=rate)
        traffic.start()
        await traffic.wait_for_samples(connections * 5)
        began = time.time()
        r = await ctl.call(
            "POST", "/releases",
            {"environment": "production", "version": "v2", "app_dir": str(APP), "wait": True},
        )  # fmt: skip
        released = time.time() - began
        if r["status"] != "completed":
            raise RuntimeError(f"release ended {r['status']}: {r['error']}")
        redirect = next(b for b in r["blocks"] if b["name"] == "redirect_old")
        drain = next(b for b in r["blocks"] if b["name"] == "drain_old")["output"]
        # The abort: a release of v3 waits for approval after its redirect (the old sidecars,
        # v2's, forward to v3), then is aborted: redirect cleared, standby back, v3 drained away.
        r3 = await ctl.call(
            "POST", "/releases",
            {"environment": "production", "version": "v3", "app_dir": str(APP), "wait": True,
             "approval": "switch"},
        )  # fmt: skip
        if r3["status"] != "waiting":
            raise RuntimeError(f"release of v3 ended {r3['status']}: {r3['error']}")
        abort_began = time.time()
        r3 = await ctl.call("POST", f"/releases/{r3['xid']}/abort", {"reason": "bench"})
        aborted = time.time() - abort_began
        if r3["status"] != "rolled_back":
            raise RuntimeError(f"abort ended {r3['status']}: {r3['error']}")
        undrained = next(b for b in r3["blocks"] if b["name"] == "deploy_new")["undo_output"]
        await traffic.wait_for_samples(connections * 5, sent_after=time.time())
        samples = await traffic.stop()
        report = analyse(
            samples, redirect["ended_at"], "v1", "v2", promote_at=redirect["started_at"]
        )
        after_abort = [s for s in samples if s.sent >= r3["updated_at"]]
        timings = {
            "whole release s": f"{released:.2f}  ({steps(r)})",
            "release drain": f"{'HIT ITS LIMIT' if drain['timed_out'] else 'done'} in {drain['seconds']} s",
            "redirect step s (push + every ACK)": f"{redirect['ended_at'] - redirect['started_at']:.3f}",
            "whole abort s (after the redirect)": f"{aborted:.2f}  ({undo_steps(r3, abort_began)})",
            "abort drain": f"{'HIT ITS LIMIT' if undrained['timed_out'] else 'done'} in {undrained['seconds']} s",
            "after the abort: failed / served by v3": f"{sum(1 for s in after_abort if not s.ok)} / "
            f"{sum(1 for s in after_abort if s.version == 'v3')}",
        }  # fmt: skip
        return report, timings
    finally:
        ctl.down(forget=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rate", type=float, default=400, help="requests per second in all")
    ap.add_argument(
        "--after", type=float, default=10, help="seconds observed after the naive switch"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sb-cutover-") as tmp:
        a = asyncio.run(naive(Path(tmp) / "naive", args.connections, args.rate, args.after))
        b, timings = asyncio.run(
            release(Path(tmp) / "release", args.connections, args.rate, args.after)
        )
    print(f"{args.connections} keep-alive connections, ~{args.rate:g} req/s through the ingress\n")
    cols = ["requests", "failed", "old after switch", "s to 100% new"]
    print(f"{'':<34}" + "".join(f"{c:>18}" for c in cols))
    for label, rep in (("(a) naive selector switch", a), ("(b) switchback release", b)):
        row = rep.as_row()
        print(f"{label:<34}" + "".join(f"{row[c]!s:>18}" for c in cols))
    print(
        f"\n(a) observed for {a.window_after:.1f} s after the switch; 'never' = old still serving at the end"
    )
    for k, v in timings.items():
        print(f"(b) {k}: {v}")
    for label, rep in (("a", a), ("b", b)):
        for f in rep.failures:
            print(f"({label}) failure: status {f.status} {f.error}")


if __name__ == "__main__":
    main()
