"""``make bench-compare``: how often does ``loadtest compare`` call noise a change?

Synthetic closed-loop steps (concurrency 8, 96 requests, TTFT 20 ms, 31 gaps of 10 ms, +-1 ms of
jitter), each with 0-2 stalls of 5-25 ms at random moments that delay the first token of every
request sent in the 200 ms before them. Pairs of such runs with the same settings should all come
out "unchanged"; a candidate whose every 8th request is 15 ms slower to its first token should
come out "TTFT p99 regressed". Both are counted for compare's time windows and for resampling
request by request (every value its own window). Writes ``results/bench/compare-<timestamp>.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import numpy as np

from loadtest import compare
from loadtest.metrics import StepAccumulator
from loadtest.records import RequestRecord
from loadtest.results import Run
from loadtest.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000
SCENARIO = Scenario.model_validate({"name": "synthetic", "target": {"base_url": "mock"}})
Slow = Callable[[int, float], float]


def closed_loop(seed: int, slow: Slow = lambda i, t: 0.0, lanes: int = 8, requests: int = 96) -> Run:
    """A closed-loop step at concurrency ``lanes``: TTFT 20 ms, 31 gaps of 10 ms, each +-1 ms of
    jitter. ``slow(i, t_ms)`` is added to request i's TTFT, given when it was sent."""
    rng = np.random.default_rng(seed)
    acc = StepAccumulator()
    free = [0.0] * lanes
    for i in range(requests):
        lane = int(np.argmin(free))
        sent = free[lane]
        first = sent + 20 + rng.uniform(-1, 1) + slow(i, sent)
        chunks = [first + 10 * k + rng.uniform(-1, 1) for k in range(32)]
        free[lane] = end = chunks[-1] + 0.1
        acc.add(
            RequestRecord(
                id=i,
                step=0,
                sent_ns=int(sent * MS),
                first_token_ns=int(first * MS),
                last_token_ns=int(chunks[-1] * MS),
                chunk_times_ns=[int(c * MS) for c in chunks],
                end_ns=int(end * MS),
                input_tokens=10,
                output_tokens=32,
            )
        )
    summary = {"steps": [acc.summary(index=0, mode="concurrency", value=lanes)]}
    return Run(run_dir=Path(f"run{seed}"), scenario=SCENARIO, summary=summary, steps={0: acc}, health=[])


def stalls(seed: int) -> Slow:
    """0-2 stalls of 5-25 ms somewhere in the first 3.5 s."""
    rng = np.random.default_rng(seed + 1_000_000)
    events = [(rng.uniform(0, 3500), rng.uniform(5, 25)) for _ in range(int(rng.integers(0, 3)))]
    return lambda i, t: sum(d for at, d in events if at - 200 <= t < at)


def tally(pairs: int) -> dict[str, float]:
    false = power = 0
    for s in range(pairs):
        base, noise = closed_loop(2 * s, stalls(2 * s)), stalls(2 * s + 1)
        same = compare.compare_runs(base, closed_loop(2 * s + 1, noise))["rows"]
        false += any(r["verdict"] != "unchanged" for r in same)
        tail = closed_loop(2 * s + 1, lambda i, t, noise=noise: noise(i, t) + (15.0 if i % 8 == 3 else 0.0))
        rows = {r["metric"]: r["verdict"] for r in compare.compare_runs(base, tail)["rows"]}
        power += rows["ttft_ms.p99"] == "regressed"
    return {"false_verdict_share": false / pairs, "tail_regression_found_share": power / pairs}


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    out = {
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pairs": pairs,
        "windows": tally(pairs),
    }
    with mock.patch.object(compare, "_windows", lambda at, e2e: np.arange(len(at))):
        out["per_request"] = tally(pairs)
    print(f"{'resampled by':<14}{'false verdicts (same settings)':>32}{'spread tail found':>20}")
    for name in ("windows", "per_request"):
        print(f"{name:<14}{out[name]['false_verdict_share']:>32.0%}{out[name]['tail_regression_found_share']:>20.0%}")
    path = ROOT / "results" / "bench" / f"compare-{out['started_at'].replace(':', '').replace('-', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
