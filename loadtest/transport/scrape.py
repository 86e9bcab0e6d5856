"""The HTTP side of reading a server's ``/metrics``: one GET at a time on its own connection (a client of
its own, never the load's pool), with the target's TLS settings and proxies."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx2

from loadtest.config.tls import default_context
from loadtest.transport.netconn import origin

__all__ = ["MetricsAnswer", "MetricsClient", "default_metrics_url", "same_origin"]


@dataclass(frozen=True)
class MetricsAnswer:
    status: int
    content_type: str
    text: str


def default_metrics_url(base_url: str) -> str:
    """``/metrics`` at the root of ``base_url``: its path without a trailing ``/v1``, its query dropped."""
    root = base_url.partition("#")[0].partition("?")[0].rstrip("/").removesuffix("/v1")
    return root + "/metrics"  # by hand: urlsplit rejects the [redacted]@host of a URL shown without credentials


def same_origin(a: str, b: str) -> bool:
    return origin(a) == origin(b)


class MetricsClient:
    """GETs one URL again and again on one kept-alive connection; errors are httpx2's exceptions."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        self.url = url
        self.client = httpx2.Client(
            headers={**headers, "accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"},
            timeout=httpx2.Timeout(timeout_s),
            verify=ssl_context if ssl_context is not None else default_context(trust_env),
            trust_env=trust_env,
            limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1),
            follow_redirects=True,
        )

    def get(self) -> MetricsAnswer:
        r = self.client.get(self.url)
        return MetricsAnswer(r.status_code, r.headers.get("content-type", ""), r.text)

    def close(self) -> None:
        self.client.close()
