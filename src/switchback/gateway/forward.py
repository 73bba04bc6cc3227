"""The apigw role's client: forwards validated calls to the scenario role."""

from __future__ import annotations

import httpx
from starlette.requests import Request
from starlette.responses import Response

from switchback.gateway.http import HTTPError

# Request headers the scenario role needs; everything else (cookies, proxies' headers) stays.
FORWARD_REQUEST = ("authorization", "idempotency-key", "prefer", "content-type", "x-request-id")
# Response headers worth relaying.
FORWARD_RESPONSE = ("location", "allow", "www-authenticate", "retry-after", "content-type")


class Forwarder:
    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        # Keep-alive pool to the scenario role; the read timeout covers a synchronous wait.
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def forward(
        self, request: Request, body: bytes | None, timeout: float | None = None
    ) -> Response:
        """Relay the call; ``timeout`` (seconds) overrides the default wait for its answer."""
        headers = {k: v for k in FORWARD_REQUEST if (v := request.headers.get(k)) is not None}
        if request.client:
            headers["x-forwarded-for"] = request.client.host
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            upstream = await self.client.request(
                request.method,
                path,
                content=body,
                headers=headers,
                **({"timeout": httpx.Timeout(timeout, connect=5.0)} if timeout else {}),
            )
        except httpx.TimeoutException:
            raise HTTPError(504, "the scenario role did not answer in time") from None
        except httpx.HTTPError as exc:
            raise HTTPError(
                502, "the scenario role is unreachable", {"error": type(exc).__name__}
            ) from None
        relay = {k: v for k in FORWARD_RESPONSE if (v := upstream.headers.get(k)) is not None}
        return Response(upstream.content, status_code=upstream.status_code, headers=relay)

    async def ready(self) -> bool:
        try:
            r = await self.client.get("/readyz", timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200
