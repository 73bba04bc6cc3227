"""The apigw role's client: forwards validated calls to the scenario role.

Every call through the platform passes here, so its cost per request bounds the platform's
throughput. It is aiohttp: with httpx, the apigw spent ~1-2 ms of CPU per forwarded call (its
connection pool checks every pooled connection on each request, each check building anyio's
attribute table and polling the socket; and without sniffio installed, httpcore retries a failed
import on every lock), ~10x what aiohttp spends, and the admin API's one-row page through the
platform topped out at ~330 req/s whatever the concurrency (docs/performance.md).
"""

from __future__ import annotations

import aiohttp
from starlette.requests import Request
from starlette.responses import Response
from yarl import URL

from switchback.gateway.http import HTTPError

# Request headers the scenario role needs; everything else (cookies, proxies' headers) stays.
FORWARD_REQUEST = ("authorization", "idempotency-key", "prefer", "content-type", "x-request-id")
# Response headers worth relaying.
FORWARD_RESPONSE = ("location", "allow", "www-authenticate", "retry-after", "content-type")


class Forwarder:
    """A keep-alive pool to the scenario role. Create it on the event loop that uses it."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=30),
            # The read timeout covers a synchronous wait; the default, and per call overridable.
            timeout=aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=timeout),
            # Relay bodies as they are; send no headers of its own the scenario role could act on.
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    async def close(self) -> None:
        await self.session.close()

    async def forward(
        self, request: Request, body: bytes | None, timeout: float | None = None
    ) -> Response:
        """Relay the call; ``timeout`` (seconds) overrides the default wait for its answer."""
        headers = {k: v for k in FORWARD_REQUEST if (v := request.headers.get(k)) is not None}
        if request.client:
            headers["x-forwarded-for"] = request.client.host
        # The path exactly as it came (still percent-encoded), so that it is not decoded and
        # encoded again on the way.
        raw = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        target = (
            self.base_url + raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        )
        try:
            async with self.session.request(
                request.method,
                URL(target, encoded=True),
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=(
                    aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=timeout)
                    if timeout
                    else None
                ),
            ) as upstream:
                content = await upstream.read()
                relay = {
                    k: v for k in FORWARD_RESPONSE if (v := upstream.headers.get(k)) is not None
                }
                status = upstream.status
        except TimeoutError:
            raise HTTPError(504, "the scenario role did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise HTTPError(
                502, "the scenario role is unreachable", {"error": type(exc).__name__}
            ) from None
        return Response(content, status_code=status, headers=relay)

    async def ready(self) -> bool:
        try:
            async with self.session.get(
                self.base_url + "/readyz", timeout=aiohttp.ClientTimeout(total=2.0)
            ) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False
