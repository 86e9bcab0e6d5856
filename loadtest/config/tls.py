"""``target.tls`` -> an ``ssl.SSLContext`` for both transports (standard library only)."""

from __future__ import annotations

import ssl
from functools import cache

__all__ = ["default_context", "ssl_context"]


def ssl_context(
    *, verify: bool = True, ca_file: str | None = None, client_cert: str | None = None, client_key: str | None = None
) -> ssl.SSLContext | None:
    """The context to verify https endpoints with; None: the transport's default (the system's CAs
    through certifi, or ``SSL_CERT_FILE``). Raises ``ssl.SSLError``/``OSError`` on unreadable files."""
    if verify and ca_file is None and client_cert is None:
        return None
    if not verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_file is not None:
        ctx = ssl.create_default_context(cafile=ca_file)  # this CA bundle only, not the system's as well
    else:
        import httpx2  # only when a client certificate goes with the default trust

        ctx = httpx2.create_ssl_context()
    if client_cert is not None:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


@cache
def default_context(trust_env: bool = True) -> ssl.SSLContext:
    """httpx2's default context (the system's CAs through certifi, or ``SSL_CERT_FILE`` when
    ``trust_env``), built once a process for the clients beside the load (the metrics scraper's, the
    tokenize route's): loading the CAs costs ~0.09 s of CPU, and each client built its own."""
    import httpx2

    return httpx2.create_ssl_context(trust_env=trust_env)
