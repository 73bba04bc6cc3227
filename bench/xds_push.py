"""Benchmark: time from a redirect call to the ACK of every sidecar.

    .venv/bin/python bench/xds_push.py --envoys 10 --rounds 50
    .venv/bin/python bench/xds_push.py --envoys 10 --rounds 50 --delta
    .venv/bin/python bench/xds_push.py --clients 500 --rounds 30

Each round is a redirect (adds the target cluster: CDS -> EDS -> RDS, in make-before-break
order) followed by a clear (RDS, then CDS removal); both are timed from the API call until
`wait_acked` reports every node. The control plane runs in this process; Envoys (or the
simulated ADS clients, in a child process) run elsewhere, so `time.process_time()` here is the
control plane's CPU time per push. `--delta` makes the Envoys speak incremental xDS (the
simulated clients speak state of the world only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from switchback.xds.client import AdsClient
from switchback.xds.control import ControlPlane
from switchback.xds.resources import NodeSpec
from switchback.xds.sidecar import EnvoyProcess, bootstrap_config

OLD = {"role": "apigw", "version": "current"}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_clients(target: str, n: int, channels: int) -> None:
    """Child process: n simulated sidecars over a few shared channels, until stdin closes."""
    import grpc

    chans = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    clients = []
    for i in range(n):
        md = {
            "kind": "sidecar",
            "role": "apigw",
            "version": "current",
            "listen_port": 20000 + i,
            "app_port": 30000 + i,
        }
        c = AdsClient(target, f"sim-{i:04d}", md, channel=chans[i % channels])
        await c.start()
        clients.append(c)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # parent closes stdin to stop us
    for c in clients:
        await c.stop()
    for ch in chans:
        await ch.close()


async def measure(cp: ControlPlane, n: int, rounds: int) -> dict[str, Any]:
    ready = await cp.wait_acked(OLD, timeout=120)
    assert len(ready.acked) == n and ready.ok, ready
    await cp.set_endpoints("apigw-new", [("127.0.0.1", 9)])
    assert (await cp.wait_acked(OLD, timeout=30)).ok
    res: dict[str, list[float]] = {"redirect": [], "clear": [], "cpu_redirect": [], "cpu_clear": []}
    for _ in range(rounds):
        for kind in ("redirect", "clear"):
            cpu0, t0 = time.process_time(), time.perf_counter()
            if kind == "redirect":
                v = await cp.set_redirect(OLD, "apigw-new")
            else:
                v = await cp.clear_redirect(OLD)
            rep = await cp.wait_acked(OLD, v, timeout=30)
            t1, cpu1 = time.perf_counter(), time.process_time()
            assert rep.ok and len(rep.acked) == n, rep
            res[kind].append((t1 - t0) * 1000)
            res[f"cpu_{kind}"].append((cpu1 - cpu0) * 1000)
    out: dict[str, Any] = {"nodes": n, "rounds": rounds}
    for kind in ("redirect", "clear"):
        xs = res[kind]
        out[kind] = {
            "p50_ms": round(statistics.median(xs), 1),
            "p99_ms": round(pct(xs, 99), 1),
            "max_ms": round(max(xs), 1),
            "cpu_ms_per_push": round(statistics.mean(res[f"cpu_{kind}"]), 1),
        }
    return out


async def bench_envoys(n: int, rounds: int, xds_api: str = "sotw") -> dict[str, Any]:
    cp = ControlPlane(state_file=None)
    port = await cp.start()
    work = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    envoys = []
    try:
        for i in range(n):
            spec = NodeSpec(
                kind="sidecar",
                listen_port=free_port(),
                app_port=free_port(),
                labels={"role": "apigw", "version": "current"},
            )
            e = EnvoyProcess(
                f"envoy-{i}",
                bootstrap_config(f"envoy-{i}", "127.0.0.1", port, spec, xds_api=xds_api),
                workdir=work / str(i),
            )
            e.workdir.mkdir()
            e.start()
            envoys.append(e)
        for e in envoys:
            await asyncio.to_thread(e.wait_ready, 60)
        return await measure(cp, n, rounds)
    finally:
        for e in envoys:
            e.stop()
        await cp.stop(0)


def spawn_clients(target: str, n: int, channels: int) -> subprocess.Popen[bytes]:
    args = ["--child", target, "--clients", str(n), "--channels", str(channels)]
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE)


async def bench_clients(n: int, rounds: int, channels: int) -> dict[str, Any]:
    cp = ControlPlane(state_file=None)
    port = await cp.start()
    child = spawn_clients(f"127.0.0.1:{port}", n, channels)
    try:
        deadline = time.monotonic() + 120
        while sum(st.connected for st in cp.cache.statuses(OLD)) < n:
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("simulated clients did not connect")
            await cp.cache.wait_change(1.0)
        return await measure(cp, n, rounds)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
        await cp.stop(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--envoys", type=int, default=0, help="real Envoy sidecars")
    ap.add_argument("--clients", type=int, default=0, help="simulated ADS clients")
    ap.add_argument("--channels", type=int, default=10, help="gRPC channels for simulated clients")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--delta", action="store_true", help="Envoys speak delta xDS (not SotW)")
    ap.add_argument("--child", metavar="TARGET", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        asyncio.run(run_clients(args.child, args.clients, args.channels))
        return
    results = []
    if args.envoys:
        api = "delta" if args.delta else "sotw"
        res = asyncio.run(bench_envoys(args.envoys, args.rounds, api))
        results.append({"mode": "envoy", "xds_api": api, **res})
    if args.clients:
        results.append(
            {
                "mode": "simulated",
                **asyncio.run(bench_clients(args.clients, args.rounds, args.channels)),
            }
        )
    if not results:
        ap.error("give --envoys N and/or --clients N")
    print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
