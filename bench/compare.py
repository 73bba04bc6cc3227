"""One workload on several durable engines, side by side, in one run on this machine.

    .venv/bin/python bench/compare.py [--seconds 8] [--steps 10] [--pg URL] [--only NAME ...]

The workload: transactions of 10 no-op steps, every step durable, one transaction at a time per
worker. Measured, each in a process of its own (DBOS is a process-wide singleton):

- raw single-row commit rate of SQLite (WAL, synchronous=FULL) and of PostgreSQL (autocommit
  INSERTs on one connection): the limit of "one durable write per step";
- switchback on SQLite; switchback on PostgreSQL with 1 and with 4 worker processes; and, to
  show group commit, one switchback process with 8 transactions in flight on each store;
- OpenStack TaskFlow (linear flow, SQLAlchemy persistence on SQLite);
- DBOS Transact (workflow of steps, system database on the same PostgreSQL server).

Prints steps/s and p50/p99 transaction latency, and the peers' versions. Not a test: nothing is
asserted; targets are discussed in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PG_DEFAULT = os.environ.get("SWITCHBACK_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
HERE = Path(__file__).resolve()


# -- the systems, each run in a child process ----------------------------------------------------


def wait_start(start_at: float) -> None:
    """All workers of one measurement begin together."""
    while (left := start_at - time.time()) > 0:
        time.sleep(min(left, 0.05))


def run_raw_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.dir) / "raw.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < args.seconds:
        db.execute("BEGIN")
        db.execute("INSERT INTO t (v) VALUES (?)", (f"row {n}",))
        db.execute("COMMIT")
        n += 1
    return {"commits": n, "elapsed": time.perf_counter() - began}


def run_raw_pg(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    schema = f"bench_raw_{secrets.token_hex(4)}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            conn.execute(f"CREATE TABLE {schema}.t (id BIGSERIAL PRIMARY KEY, v TEXT)")
            sql = f"INSERT INTO {schema}.t (v) VALUES (%s)"
            n, began = 0, time.perf_counter()
            while time.perf_counter() - began < args.seconds:
                conn.execute(sql, (f"row {n}",))
                n += 1
            elapsed = time.perf_counter() - began
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return {"commits": n, "elapsed": elapsed}


def run_switchback(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from switchback.engine import BlockContext, Engine
    from switchback.model import App, scenario
    from switchback.store import open_store

    async def noop(ctx: BlockContext) -> None:
        return None

    sc = scenario("bench", request={"type": "object"})
    for i in range(args.steps):
        sc.block(f"s{i}")(noop)
    app = App()
    app.add(sc)

    async def go() -> dict[str, Any]:
        async with Engine(app, open_store(args.store)) as engine:
            await asyncio.gather(*(engine.run("bench", {}) for _ in range(args.concurrency)))
            wait_start(args.start_at)
            lat: list[float] = []
            began = time.time()

            async def stream() -> None:
                while time.time() - began < args.seconds:
                    t0 = time.perf_counter()
                    tx = await engine.run("bench", {})
                    lat.append(time.perf_counter() - t0)
                    assert tx.status == "completed", tx.status

            await asyncio.gather(*(stream() for _ in range(args.concurrency)))
            return {"transactions": len(lat), "lat": lat, "began": began, "ended": time.time()}

    return asyncio.run(go())


def run_taskflow(args: argparse.Namespace) -> dict[str, Any]:
    import contextlib
    import uuid

    from taskflow import engines, task
    from taskflow.patterns import linear_flow
    from taskflow.persistence import backends, models

    class Noop(task.Task):  # type: ignore[misc]
        def execute(self) -> None:
            return None

    backend = backends.fetch({"connection": f"sqlite:///{Path(args.dir) / 'taskflow.db'}"})
    with contextlib.closing(backend.get_connection()) as conn:
        conn.upgrade()

    def one() -> None:
        flow = linear_flow.Flow("bench")
        flow.add(*[Noop(name=f"s{i}") for i in range(args.steps)])
        book = models.LogBook("bench")
        detail = models.FlowDetail("bench", uuid=uuid.uuid4().hex)
        book.add(detail)
        with contextlib.closing(backend.get_connection()) as conn:
            conn.save_logbook(book)
        engines.load(flow, flow_detail=detail, book=book, backend=backend).run()

    one()  # warm-up
    lat: list[float] = []
    began = time.time()
    while time.time() - began < args.seconds:
        t0 = time.perf_counter()
        one()
        lat.append(time.perf_counter() - t0)
    return {"transactions": len(lat), "lat": lat, "began": began, "ended": time.time()}


def run_dbos(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    from dbos import DBOS, DBOSConfig

    logging.getLogger("dbos").setLevel(logging.WARNING)

    @DBOS.step()
    def noop() -> None:
        return None

    @DBOS.workflow()
    def workflow() -> None:
        for _ in range(args.steps):
            noop()

    # Same server; a database of its own, since DBOS manages its system database.
    base = args.pg.rsplit("/", 1)[0]
    config: DBOSConfig = {
        "name": "switchback-bench",
        "system_database_url": f"{base}/dbos_bench",
        "run_admin_server": False,
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        workflow()  # warm-up
        lat: list[float] = []
        began = time.time()
        while time.time() - began < args.seconds:
            t0 = time.perf_counter()
            workflow()
            lat.append(time.perf_counter() - t0)
        return {"transactions": len(lat), "lat": lat, "began": began, "ended": time.time()}
    finally:
        DBOS.destroy()


RUNNERS = {
    "raw-sqlite": run_raw_sqlite,
    "raw-pg": run_raw_pg,
    "switchback": run_switchback,
    "taskflow": run_taskflow,
    "dbos": run_dbos,
}


# -- the parent: spawn, gather, print ------------------------------------------------------------


def child(kind: str, args: argparse.Namespace, **extra: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(HERE), "--child", kind, "--seconds", str(args.seconds),
           "--steps", str(args.steps), "--pg", args.pg, "--dir", args.dir]  # fmt: skip
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def collect(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"benchmark child failed ({p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def engine_row(results: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    lat = sorted(x * 1000 for r in results for x in r["lat"])
    elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)
    n = sum(r["transactions"] for r in results)
    return {
        "transactions": n,
        "steps_per_s": n * steps / elapsed,
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def measure_switchback(
    args: argparse.Namespace, store: str, workers: int, concurrency: int = 1
) -> dict[str, Any]:
    start_at = time.time() + 3.0 + workers  # after every worker has opened its store
    procs = [child("switchback", args, store=store, start_at=start_at, concurrency=concurrency)
             for _ in range(workers)]  # fmt: skip
    return engine_row(collect(procs), args.steps)


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL server URL (database test)")
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["raw", "switchback-sqlite", "switchback-pg", "taskflow", "dbos"])  # fmt: skip
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    ap.add_argument("--child", choices=list(RUNNERS), help=argparse.SUPPRESS)
    ap.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(RUNNERS[args.child](args)))
        return

    only = set(args.only or ["raw", "switchback-sqlite", "switchback-pg", "taskflow", "dbos"])
    rows: dict[str, dict[str, Any]] = {}
    raw: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        args.dir = tmp
        if "raw" in only:
            for name in ("raw-sqlite", "raw-pg"):
                r = collect([child(name, args)])[0]
                raw[name] = r["commits"] / r["elapsed"]
        if "switchback-sqlite" in only:
            rows["switchback SQLite, 1 worker"] = measure_switchback(
                args, str(Path(tmp) / "sb-sqlite"), 1
            )
            rows["switchback SQLite, 1 worker x 8 concurrent"] = measure_switchback(
                args, str(Path(tmp) / "sb-sqlite-8"), 1, 8
            )
        if "switchback-pg" in only:
            import psycopg

            for workers, conc in ((1, 1), (4, 1), (1, 8)):
                schema = f"bench_{secrets.token_hex(4)}"
                label = f"switchback PostgreSQL, {workers} worker{'s' if workers > 1 else ''}"
                if conc > 1:
                    label += f" x {conc} concurrent"
                try:
                    rows[label] = measure_switchback(
                        args, f"{args.pg}?schema={schema}", workers, conc
                    )
                finally:
                    with psycopg.connect(args.pg, autocommit=True) as conn:
                        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        for name, label in (("taskflow", "TaskFlow (SQLite)"), ("dbos", "DBOS (PostgreSQL)")):
            if name in only:
                try:
                    rows[label] = engine_row(collect([child(name, args)]), args.steps)
                except Exception as exc:  # a peer that cannot run here is reported, not fatal
                    rows[label] = {"error": str(exc)}

    print(f"\n{args.steps} no-op durable steps per transaction, one transaction at a time per "
          f"worker unless said otherwise, {args.seconds:g} s per measurement\n")  # fmt: skip
    if raw:
        print("raw single-row commits/s")
        for name, label in (("raw-sqlite", "SQLite (WAL, synchronous=FULL)"),
                            ("raw-pg", "PostgreSQL (autocommit INSERT)")):  # fmt: skip
            if name in raw:
                print(f"  {label:<44}{raw[name]:>10,.0f}")
        print()
    print(f"{'system':<46}{'steps/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'tx':>8}")
    for label, r in rows.items():
        if "error" in r:
            print(f"{label:<46}  error: {r['error']}")
            continue
        print(f"{label:<46}{r['steps_per_s']:>10,.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
              f"{r['transactions']:>8}")  # fmt: skip
    print("\nversions: " + ", ".join(f"{d} {version(d)}" for d in
          ("switchback", "taskflow", "dbos", "SQLAlchemy", "psycopg")))  # fmt: skip
    import psycopg

    with psycopg.connect(args.pg) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()
    print(f"PostgreSQL {pg_version[0] if pg_version else '?'}, SQLite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    if args.json:
        print(json.dumps({"raw": raw, "rows": rows}))


if __name__ == "__main__":
    main()
