"""summary.json's content from a run's records: per-step summaries, SLO verdicts, why a sweep stopped.

Pure: records and the scenario in, a dict out. The run directory's I/O is in ``output/rundir.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest import __version__
from loadtest.analysis.capacity import capacity_result, floor_verdict, oversaturation
from loadtest.analysis.checks import endpoint_unreachable, evaluate_slos, harness_warnings
from loadtest.analysis.groups import first_sends
from loadtest.analysis.limitprobe import ProbeSeries
from loadtest.analysis.limitsummary import search_result
from loadtest.analysis.metrics import StepAccumulator, distribution
from loadtest.analysis.records import RequestRecord
from loadtest.analysis.servermetrics import ServerSeries
from loadtest.config.scenario import Scenario
from loadtest.config.secrets import redact_url, redacted
from loadtest.config.steps import StepPlan, plan_steps, step_plan

__all__ = ["Run", "accumulate", "build_summary", "merge_loop_lag", "pick"]


def pick(node: Any, path: str) -> Any:
    """The value at a dotted path of a summary (``ttft_ms.p99``); None where a part is missing."""
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


@dataclass
class Run:
    """A run directory read back: its scenario, its summary, and the per-step data plots need."""

    run_dir: Path
    scenario: Scenario
    summary: dict[str, Any]
    steps: dict[int, StepAccumulator]
    health: list[dict[str, Any]]
    probe: ProbeSeries | None = None  # limit discovery: every request's admission and advertised remaining
    server: ServerSeries | None = None  # the server's metrics as scraped through the run (server_metrics.jsonl)


def merge_loop_lag(lines: list[dict[str, Any]]) -> dict[str, float | None]:
    """Across workers, the worst of each statistic: a step is as healthy as its busiest process."""
    dists = [ln["loop_lag_ms"] for ln in lines if (ln.get("loop_lag_ms") or {}).get("max") is not None]
    if not dists:
        return {**distribution([]), "late": None}
    merged = {k: max(d[k] for d in dists) for k in dists[0] if k != "late"}
    lates = [d.get("late") for d in dists]  # None in steps.jsonl written before it was counted
    merged["late"] = None if None in lates else max(lates)
    return merged


def accumulate(scenario: Scenario, records: Iterable[RequestRecord]) -> dict[int, StepAccumulator]:
    """Stream the records of a run once into one accumulator per step."""
    by_step: dict[int, StepAccumulator] = defaultdict(lambda: StepAccumulator(scenario.slo.per_request))
    for r in records:
        by_step[r.step].add(r)
    return dict(by_step)


def _stop_reason(last: dict[str, Any]) -> str:
    """Why a sweep skipped its remaining steps, from the last step it ran (see planner.StepPlanner)."""
    if endpoint_unreachable(last):
        return (
            f"the endpoint was unreachable in step {last['index']} (every request failed to connect or to complete TLS)"
        )
    return f"step {last['index']} passed load.stop.max_error_rate ({last['error_rate']:.0%} errors)"


def build_summary(
    scenario: Scenario,
    accumulators: dict[int, StepAccumulator],
    *,
    started_at: str,
    partial: bool,
    base_url: str,
    step_health: Iterable[dict[str, Any]] = (),
    probe: ProbeSeries | None = None,
    tokenizer: dict[str, Any] | None = None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """summary.json's content from the accumulated steps of a run (pure: no I/O of its own). ``tokenizer``
    and ``environment`` are what the caller found out (which tokenizer counted, the machine)."""
    health = list(step_health)
    ran = {h.get("step") for h in health} | set(accumulators)
    first = first_sends(acc.groups for acc in accumulators.values())  # each prefix group's cold request
    steps, verdicts, skipped = [], [], []
    for plan in _planned_steps(scenario, health):
        if plan.index not in ran:
            if not partial:
                skipped.append(plan.index)  # the sweep stopped early (load.stop, or the endpoint down)
            continue  # an interrupted or stopped run never reached this step
        acc = accumulators.get(plan.index) or StepAccumulator(scenario.slo.per_request)
        s = acc.summary(index=plan.index, mode=plan.mode, value=plan.value)
        s["loop_lag_ms"] = merge_loop_lag([h for h in health if h.get("step") == plan.index])
        if (groups := acc.groups.summary(first)) is not None:
            s["prefix_groups"] = groups
        s["warnings"] = harness_warnings(s)
        if scenario.load.capacity is not None and plan.mode == "rate":
            cut = next((h["saturation"] for h in health if h.get("step") == plan.index and h.get("saturation")), None)
            s["saturation"] = cut or oversaturation(acc.sent_ns, acc.end_ns, plan.value)
        steps.append(s)
        verdicts += evaluate_slos(s, scenario.slo)
    out = {
        "scenario": scenario.name,
        "tool_version": __version__,
        "started_at": started_at,
        "partial": partial,
        "target": {
            "base_url": redact_url(base_url),  # callers pass secrets.shown_base_url; redacting again costs nothing
            "model": redacted(scenario).target.model,
            "api": scenario.target.api,
            "stream": scenario.workload.stream,
        },
        "tokenizer": tokenizer,
        "environment": environment,
        "steps": steps,
        "skipped_steps": skipped,
        "stopped_early": _stop_reason(steps[-1]) if skipped and steps else None,
        "slo": {"passed": all(v["ok"] for v in verdicts), "verdicts": verdicts},
        "search": search_result(steps, scenario, probe),
        "capacity": capacity_result(steps, scenario, accumulators),
    }
    if out["capacity"] is not None:  # a capacity search breaks the SLOs on purpose: it passes when it found one
        out["slo"]["passed"] = out["capacity"]["status"] in ("found", "above_max")
        if (floor := floor_verdict(out["capacity"], scenario.load.capacity)) is not None:  # ...at least the floor
            out["slo"]["verdicts"].append(floor)
            out["slo"]["passed"] = out["slo"]["passed"] and floor["ok"]
    return out


def _planned_steps(scenario: Scenario, health: list[dict[str, Any]]) -> list[StepPlan]:
    """The steps of the scenario; limit discovery chooses its steps as it goes: steps.jsonl has them."""
    if scenario.load.search is None and scenario.load.capacity is None:
        return plan_steps(scenario.load)
    seen = {h["step"]: h["value"] for h in health if "value" in h}
    return [step_plan(scenario.load, i, seen[i]) for i in sorted(seen)]
