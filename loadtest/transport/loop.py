"""The event loop every loadtest process runs on."""

from __future__ import annotations

import asyncio

__all__ = ["new_loop"]


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop (a plain asyncio one where uvloop is not installed, e.g. Windows)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
