"""The cutover, measured: the naive switch (only the main selector changes, as in the seed)
next to a switchback release, under the same steady keep-alive load through the ingress.

    .venv/bin/python bench/cutover.py [--connections 20] [--rate 200] [--after 10]

Prints, for each: requests served by the old version after the switch point, failed requests,
and the time until 100% of responses come from the new version. The switch point is, for the
naive switch, when the selector change was ACKed; for the release, when every old sidecar ACKed
the redirect (the time to 100% new is counted from the start of the redirect step).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

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


async def release(
    data: Path, connections: int, rate: float, after: float
) -> tuple[CutoverReport, dict[str, float]]:
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
            {"environment": "production", "version": "v2", "app_dir": str(APP), "wait": True, "drain_timeout": 10},
        )  # fmt: skip
        if r["status"] != "completed":
            raise RuntimeError(f"release ended {r['status']}: {r['error']}")
        await asyncio.sleep(after / 5)
        samples = await traffic.stop()
        steps = {b["name"]: b for b in r["blocks"]}
        redirect = steps["redirect_old"]
        report = analyse(
            samples, redirect["ended_at"], "v1", "v2", promote_at=redirect["started_at"]
        )
        timings = {
            "release total s": round(r["updated_at"] - began, 2),
            "redirect step s (push + every ACK)": round(
                redirect["ended_at"] - redirect["started_at"], 3
            ),
        }
        return report, timings
    finally:
        ctl.down()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--rate", type=float, default=200, help="requests per second in all")
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
