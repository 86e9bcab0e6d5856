"""A prompt pool as the APIs beyond plain chat want it: embeddings batches, images in prompts.

Embeddings: request ``i`` embeds prompts ``i*n .. i*n+n-1`` of the pool (``workload.batch_size`` = n),
so synthetic inputs keep their exact lengths and never repeat, and a file's lines cycle. Images:
request ``i`` carries images ``i*count .. i*count+count-1`` of the run's image pool (cycled), built
once before the run (``images.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Protocol

from loadtest.config.scenario import Workload
from loadtest.workload.images import EncodedImage, build_images

__all__ = ["BatchPool", "ImagePool", "api_pool", "item_text"]


class _Pool(Protocol):
    def __getitem__(self, i: int) -> Any: ...


def item_text(item: Any) -> str:
    """A prompt item's text: its prompt, or its messages' contents joined by newlines."""
    if item.prompt is not None:
        return str(item.prompt)
    return "\n".join(str(m.get("content", "")) for m in item.messages or [])


class BatchPool:
    """Request ``i`` gets ``n`` consecutive prompts of ``pool`` as one embeddings batch."""

    def __init__(self, pool: _Pool, n: int) -> None:
        self.pool, self.n = pool, n

    def __getitem__(self, i: int) -> Any:
        items = [self.pool[i * self.n + j] for j in range(self.n)]
        counts = [it.input_tokens for it in items]
        total = None if None in counts else sum(counts)
        return replace(items[0], messages=None, prompt=None, inputs=tuple(map(item_text, items)), input_tokens=total)


class ImagePool:
    """Request ``i`` gets ``count`` images of ``images``, cycling through them."""

    def __init__(self, pool: _Pool, images: list[EncodedImage], count: int) -> None:
        self.pool, self.images, self.count = pool, images, count

    def __getitem__(self, i: int) -> Any:
        n = len(self.images)
        return replace(self.pool[i], images=tuple(self.images[(i * self.count + j) % n] for j in range(self.count)))


def api_pool(pool: _Pool, workload: Workload) -> Any:
    """``pool`` with the workload's embeddings batches or images (unchanged without either)."""
    if workload.images is not None:
        pool = ImagePool(pool, build_images(workload.images, workload.seed), workload.images.count)
    if workload.batch_size > 1:
        pool = BatchPool(pool, workload.batch_size)
    return pool
