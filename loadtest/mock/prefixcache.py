"""The mock's prefix cache, modelled on vLLM's automatic prefix caching (docs/design/prefix_caching.md).

A prompt is cut into full blocks of ``block_tokens``; block j is named by the hash of block j-1's name
and its own tokens, so a block matches only when everything before it matches too. Only full blocks are
cached, and the last prompt token is always computed (its logits start the answer): a prompt of n tokens
gets at most ``floor((n - 1) / B) * B`` cached tokens. A request's blocks become usable when its prefill
is done (its first token is due): a second request arriving while the first is still in prefill misses,
as on a real server. Eviction is least-recently-used within ``capacity_tokens``; a request's blocks are
touched tail first, so a shared head outlives the tails behind it (vLLM frees a finished request's blocks
in reverse order for the same reason). Not modelled: blocks of running requests are never pinned.

Tokens are what the mock counts: whitespace-separated words of every message's content (or the
``tokenizer.json``'s ids), no chat template.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

__all__ = ["PrefixCache"]


class PrefixCache:
    """Block hashes -> when each block became usable, in least-recently-used order."""

    def __init__(self, block_tokens: int, capacity_tokens: int) -> None:
        self.block = block_tokens
        self.capacity_blocks = max(1, capacity_tokens // block_tokens)
        self.blocks: OrderedDict[int, float] = OrderedDict()
        self.queries = self.hits = 0  # prompt tokens looked up, and found (vllm:prefix_cache_queries/hits)

    def chain(self, tokens: Sequence[Hashable]) -> list[int]:
        """The names of the prompt's full blocks, each hashed with its parent's."""
        names, parent, b = [], 0, self.block
        for i in range(0, len(tokens) - b + 1, b):
            parent = hash((parent, tuple(tokens[i : i + b])))
            names.append(parent)
        return names

    def lookup(self, chain: list[int], n_tokens: int, now: float) -> int:
        """Cached tokens of a prompt of ``n_tokens`` whose blocks are ``chain``: the longest run of leading
        blocks usable by ``now``, capped so the last token is computed."""
        usable = max(0, (n_tokens - 1) // self.block)
        hit = 0
        for name in chain[:usable]:
            ready = self.blocks.get(name)
            if ready is None or ready > now:
                break
            hit += 1
        self.queries += n_tokens
        self.hits += hit * self.block
        return hit * self.block

    def insert(self, chain: list[int], ready_at: float) -> None:
        """Keep the prompt's blocks (usable from ``ready_at``), the head most recently used."""
        blocks = self.blocks
        for name in reversed(chain):
            ready = blocks.get(name)
            blocks[name] = ready_at if ready is None else min(ready, ready_at)
            blocks.move_to_end(name)
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)

    def clear(self) -> None:
        self.blocks.clear()
        self.queries = self.hits = 0
