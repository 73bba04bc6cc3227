"""HTTP benchmark: a synchronous scenario (request validation + one no-op block, durable on
SQLite, or on PostgreSQL with --pg) served by `switchback serve`, against the ceiling: a bare
Starlette endpoint on the same uvicorn settings that only validates the same JSON.

    .venv/bin/python bench/gateway_http.py [--seconds 10] [--connections 32] [--rounds 3]
        [--pg postgresql://127.0.0.1:5432/test]

Keep-alive clients: `wrk` (Debian package `wrk`) when installed, else a small raw HTTP/1.1
client on asyncio in its own process (`--client python`); the same client for both servers.
Prints req/s and p50/p99 latency for each, and the ratio. Not a timed test: figures depend on
the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["site", "prefix"],
    "properties": {
        "site": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,30}$"},
        "prefix": {"type": "string", "pattern": "^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$"},
        "owner": {"type": "string"},
    },
}
BODY = json.dumps({"site": "tokyo-1", "prefix": "10.1.0.0/24", "owner": "netops"}).encode()
SCENARIO = f"""
name: bench
method: POST
path: /bench
request: {json.dumps(SCHEMA)}
transaction:
  timeout: 30
blocks:
  - name: noop
    do: benchblocks:noop
    idempotent: true
"""
BLOCKS = """
async def noop(ctx):
    return {"ok": True}
"""


# -- the ceiling: same framework, same server settings, validation only ----------------------------


def ceiling_app() -> Any:
    from jsonschema import Draft202012Validator
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    validator = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)

    async def endpoint(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return Response(b'{"error":"malformed JSON"}', 400, media_type="application/json")
        errors = [e.message for e in validator.iter_errors(body)]
        if errors:
            return Response(json.dumps({"error": errors}), 422, media_type="application/json")
        return Response(b'{"status":"ok"}', 200, media_type="application/json")

    return Starlette(routes=[Route("/bench", endpoint, methods=["POST"])])


def run_ceiling(port: int) -> None:
    import uvicorn

    uvicorn.run(
        ceiling_app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        limit_concurrency=1000,
        timeout_keep_alive=5,
        server_header=False,
    )


# -- load generator ------------------------------------------------------------------------------


async def _worker(
    port: int, stop_at: float, measure_from: float, lat: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )
    try:
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if began >= measure_from:
                lat.append(time.perf_counter() - began)
                if status != 200:
                    errors.append(status)
    finally:
        writer.close()


def _load(port: int, seconds: float, warmup: float, connections: int, out: Any) -> None:
    async def main() -> tuple[list[float], list[int]]:
        lat: list[float] = []
        errors: list[int] = []
        now = time.perf_counter()
        await asyncio.gather(
            *(
                _worker(port, now + warmup + seconds, now + warmup, lat, errors)
                for _ in range(connections)
            )
        )
        return lat, errors

    lat, errors = asyncio.run(main())
    out.send((lat, errors))


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
"""


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def measure_wrk(port: int, seconds: float, warmup: float, connections: int) -> dict[str, float]:
    import re
    import shutil

    wrk = shutil.which("wrk")
    assert wrk
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % BODY.decode())
    url = f"http://127.0.0.1:{port}/bench"
    base = [wrk, "-t1", f"-c{connections}", "-s", f.name, "--latency"]
    subprocess.run([*base, f"-d{max(1, int(warmup))}s", url], capture_output=True, check=True)
    out = subprocess.run(
        [*base, f"-d{int(seconds)}s", url], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(f.name)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": total,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "non_200": int(non2xx.group(1)) if non2xx else 0,
    }


