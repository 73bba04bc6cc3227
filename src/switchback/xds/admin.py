"""HTTP admin endpoints of the control plane (a Starlette app over `ControlPlane`).

Every endpoint but /healthz needs `Authorization: Bearer <token>` (401 otherwise): whoever
reaches this API can move traffic.

GET    /healthz
GET    /nodes?selector=role=apigw,version=current
POST   /nodes/{id}/enroll      {"spec": {kind, listen_port, app_port, role, ...}, "csr": PEM}
                               -> {"certificate", "ca", "identity"} (registers the node)
DELETE /nodes/{id}             forget the node; its certificate is no longer accepted
GET    /redirects
POST   /redirect               {"selector": {...}, "target": "apigw-new"}  -> {"version"}
POST   /redirect/clear         {"selector": {...}}                         -> {"version"}
GET    /services
PUT    /services/{name}/endpoints {"endpoints": [["127.0.0.1", 8080], "127.0.0.1:8081"]}
POST   /wait-acked             {"selector", "version", "timeout", "expect"} -> report
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from switchback.xds.control import ControlPlane
from switchback.xds.pki import CredentialError
from switchback.xds.resources import NodeSpec


def parse_selector(text: str | None) -> dict[str, Any]:
    """`role=apigw,version=current` -> dict; `id=a|b` means any of a, b."""
    out: dict[str, Any] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"bad selector term {part!r} (expected key=value)")
        out[key.strip()] = value.split("|") if "|" in value else value.strip()
    return out


def parse_endpoint(ep: Any) -> tuple[str, int]:
    if isinstance(ep, str):
        host, _, port = ep.rpartition(":")
        return host.strip("[]"), int(port)
    return str(ep[0]), int(ep[1])


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def admin_app(cp: ControlPlane, token: str) -> Starlette:
    if not token:
        raise ValueError("the xDS admin API needs a token")
    want = _digest(token)

    def guard(handler: Any) -> Any:
        async def wrapped(request: Request) -> JSONResponse:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            ok = scheme.lower() == "bearer" and hmac.compare_digest(_digest(value.strip()), want)
            if not ok:
                return JSONResponse(
                    {"error": "missing or wrong admin token (Authorization: Bearer TOKEN)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return await handler(request)  # type: ignore[no-any-return]

        return wrapped

    async def body(request: Request) -> dict[str, Any]:
        data = await request.json() if await request.body() else {}
        if not isinstance(data, dict):
            raise ValueError("JSON object expected")
        return data

    def selector_of(data: dict[str, Any]) -> dict[str, Any]:
        sel = data.get("selector") or {}
        return parse_selector(sel) if isinstance(sel, str) else dict(sel)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "xds_port": cp.port})

    async def nodes(request: Request) -> JSONResponse:
        sel = parse_selector(request.query_params.get("selector"))
        return JSONResponse({"nodes": cp.nodes(sel)})

    async def enroll(request: Request) -> JSONResponse:
        data = await body(request)
        md = data.get("spec")
        csr = data.get("csr")
        if not isinstance(md, dict) or not isinstance(csr, str):
            raise ValueError('expected {"spec": {...}, "csr": "-----BEGIN CERTIFICATE REQUEST..."}')
        spec = NodeSpec.from_metadata(md)
        return JSONResponse(cp.enroll_request(request.path_params["node_id"], spec, csr))

    async def forget(request: Request) -> JSONResponse:
        node_id = request.path_params["node_id"]
        known = cp.registered(node_id) is not None or bool(cp.nodes({"id": node_id}))
        cp.forget_node(node_id)
        return JSONResponse({"forgotten": node_id, "known": known})

    async def redirects(request: Request) -> JSONResponse:
        rules = [{"selector": s, "target": t} for s, t in cp.redirects()]
        return JSONResponse({"redirects": rules})

    async def set_redirect(request: Request) -> JSONResponse:
        data = await body(request)
        version = await cp.set_redirect(selector_of(data), str(data.get("target") or ""))
        return JSONResponse({"version": version})

    async def clear_redirect(request: Request) -> JSONResponse:
        version = await cp.clear_redirect(selector_of(await body(request)))
        return JSONResponse({"version": version})

    async def services(request: Request) -> JSONResponse:
        return JSONResponse({"services": cp.endpoints()})

    async def set_endpoints(request: Request) -> JSONResponse:
        data = await body(request)
        eps = [parse_endpoint(e) for e in data.get("endpoints", [])]
        version = await cp.set_endpoints(request.path_params["name"], eps)
        return JSONResponse({"version": version})

    async def wait_acked(request: Request) -> JSONResponse:
        data = await body(request)
        version = data.get("version")
        report = await cp.wait_acked(
            selector_of(data),
            int(version) if version is not None else None,
            timeout=float(data.get("timeout", 10.0)),
            expect=list(data.get("expect") or []),
        )
        return JSONResponse(report.as_dict())

    async def bad_request(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/nodes", guard(nodes)),
            Route("/nodes/{node_id}/enroll", guard(enroll), methods=["POST"]),
            Route("/nodes/{node_id}", guard(forget), methods=["DELETE"]),
            Route("/redirects", guard(redirects)),
            Route("/redirect", guard(set_redirect), methods=["POST"]),
            Route("/redirect/clear", guard(clear_redirect), methods=["POST"]),
            Route("/services", guard(services)),
            Route("/services/{name}/endpoints", guard(set_endpoints), methods=["PUT", "POST"]),
            Route("/wait-acked", guard(wait_acked), methods=["POST"]),
        ],
        exception_handlers={
            ValueError: bad_request,
            KeyError: bad_request,
            CredentialError: bad_request,
        },
    )


async def serve(
    cp: ControlPlane,
    token: str,
    xds_host: str = "127.0.0.1",
    xds_port: int = 18000,
    admin_host: str = "127.0.0.1",
    admin_port: int = 18001,
) -> None:
    """Run ADS and the admin HTTP app in this event loop until cancelled."""
    app = admin_app(cp, token)
    await cp.start(xds_host, xds_port)
    server = uvicorn.Server(
        uvicorn.Config(app, host=admin_host, port=admin_port, log_level="warning")
    )
    try:
        await server.serve()
    finally:
        await cp.stop(1.0)
