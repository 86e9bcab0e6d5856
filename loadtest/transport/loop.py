"""The event loop every loadtest process runs on."""

from __future__ import annotations

import asyncio
import gc

__all__ = ["new_loop"]


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop (a plain asyncio one where uvloop is not installed, e.g. Windows), for a process
    about to run: what it holds by now (its imports, openai's ~700 pydantic models among them, the
    scenario, the tokenizer, the prompts) lives as long as the run, so it is frozen out of the garbage
    collector. The collections the run's own allocations trigger then walk the run's objects only: about
    3% less CPU per streamed request in bench A (README "How the request path was chosen").
    """
    gc.collect(1)  # the young garbage first: a frozen object is never collected (a full collection: 0.3 s)
    gc.freeze()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
