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

`--transport both` (the default) measures the same setup twice in one run: plaintext ADS (the
baseline) and mutual TLS (what `switchback up` and `xds serve` use: every node with its own
certificate, hence its own connection); `mtls` or `plaintext` runs one of them. In both, every
node is registered with the control plane, so the only difference is the transport.
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
from switchback.xds.pki import Authority, NodeCredentials
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


def sim_md(i: int) -> dict[str, Any]:
    return {"kind": "sidecar", "role": "apigw", "version": "current",
            "listen_port": 20000 + i, "app_port": 30000 + i}  # fmt: skip


async def run_clients(target: str, n: int, channels: int, tls_root: str) -> None:
    """Child process: n simulated sidecars until stdin closes; over `channels` shared plaintext
    channels (0: one each), or with mutual TLS (`tls_root`: one channel and certificate each)."""
    import grpc

    chans = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    clients = []
    for i in range(n):
        node_id = f"sim-{i:04d}"
        kw: dict[str, Any] = {}
        if tls_root:
            kw["credentials"] = NodeCredentials.read(Path(tls_root) / node_id).channel_credentials()
        elif chans:
            kw["channel"] = chans[i % channels]
        c = AdsClient(target, node_id, sim_md(i), **kw)
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


def control_plane(work: Path, mtls: bool) -> ControlPlane:
    return ControlPlane(state_file=None, authority=Authority(work / "ca") if mtls else None)


async def bench_envoys(n: int, rounds: int, xds_api: str, mtls: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    cp = control_plane(work, mtls)
    port = await cp.start()
    envoys = []
    try:
        for i in range(n):
            spec = NodeSpec(
                kind="sidecar",
                listen_port=free_port(),
                app_port=free_port(),
                labels={"role": "apigw", "version": "current"},
            )
            node_id = f"envoy-{i}"
            tls = cp.enroll(node_id, spec, work / node_id / "tls")  # None on plaintext
            e = EnvoyProcess(
                node_id,
                bootstrap_config(node_id, "127.0.0.1", port, spec, xds_api=xds_api, tls=tls),
                workdir=work / node_id,
            )
            e.start()
            envoys.append(e)
        for e in envoys:
            await asyncio.to_thread(e.wait_ready, 60)
        return await measure(cp, n, rounds)
    finally:
        for e in envoys:
            e.stop()
        await cp.stop(0)


def spawn_clients(target: str, n: int, channels: int, tls_root: str) -> subprocess.Popen[bytes]:
    args = ["--child", target, "--clients", str(n), "--channels", str(channels)]
    args += ["--tls-root", tls_root]
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE)


async def bench_clients(n: int, rounds: int, channels: int, mtls: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    cp = control_plane(work, mtls)
    port = await cp.start()
    for i in range(n):
        node_id = f"sim-{i:04d}"
        cp.enroll(node_id, NodeSpec.from_metadata(sim_md(i)), work / node_id)
    child = spawn_clients(f"127.0.0.1:{port}", n, channels, str(work) if mtls else "")
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
    ap.add_argument(
        "--channels",
        type=int,
        default=0,
        help="plaintext only: simulated clients share this many gRPC channels (0: one each, as "
        "with mutual TLS, where every node has its own certificate and connection)",
    )
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--delta", action="store_true", help="Envoys speak delta xDS (not SotW)")
    ap.add_argument(
        "--transport",
        choices=("both", "plaintext", "mtls"),
        default="both",
        help="both: plaintext (baseline) then mutual TLS, side by side",
    )
    ap.add_argument("--child", metavar="TARGET", help=argparse.SUPPRESS)
    ap.add_argument("--tls-root", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        asyncio.run(run_clients(args.child, args.clients, args.channels, args.tls_root))
        return
    transports = ["plaintext", "mtls"] if args.transport == "both" else [args.transport]
    results = []
    for transport in transports:
        mtls = transport == "mtls"
        if args.envoys:
            api = "delta" if args.delta else "sotw"
            res = asyncio.run(bench_envoys(args.envoys, args.rounds, api, mtls))
            results.append({"mode": "envoy", "transport": transport, "xds_api": api, **res})
        if args.clients:
            channels = 0 if mtls else args.channels
            res = asyncio.run(bench_clients(args.clients, args.rounds, channels, mtls))
            results.append(
                {
                    "mode": "simulated",
                    "transport": transport,
                    "channels": channels or args.clients,
                    **res,
                }
            )
    if not results:
        ap.error("give --envoys N and/or --clients N")
    print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=1))
    print(side_by_side(results))


def side_by_side(results: list[dict[str, Any]]) -> str:
    """One line per (nodes, push): plaintext and mTLS figures next to each other."""
    rows = ["mode       nodes push      transport  p50 ms  p99 ms  max ms  CP CPU ms/push"]
    lines = [(r, kind) for r in results for kind in ("redirect", "clear")]
    lines.sort(key=lambda rk: (rk[0]["mode"], rk[0]["nodes"], rk[1] == "clear"))  # stable
    for r, kind in lines:
        f = r[kind]
        rows.append(
            f"{r['mode']:<10} {r['nodes']:>5} {kind:<9} {r['transport']:<10} "
            f"{f['p50_ms']:>6} {f['p99_ms']:>7} {f['max_ms']:>7} {f['cpu_ms_per_push']:>9}"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
