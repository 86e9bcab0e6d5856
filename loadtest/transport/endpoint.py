"""The SDK bridge: a step's ``AsyncOpenAI`` and what the request path reuses from it for every request.

The SDK (``max_retries=0``) is built per step on an explicit httpx2 client with connection limits
equal to the step's concurrency, on loadtest's HTTP/1.1 transport (``h1.py``) or, with
``target.transport: aiohttp``, the SDK's aiohttp one (``DefaultAioHttpClient``). It supplies what
makes a request valid for an endpoint (its auth and default headers, its base URL, its HTTP client);
``Endpoint.request`` then builds each request from them without re-merging headers or re-parsing the
URL (``client.py`` sends it).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

import httpx2
from openai import AsyncOpenAI

from loadtest.config.secrets import secret_values
from loadtest.transport.aiotrace import aiohttp_transport
from loadtest.transport.h1 import H1Transport
from loadtest.transport.netconn import env_proxy_url, origin

__all__ = ["Endpoint", "make_endpoint"]


@dataclass
class Endpoint:
    """The SDK client of a step and what the hot path reuses from it for every request."""

    sdk: AsyncOpenAI
    client: httpx2.AsyncClient  # the SDK's HTTP client: requests are sent on it directly
    urls: dict[str, httpx2.URL]  # api -> absolute URL, parsed once
    headers: httpx2.Headers  # the HTTP client's and the SDK's default headers, auth included
    timeout: dict[str, float | None]  # the request extension httpx2's transports read
    api_key: str
    secrets: tuple[str, ...] = ()  # never in an error text: the key, header values, the URL's credentials

    def request(self, api: str, body: bytes) -> httpx2.Request:
        """What ``client.build_request`` makes, without re-merging headers and re-parsing the URL each time."""
        return httpx2.Request(
            "POST", self.urls[api], headers=self.headers, content=body, extensions={"timeout": self.timeout}
        )

    async def close(self) -> None:
        await self.sdk.close()


def make_endpoint(
    base_url: str,
    api_key: str,
    *,
    max_connections: int,
    timeout_s: float,
    connect_timeout_s: float,
    idle_timeout_s: float | None = None,
    headers: dict[str, str] | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    stack: Literal["h1", "aiohttp"] = "h1",
    ssl_context: ssl.SSLContext | None = None,
    trust_env: bool = True,
) -> Endpoint:
    """An ``AsyncOpenAI`` that never retries, on an HTTP client sized to the step's concurrency.

    ``stack`` (``target.transport``): the HTTP transport under it: loadtest's own HTTP/1.1
    (``h1.py``) or the SDK's aiohttp one. ``transport`` replaces either (tests pass
    ``httpx2.MockTransport``). ``ssl_context``: how https is verified (``target.tls``);
    ``trust_env``: take proxies from the environment.
    """
    if transport is None:
        if stack == "h1":
            transport = H1Transport(max_connections=max_connections, ssl_context=ssl_context, trust_env=trust_env)
        else:
            proxy = env_proxy_url(*origin(base_url)) if trust_env else None
            transport = aiohttp_transport(max_connections=max_connections, ssl_context=ssl_context, proxy_url=proxy)
    # read = the per-read (idle) timeout: the longest silence while a response is awaited
    timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s, read=idle_timeout_s or timeout_s)
    client = httpx2.AsyncClient(
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        timeout=timeout,
        transport=transport,
        trust_env=False,  # the transports take proxies themselves
        follow_redirects=True,  # as the SDK's own clients do
    )
    sdk = AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        http_client=client,
        timeout=timeout,
        default_headers=headers or None,
    )
    base = httpx2.URL(base_url)  # a query (Azure's ?api-version=) stays after the API's path
    root = str(base.copy_with(query=None)).rstrip("/")
    hdrs = httpx2.Headers(client.headers)
    hdrs.update(sdk.auth_headers)
    # default_headers holds the SDK's sentinels (Omit) for headers it leaves out: keep real values only.
    hdrs.update({k: v for k, v in sdk.default_headers.items() if isinstance(v, str)})
    urls = {api: httpx2.URL(f"{root}/{path}", params=base.params) for api, path in _PATHS.items()}
    return Endpoint(sdk, client, urls, hdrs, timeout.as_dict(), api_key, secret_values(base_url, api_key, headers))


_PATHS = {"chat": "chat/completions", "completions": "completions"}
_PATHS.update(responses="responses", embeddings="embeddings")  # transport/apis.py
