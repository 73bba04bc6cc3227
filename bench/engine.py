"""Engine throughput on the durable SQLite store, next to the raw SQLite commit rate.

    .venv/bin/python bench/engine.py [--transactions 300] [--blocks 10] [--concurrency 1]

Each block transition is one durable commit (WAL, synchronous=FULL by default), so the raw rate
of single-row commits with the same settings on the same disk is the physical limit; the ratio
between the two is the engine's efficiency. Both are measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from switchback.engine import BlockContext, Engine
from switchback.model import App, scenario
from switchback.store import open_store


async def noop(ctx: BlockContext) -> None:
    return None


def raw_commits(path: Path, n: int, synchronous: str) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    began = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - began
    db.close()
    return n / elapsed


async def engine_run(
    data: Path, transactions: int, blocks: int, concurrency: int, synchronous: str
) -> tuple[float, list[float]]:
    sc = scenario("bench", request={"type": "object"})
    for i in range(blocks):
        sc.block(f"b{i}")(noop)
    app = App()
    app.add(sc)
    latencies: list[float] = []
    async with Engine(app, open_store(data, synchronous=synchronous)) as engine:
        await engine.run("bench", {})  # warm-up: schema, caches

        async def worker(count: int) -> None:
            for _ in range(count):
                t0 = time.perf_counter()
                tx = await engine.run("bench", {})
                latencies.append(time.perf_counter() - t0)
                assert tx.status == "completed"

        per = [
            transactions // concurrency + (1 if i < transactions % concurrency else 0)
            for i in range(concurrency)
        ]
        began = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in per))
        elapsed = time.perf_counter() - began
    return transactions * blocks / elapsed, latencies


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--transactions", type=int, default=300)
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--synchronous", default="FULL", choices=["OFF", "NORMAL", "FULL"])
    ap.add_argument(
        "--dir", type=Path, default=None, help="where the databases go (default: a temp dir)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        commits = args.transactions * (args.blocks + 1)
        raw = raw_commits(root / "raw.db", commits, args.synchronous)
        blocks_per_s, lat = asyncio.run(
            engine_run(
                root / "engine", args.transactions, args.blocks, args.concurrency, args.synchronous
            )
        )
    lat_ms = sorted(x * 1000 for x in lat)
    p99 = lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]
    print(f"SQLite WAL synchronous={args.synchronous}; {args.transactions} transactions x {args.blocks} no-op blocks;"
          f" concurrency {args.concurrency}")  # fmt: skip
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'raw single-row commits/s (same settings)':<44}{raw:>12,.0f}")
    print(f"{'switchback blocks/s':<44}{blocks_per_s:>12,.0f}")
    print(f"{'switchback per-block time (us)':<44}{1e6 / blocks_per_s:>12,.0f}")
    print(f"{'raw commit time (us)':<44}{1e6 / raw:>12,.0f}")
    print(f"{'ratio blocks/s : raw commits/s':<44}{blocks_per_s / raw:>12.2f}")
    print(f"{'transaction latency p50 (ms)':<44}{statistics.median(lat_ms):>12.2f}")
    print(f"{'transaction latency p99 (ms)':<44}{p99:>12.2f}")


if __name__ == "__main__":
    main()
