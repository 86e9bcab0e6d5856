"""Ctrl-C and SIGTERM while a run goes: one way to take them over and give them back.

The first signal stops sending and gives in-flight requests a grace period; a second cancels them
(README "Seeing the results"). A process that drives requests takes them on its event loop
(``on_loop``); a process that supervises workers (processes, Ray actors) takes them as plain handlers
(``handled``), since it spends its time blocked in joins and polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["STOP_SIGNALS", "handled", "on_loop"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def handled(handler: Callable[[int, Any], None], signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """``handler(sig, frame)`` for ``signals`` inside the block; the previous handlers after it."""
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            if old is not None:  # None: a handler not set from Python, nothing to restore
                signal.signal(sig, old)


@contextlib.contextmanager
def on_loop(
    loop: asyncio.AbstractEventLoop, handler: Callable[[int], None], signals: tuple[int, ...] = STOP_SIGNALS
) -> Iterator[None]:
    """``handler(sig)`` runs on ``loop`` for ``signals`` inside the block (where the platform allows)."""
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler, sig)
    try:
        yield
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
