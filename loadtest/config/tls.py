"""``target.tls`` -> an ``ssl.SSLContext`` for both transports (standard library only)."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable
from functools import cache
from typing import Any

__all__ = ["default_context", "loaded_default_context", "ssl_context"]


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


def default_context(trust_env: bool = True) -> ssl.SSLContext:
    """httpx2's default context (the system's CAs through certifi, or ``SSL_CERT_FILE`` when
    ``trust_env``) for the clients beside the load (the metrics scraper's, the tokenize route's): one a
    process, whose CAs load at its first handshake. Loading them costs ~0.1 s of CPU, before the first
    request, and a client of a plain http:// URL never needs them."""
    return _default(bool(trust_env))  # one cache key whichever way it is called


def loaded_default_context(trust_env: bool = True) -> ssl.SSLContext:
    """The same default trust with its CAs loaded now: for the load's own connections, whose first
    handshakes must not pay for it inside a step."""
    return _default(bool(trust_env)).real()


@cache
def _default(trust_env: bool) -> _TrustAtFirstHandshake:
    return _TrustAtFirstHandshake(trust_env)


class _TrustAtFirstHandshake(ssl.SSLContext):
    """An ``SSLContext`` whose handshakes run on httpx2's default context, built when the first one
    starts (sockets: ``wrap_socket``; TLS in TLS and asyncio: ``wrap_bio``). The ALPN protocols a client
    sets on it go to that context too; verification is the default's: the system's CAs, hostnames checked.
    Shared by every client of the process, so never changed after it is made: a setting made on this
    shell (``verify_mode``, ``load_cert_chain``...) would not reach the handshakes."""

    def __new__(cls, trust_env: bool) -> _TrustAtFirstHandshake:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self, trust_env: bool) -> None:
        self._trust_env = trust_env
        self._alpn: list[str] | None = None
        self._built: ssl.SSLContext | None = None
        self._lock = threading.Lock()  # the scraper's thread and the main one may shake hands at once

    def real(self) -> ssl.SSLContext:
        """httpx2's default context, built (its CAs loaded) on the first call."""
        with self._lock:
            if self._built is None:
                import httpx2

                built = httpx2.create_ssl_context(trust_env=self._trust_env)
                if self._alpn is not None:
                    built.set_alpn_protocols(self._alpn)
                self._built = built
            return self._built

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        with self._lock:
            self._alpn = list(alpn_protocols)
            super().set_alpn_protocols(self._alpn)
            if self._built is not None:
                self._built.set_alpn_protocols(self._alpn)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        return self.real().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # type: ignore[override]
        return self.real().wrap_bio(*args, **kwargs)
