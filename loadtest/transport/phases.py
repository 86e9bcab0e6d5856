"""A request's connection phases, as k6 and curl name them, stamped by the transport under it.

The client puts a :class:`Phases` in ``request.extensions[PHASES_EXTENSION]`` and stamps ``issued``
as it hands the request to the HTTP client. Loadtest's own transport (``h1.py``) fills in the rest
itself; under the SDK's aiohttp transport, aiohttp's trace hooks do (``aiotrace.py``). Every stamp is
a ``time.perf_counter_ns()`` reading (0: did not happen), so the durations are differences of one
clock:

    queue    issued -> a connection slot was taken (waiting for the pool)
    connect  slot -> TCP connected (through a proxy: the proxy's tunnel included); new connections only
    tls      connected -> TLS handshake done; https on a new connection only (aiohttp: inside connect)
    request  connected (or slot, on a reused connection) -> the request's bytes handed to the socket
    ttfb     issued -> the response's status line and headers read (time to first byte of the response)

TTFT and E2E also count from ``issued``, so a new connection's handshake is inside them (vLLM's
definition); the phases say how much of it was handshake.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PHASES_EXTENSION", "Phases"]

PHASES_EXTENSION = "loadtest_phases"


@dataclass(slots=True)
class Phases:
    issued: int = 0
    slot: int = 0
    connected: int = 0  # TCP (and proxy tunnel) up, or the reused connection taken
    tls: int = 0
    written: int = 0
    head: int = 0
    new_connection: bool = False
    tls_inside_connect: bool = False  # the transport cannot tell TLS from TCP (aiohttp)

    def durations_ms(self) -> dict[str, float | None]:
        """``queue_ms, connect_ms, tls_ms, request_ms, ttfb_ms``; None where a phase did not happen."""

        def span(a: int, b: int) -> float | None:
            return round((b - a) / 1e6, 3) if a and b >= a else None

        new = self.new_connection
        sent_from = self.tls or self.connected if new else self.slot
        return {
            "queue_ms": span(self.issued, self.slot),
            "connect_ms": span(self.slot, self.connected) if new else None,
            "tls_ms": span(self.connected, self.tls) if new and self.tls else None,
            "request_ms": span(sent_from, self.written),
            "ttfb_ms": span(self.issued, self.head),
        }
