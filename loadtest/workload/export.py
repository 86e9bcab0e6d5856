"""``loadtest dataset build``: a scenario's generated prompts as a JSONL prompt file.

Replayed through ``workload.prompt.file`` (with the same ``api``, ``system_prompt`` and ``max_tokens``),
the file gives byte-identical request bodies: each line is what the pool made before the system prompt
was added (``messages`` for chat, ``prompt`` for completions), with its ``max_tokens`` and, for shared
prefixes, its ``group`` (GuideLLM #1033: a persisted dataset makes runs comparable).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from loadtest.config.scenario import Scenario, ScenarioError
from loadtest.config.steps import plan_steps
from loadtest.workload.prompts import PromptPool, build_prompts, fix_run_nonces
from loadtest.workload.trace import TracePool

__all__ = ["dataset_rows", "planned_requests", "write_dataset"]


def planned_requests(scenario: Scenario) -> int | None:
    """How many prompts a run of the scenario takes (warmup included); None for timed steps."""
    steps = plan_steps(scenario.load)
    if scenario.load.trace is not None and scenario.load.requests is None:
        return None
    if any(s.requests is None for s in steps):
        return None
    return sum(s.warmup + (s.requests or 0) for s in steps)


def dataset_rows(pool: PromptPool, count: int) -> Iterator[dict[str, Any]]:
    """The first ``count`` prompts of ``pool``, one JSON-ready row each."""
    for i in range(count):
        item = pool[i]
        row: dict[str, Any] = {"messages": item.messages} if item.messages is not None else {"prompt": item.prompt}
        row["max_tokens"] = item.max_tokens
        if item.group is not None:
            row["group"] = item.group
        yield row


def write_dataset(scenario: Scenario, out: Path, count: int | None, source: str) -> tuple[int, Scenario]:
    """Write the prompts a run of ``scenario`` sends to ``out``; returns how many, and the scenario with
    the run nonce they were made with (``--set ...run_nonce=`` makes a run send the same prompts)."""
    if scenario.target.tokenizer == "server":
        raise ScenarioError(f"{source}: target.tokenizer: server: dataset build counts offline; name a tokenizer")
    sc = fix_run_nonces(scenario)
    workload = sc.workload.model_copy(update={"system_prompt": None})  # a file replay adds it again
    pool = build_prompts(workload, sc.target.api, sc.target.tokenizer, trace=sc.load.trace)
    n = count if count is not None else planned_requests(sc)
    if n is None:
        if not isinstance(pool, TracePool):
            raise ScenarioError(f"{source}: load: timed steps (duration_s): give the number of prompts with --count")
        n = len(pool)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        for row in dataset_rows(pool, n):
            f.write(orjson.dumps(row) + b"\n")
    tmp.replace(out)
    return n, sc
