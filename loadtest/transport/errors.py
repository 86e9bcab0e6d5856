"""The cause worth showing under the wrappers libraries put around an error (httpx2, Ray)."""

from __future__ import annotations

__all__ = ["first_line", "root_cause"]


def root_cause(exc: BaseException) -> BaseException:
    """The original exception: followed through ``__cause__`` and ``__context__`` (cycles stop it)."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of the root cause's message (its type when it has none), at most ``limit`` characters."""
    root = root_cause(exc)
    text = str(root).strip()
    first = text.splitlines()[0] if text else type(root).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."
