"""HTTP benchmark: a synchronous scenario (request validation + one no-op block, durable on
SQLite, or on PostgreSQL with --pg) served by `switchback serve`, against the ceiling: a bare
Starlette endpoint on the same uvicorn settings that only validates the same JSON. In the same
run, beside the scenario call: the admin API's one-row page (`GET /transactions?limit=1`), and
both calls again through an `apigw` role in front (the path every call takes in the platform:
apigw → scenario role), unless --no-apigw.

    .venv/bin/python bench/gateway_http.py [--seconds 10] [--connections 32] [--rounds 3]
        [--pg postgresql://127.0.0.1:5432/test] [--no-apigw]

Keep-alive clients: `wrk` (Debian package `wrk`) when installed, else a small raw HTTP/1.1
client on asyncio in its own process (`--client python`); the same client for every server.
Prints req/s and p50/p99 latency for each, and the ratios. Not a timed test: figures depend on
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
TOKEN = "bench-token"


class Call:
    """One kind of request: what is sent, and what wrk and the raw client need for it."""

    def __init__(self, method: str, path: str, body: bytes | None, headers: dict[str, str]):
        self.method, self.path, self.body, self.headers = method, path, body, headers

    def raw(self) -> bytes:
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        if self.body is not None:
            head += f"Content-Length: {len(self.body)}\r\n"
        return head.encode() + b"\r\n" + (self.body or b"")

    def lua(self) -> str:
        out = f'wrk.method = "{self.method}"\n'
        if self.body is not None:
            out += f"wrk.body = [[{self.body.decode()}]]\n"
        out += "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in self.headers.items())
        return out


SCENARIO_CALL = Call("POST", "/bench", BODY, {"Content-Type": "application/json"})
LIST_CALL = Call("GET", "/transactions?limit=1", None, {"Authorization": f"Bearer {TOKEN}"})


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
    port: int,
    request: bytes,
    stop_at: float,
    measure_from: float,
    lat: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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


def _load(
    port: int, request: bytes, seconds: float, warmup: float, connections: int, out: Any
) -> None:
    async def main() -> tuple[list[float], list[int]]:
        lat: list[float] = []
        errors: list[int] = []
        now = time.perf_counter()
        await asyncio.gather(
            *(
                _worker(port, request, now + warmup + seconds, now + warmup, lat, errors)
                for _ in range(connections)
            )
        )
        return lat, errors

    lat, errors = asyncio.run(main())
    out.send((lat, errors))


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def measure_wrk(
    port: int, call: Call, seconds: float, warmup: float, connections: int
) -> dict[str, float]:
    import re
    import shutil

    wrk = shutil.which("wrk")
    assert wrk
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(call.lua())
    url = f"http://127.0.0.1:{port}{call.path}"
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


def measure(
    port: int, call: Call, seconds: float, warmup: float, connections: int
) -> dict[str, float]:
    parent, child = mp.Pipe()
    p = mp.Process(target=_load, args=(port, call.raw(), seconds, warmup, connections, child))
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
                content=BODY if path == "/bench" else None,
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
    ap.add_argument(
        "--no-apigw", action="store_true", help="leave out the measurements through an apigw"
    )
    args = ap.parse_args()
    import shutil

    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    run = measure_wrk if client == "wrk" else measure

    store_name = "PostgreSQL" if args.pg else "SQLite"
    ceiling_name = "ceiling (validate only)"
    gw_name = f"switchback scenario (1 no-op, {store_name})"
    list_name = "switchback admin list (limit=1)"
    via_gw_name = "  through an apigw: scenario"
    via_list_name = "  through an apigw: admin list (limit=1)"
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        root = Path(tmp)
        app = root / "app"
        (app / "scenarios").mkdir(parents=True)
        (app / "scenarios" / "bench.yaml").write_text(SCENARIO)
        (app / "benchblocks.py").write_text(BLOCKS)

        c_port, g_port, a_port = free_port(), free_port(), free_port()
        ceiling = mp.Process(target=run_ceiling, args=(c_port,), daemon=True)
        schema = f"bench_gw_{os.getpid()}"
        store = (
            ["--db", f"{args.pg}?schema={schema}"] if args.pg else ["--data", str(root / "data")]
        )
        serve = [str(VENV_BIN / "switchback"), "serve", str(app)]
        quiet = [] if args.access_log else ["--no-access-log"]
        env = {**os.environ, "SWITCHBACK_ADMIN_TOKENS": f"bench={TOKEN}"}
        log = (root / "serve.log").open("wb")
        servers: list[subprocess.Popen[bytes]] = []
        targets = [
            (ceiling_name, c_port, SCENARIO_CALL),
            (gw_name, g_port, SCENARIO_CALL),
            (list_name, g_port, LIST_CALL),
        ]
        if not args.no_apigw:
            targets += [(via_gw_name, a_port, SCENARIO_CALL), (via_list_name, a_port, LIST_CALL)]
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
        try:
            ceiling.start()
            gw = subprocess.Popen(
                [*serve, "--port", str(g_port), *store, *quiet],
                stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
            )  # fmt: skip
            servers.append(gw)
            wait_ready(c_port, "/bench", ceiling)
            wait_ready(g_port, "/readyz", gw)
            if not args.no_apigw:
                apigw = subprocess.Popen(
                    [*serve, "--port", str(a_port), "--role", "apigw",
                     "--scenario-url", f"http://127.0.0.1:{g_port}", *quiet],
                    stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
                )  # fmt: skip
                servers.append(apigw)
                wait_ready(a_port, "/readyz", apigw)
            # Alternate them all, so that load from anything else on the machine hits each
            # alike; the median round is reported. One measurement at a time.
            for n in range(args.rounds):
                for name, port, call in targets:
                    r = run(port, call, args.seconds, args.warmup, args.connections)
                    rounds[name].append(r)
                    print(f"round {n + 1}: ", end="")
                    show(name, r)
        finally:
            for proc in reversed(servers):
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
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
    print(
        f"admin list ÷ scenario call, req/s: {med[list_name]['rps'] / med[gw_name]['rps']:.2f} "
        "direct"
        + (
            f", {med[via_list_name]['rps'] / med[via_gw_name]['rps']:.2f} through the apigw"
            if not args.no_apigw
            else ""
        )
    )


if __name__ == "__main__":
    main()