def measure(port: int, seconds: float, warmup: float, connections: int) -> dict[str, float]:
    parent, child = mp.Pipe()
    p = mp.Process(target=_load, args=(port, seconds, warmup, connections, child))
    p.start()
    lat, errors = parent.recv()
    p.join()
    lat.sort()
    n = len(lat)
    return {
        "requests": n,
        "rps": n / seconds,
        "p50_ms": lat[n // 2] * 1000 if n else float("nan"),
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "non_200": len(errors),
    }


# -- orchestration -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, path: str, proc: subprocess.Popen[bytes] | mp.Process) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()
        if not alive:
            raise SystemExit("server exited during start-up")
        try:
            r = httpx.request(
                "POST" if path == "/bench" else "GET",
                f"http://127.0.0.1:{port}{path}",
                content=BODY,
                headers={"Content-Type": "application/json"},
                timeout=1,
            )
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"server on {port} not ready")


def show(name: str, r: dict[str, float]) -> None:
    print(
        f"{name:<44} {r['rps']:>9.0f} req/s   p50 {r['p50_ms']:>7.2f} ms   "
        f"p99 {r['p99_ms']:>7.2f} ms   ({r['requests']} requests, {r['non_200']} non-200)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--access-log", action="store_true", help="keep the gateway's access log on")
    ap.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument(
        "--pg",
        metavar="URL",
        help="serve the scenario on this PostgreSQL (a schema of its own, dropped at the end) "
        "instead of the embedded SQLite, e.g. postgresql://127.0.0.1:5432/test",
    )
    args = ap.parse_args()
    import shutil

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    run = measure_wrk if client == "wrk" else measure

    ceiling_name = "ceiling (validate only)"
    gw_name = f"switchback scenario (1 no-op, {'PostgreSQL' if args.pg else 'SQLite'})"
    rounds: dict[str, list[dict[str, float]]] = {ceiling_name: [], gw_name: []}
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        root = Path(tmp)
        app = root / "app"
        (app / "scenarios").mkdir(parents=True)
        (app / "scenarios" / "bench.yaml").write_text(SCENARIO)
        (app / "benchblocks.py").write_text(BLOCKS)

        c_port, g_port = free_port(), free_port()
        ceiling = mp.Process(target=run_ceiling, args=(c_port,), daemon=True)
        schema = f"bench_gw_{os.getpid()}"
        store = (
            ["--db", f"{args.pg}?schema={schema}"] if args.pg else ["--data", str(root / "data")]
        )
        cmd = [str(VENV_BIN / "switchback"), "serve", str(app), "--port", str(g_port), *store]
        if not args.access_log:
            cmd.append("--no-access-log")
        log = (root / "serve.log").open("wb")
        gw: subprocess.Popen[bytes] | None = None
        try:
            ceiling.start()
            gw = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
            wait_ready(c_port, "/bench", ceiling)
            wait_ready(g_port, "/readyz", gw)
            # Alternate the two, so that load from anything else on the machine hits both alike;
            # the median round is reported. Only the measured server gets requests at a time.
            for n in range(args.rounds):
                for name, port in ((ceiling_name, c_port), (gw_name, g_port)):
                    r = run(port, args.seconds, args.warmup, args.connections)
                    rounds[name].append(r)
                    print(f"round {n + 1}: ", end="")
                    show(name, r)
        finally:
            if gw is not None:
                gw.send_signal(signal.SIGTERM)
                gw.wait(30)
            log.close()
            if ceiling.pid:
                os.kill(ceiling.pid, signal.SIGTERM)
            ceiling.join(10)
            if args.pg:
                import psycopg

                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    print(
        f"\n{args.connections} keep-alive connections, {args.seconds:g} s per measurement "
        f"(+{args.warmup:g} s warm-up), median of {args.rounds} alternating rounds, one server "
        f"process each, {os.cpu_count()} CPUs, client: {client}\n"
    )
    med = {}
    for name, rs in rounds.items():
        med[name] = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
        show(name, med[name])
    ratio = med[gw_name]["rps"] / med[ceiling_name]["rps"]
    print(f"\nratio: {ratio:.2f} of the ceiling's req/s (target ≥ 0.30)")


if __name__ == "__main__":
    main()
