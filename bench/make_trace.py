"""Writes scenarios/data/mooncake-200.jsonl: a small Mooncake-format trace, seeded (the same file every time).

``python -m bench.make_trace [OUT]``. 200 rows over about 5 s (Poisson arrivals, 40 a second), shaped like
Mooncake's conversation trace: every row opens with block 0 (a shared system prompt); 24 conversations
come back turn after turn, each turn's ``hash_ids`` the previous turn's plus new blocks (the history
grows), and one row in five is a one-off whose blocks after the first are its own. Blocks are 512 tokens
(the last one partial): ``len(hash_ids) == ceil(input_length / 512)`` on every row.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scenarios" / "data" / "mooncake-200.jsonl"
BLOCK = 512


def rows(n: int = 200, rate: float = 40.0, conversations: int = 24, seed: int = 15) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    times_ms = np.round(np.concatenate(([0.0], np.cumsum(rng.exponential(1000.0 / rate, n - 1))))).astype(int)
    next_id = 1
    history: dict[int, list[int]] = {}  # a conversation's full blocks so far (after block 0)
    out = []
    for t in times_ms:
        if rng.random() < 0.2:  # a one-off request: the system prompt, then its own blocks
            length = int(rng.integers(BLOCK + 1, 3 * BLOCK))
            k = math.ceil(length / BLOCK)
            ids = [0, *range(next_id, next_id + k - 1)]
            next_id += k - 1
        else:  # the next turn of a conversation: its history, then one or two new blocks (the last partial)
            c = int(rng.integers(0, conversations))
            past = history.setdefault(c, [])
            if len(past) > 5:  # long enough: the conversation starts over
                past.clear()
            new = int(rng.integers(1, 3))
            ids = [0, *past, *range(next_id, next_id + new)]
            next_id += new
            length = (len(ids) - 1) * BLOCK + int(rng.integers(1, BLOCK + 1))
            past.extend(ids[len(past) + 1 : -1])  # the new full blocks join the history; the partial tail does not
        out.append(
            {"timestamp": int(t), "input_length": length, "output_length": int(rng.integers(8, 33)), "hash_ids": ids}
        )
    return out


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
