"""``make bench-compare``: how often does ``loadtest compare`` call noise a change?

Synthetic closed-loop steps (concurrency 8, 96 requests, TTFT 20 ms, 31 gaps of 10 ms, +-1 ms of
jitter), each with 0-2 stalls of 5-25 ms at random moments that delay the first token of every
request sent in the 200 ms before them. Pairs of such runs with the same settings should all come
out "unchanged"; a candidate whose every 8th request is 15 ms slower to its first token should
come out "TTFT p99 regressed". Both are counted for compare's time windows and for resampling
request by request (every value its own window).

Failures: the same steps, closed loop and open loop (Poisson arrivals at 20/s on one seeded
schedule, as ``loadtest run`` sends them), where 10% of the requests time out after 1 s. Counted:
false verdicts on pairs with the same settings (both with timeouts), how often a candidate with
timeouts against a baseline without comes out "requests/s regressed", and how often the throughput
intervals contain the summaries' own change. Writes ``results/bench/compare-<timestamp>.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import numpy as np

from loadtest.analysis import compare
from loadtest.analysis.metrics import StepAccumulator
from loadtest.analysis.records import RequestRecord
from loadtest.analysis.summary import Run
from loadtest.config.scenario import Scenario
from loadtest.workload.arrivals import arrival_offsets_ns

ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000
SCENARIO = Scenario.model_validate({"name": "synthetic", "target": {"base_url": "mock"}})
Slow = Callable[[int, float], float]
Fails = Callable[[int], bool]
TIMEOUT_MS = 1000.0  # a timed-out request's time in flight (some three times a successful one's)
THROUGHPUT = ("request_throughput", "output_token_throughput")


def _request(
    i: int, sent: float, first: float, rng: np.random.Generator, timeout: float | None
) -> tuple[RequestRecord, float]:
    """Request i, sent at ``sent`` ms: its first token at ``first``, 31 gaps of 10 ms (+-1 ms) after;
    or, when ``timeout`` is given, no answer and a timeout error ``timeout`` ms after the send. And
    when it ended (ms)."""
    if timeout is not None:
        end = sent + timeout
        return RequestRecord(
            id=i, step=0, sent_ns=int(sent * MS), end_ns=int(end * MS), status="error", error_class="timeout"
        ), end
    chunks = [first + 10 * k + rng.uniform(-1, 1) for k in range(32)]
    end = chunks[-1] + 0.1
    record = RequestRecord(
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
    return record, end


def _run(acc: StepAccumulator, mode: str, value: float, seed: int) -> Run:
    summary = {"steps": [acc.summary(index=0, mode=mode, value=value)]}
    return Run(run_dir=Path(f"run{seed}"), scenario=SCENARIO, summary=summary, steps={0: acc}, health=[])


def closed_loop(
    seed: int,
    slow: Slow = lambda i, t: 0.0,
    lanes: int = 8,
    requests: int = 96,
    timed_out: Fails = lambda i: False,
    timeout_ms: float = TIMEOUT_MS,
) -> Run:
    """A closed-loop step at concurrency ``lanes``: TTFT 20 ms, 31 gaps of 10 ms, each +-1 ms of
    jitter. ``slow(i, t_ms)`` is added to request i's TTFT, given when it was sent. Requests i
    with ``timed_out(i)`` hold their lane for ``timeout_ms`` and fail (a timeout)."""
    rng = np.random.default_rng(seed)
    acc = StepAccumulator()
    free = [0.0] * lanes
    for i in range(requests):
        lane = int(np.argmin(free))
        sent = free[lane]
        timeout = timeout_ms if timed_out(i) else None
        r, free[lane] = _request(i, sent, sent + 20 + rng.uniform(-1, 1) + slow(i, sent), rng, timeout)
        acc.add(r)
    return _run(acc, "concurrency", lanes, seed)


def open_loop(
    seed: int, slow: Slow = lambda i, t: 0.0, rate: float = 20.0, requests: int = 96, timed_out: Fails = lambda i: False
) -> Run:
    """An open-loop step: ``requests`` sent at Poisson times at ``rate``/s (the same schedule in every
    run, as the scenario's seed makes it), each answered like ``closed_loop``'s (no queueing)."""
    rng = np.random.default_rng(seed)
    acc = StepAccumulator()
    for i, due in enumerate(arrival_offsets_ns(rate, "poisson", count=requests, seed=0) / MS):
        timeout = TIMEOUT_MS if timed_out(i) else None
        acc.add(_request(i, due, due + 20 + rng.uniform(-1, 1) + slow(i, due), rng, timeout)[0])
    return _run(acc, "rate", rate, seed)


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


def tenth(seed: int) -> Fails:
    """Each request times out with probability 0.1."""
    rng = np.random.default_rng(seed + 2_000_000)
    return lambda i: bool(rng.random() < 0.1)


def tally_failures(pairs: int, step: Callable[..., Run]) -> dict[str, float]:
    """Pairs of ``step`` runs with random stalls where 10% of the requests time out: same settings
    (both with timeouts), and a candidate with timeouts against a baseline without."""
    false = found = centred = rows = 0
    for s in range(pairs):
        base = step(2 * s, stalls(2 * s), timed_out=tenth(2 * s))
        cand = step(2 * s + 1, stalls(2 * s + 1), timed_out=tenth(2 * s + 1))
        same = compare.compare_runs(base, cand)["rows"]
        false += any(r["verdict"] != "unchanged" for r in same)
        worse = compare.compare_runs(step(2 * s, stalls(2 * s)), cand)["rows"]
        found += any(r["metric"] == "request_throughput" and r["verdict"] == "regressed" for r in worse)
        for r in same + worse:
            if r["metric"] in THROUGHPUT:
                rows += 1
                centred += r["ci95"][0] <= r["change"] <= r["ci95"][1]
    return {
        "false_verdict_share": false / pairs,
        "timeouts_found_share": found / pairs,
        "change_in_ci95": centred / rows,
    }


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    out = {
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pairs": pairs,
        "windows": tally(pairs),
    }
    with mock.patch.object(compare, "_windows", lambda at, e2e: np.arange(len(at))):
        out["per_request"] = tally(pairs)
    out["timeouts"] = {"closed_loop": tally_failures(pairs, closed_loop), "open_loop": tally_failures(pairs, open_loop)}
    print(f"{'resampled by':<14}{'false verdicts (same settings)':>32}{'spread tail found':>20}")
    for name in ("windows", "per_request"):
        print(f"{name:<14}{out[name]['false_verdict_share']:>32.0%}{out[name]['tail_regression_found_share']:>20.0%}")
    print(f"\n10% timeouts  {'false verdicts (same settings)':>32}{'timeouts found':>20}{'change in interval':>20}")
    for name, t in out["timeouts"].items():
        print(
            f"{name:<14}{t['false_verdict_share']:>32.0%}{t['timeouts_found_share']:>20.0%}{t['change_in_ci95']:>20.0%}"
        )
    path = ROOT / "results" / "bench" / f"compare-{out['started_at'].replace(':', '').replace('-', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
