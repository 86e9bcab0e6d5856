"""A run directory: write it while a run goes, read it back, rebuild its summary from the records.

``results/<scenario name>/<UTC timestamp>/``: ``scenario.yaml`` (resolved, no secrets),
``requests.jsonl`` (one record a line, flushed as each request completes), ``summary.json``
(atomic), ``summary.csv`` (one row a step).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from . import __version__
from .checks import LOOP_LAG_P99_MS, endpoint_unreachable, evaluate_slos, harness_warnings
from .driver import Event, RequestDone, StepFinished, StepPlan, plan_steps, step_plan
from .limitprobe import ProbeSeries
from .metrics import StepAccumulator, distribution
from .planner import search_result
from .records import RequestRecord, record_from_json, record_to_json
from .scenario import Scenario, ScenarioError, load_scenario, scenario_to_yaml
from .secrets import redact_url, redacted
from .tokens import tokenizer_info

__all__ = [
    "Recorder",
    "Run",
    "accumulate",
    "analyze",
    "build_summary",
    "event_line",
    "load_run",
    "new_run_dir",
    "read_records",
    "read_run_records",
    "read_step_health",
    "write_atomic",
    "write_scenario",
    "write_summary",
]

_CSV_STATS = ("p50", "p90", "p99")
_CSV_DISTS = ("ttft_ms", "ttfa_ms", "itl_ms", "tpot_ms", "e2e_ms")


def new_run_dir(parent: Path, name: str, started: datetime) -> Path:
    base = parent / name / started.strftime("%Y%m%dT%H%M%SZ")
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    path.mkdir(parents=True)
    return path


def write_atomic(path: Path, text: str) -> None:
    """Temporary file + rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e  # name the caller's file, not our temporary one
    finally:
        tmp.unlink(missing_ok=True)  # after a failure; after the rename it is already gone


def event_line(event: Event) -> tuple[str, str] | None:
    """The line an event adds to a run directory, and the file stem it goes to (``requests`` or
    ``steps``); None for events that are not written."""
    match event:
        case RequestDone(record=record):
            return "requests", record_to_json(record)
        case StepFinished():
            line = {
                "step": event.step.index,
                "mode": event.step.mode,
                "value": event.step.value,
                "worker": event.worker,
                "started_ns": event.started_ns,
                "finished_ns": event.t_ns,
                "loop_lag_ms": {
                    **distribution(event.loop_lag_ms),
                    "late": sum(1 for x in event.loop_lag_ms if x > LOOP_LAG_P99_MS),  # wake-ups this late
                },
            }
            return "steps", json.dumps(line)
    return None


class Recorder:
    """Consumes driver events: each completed request is appended and flushed to requests.jsonl,
    each finished step's harness health (event-loop lag) to steps.jsonl."""

    def __init__(self, run_dir: Path, suffix: str = "") -> None:
        self.path = run_dir / f"requests{suffix}.jsonl"
        self.steps_path = run_dir / f"steps{suffix}.jsonl"
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.count = 0

    def __call__(self, event: Event) -> None:
        if (out := event_line(event)) is not None:
            self.write(*out)

    def write(self, stem: str, line: str) -> None:
        if stem == "requests":
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1
        else:
            with open(self.steps_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def close(self) -> None:
        self._file.close()


def read_step_health(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of steps.jsonl (one per step and worker); a torn line is skipped."""
    out = []
    for path in sorted(run_dir.glob("steps*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def _merge_loop_lag(lines: list[dict[str, Any]]) -> dict[str, float | None]:
    """Across workers, the worst of each statistic: a step is as healthy as its busiest process."""
    dists = [ln["loop_lag_ms"] for ln in lines if (ln.get("loop_lag_ms") or {}).get("max") is not None]
    if not dists:
        return {**distribution([]), "late": None}
    merged = {k: max(d[k] for d in dists) for k in dists[0] if k != "late"}
    lates = [d.get("late") for d in dists]  # None in steps.jsonl written before it was counted
    merged["late"] = None if None in lates else max(lates)
    return merged


def read_records(path: Path, warn: Any = None) -> Iterator[RequestRecord]:
    """Records of a requests.jsonl; a torn or corrupt line (a killed run) is skipped with a warning."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield record_from_json(line)
            except (ValueError, TypeError):
                if warn is not None:
                    warn(f"{path}: line {n}: skipped an incomplete record")


def read_run_records(run_dir: Path, warn: Any = None) -> Iterator[RequestRecord]:
    """Every record of a run: requests.jsonl, and the per-worker files a killed multi-worker run left."""
    parts = sorted(run_dir.glob("requests.w*.jsonl"))
    for path in [run_dir / "requests.jsonl", *parts]:
        if path.exists():
            yield from read_records(path, warn)


def _environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv0": Path(sys.argv[0]).name,
    }


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
) -> dict[str, Any]:
    """summary.json's content from the accumulated steps of a run (pure: no I/O of its own)."""
    health = list(step_health)
    ran = {h.get("step") for h in health} | set(accumulators)
    steps, verdicts, skipped = [], [], []
    for plan in _planned_steps(scenario, health):
        if plan.index not in ran:
            if not partial:
                skipped.append(plan.index)  # the sweep stopped early (load.stop, or the endpoint down)
            continue  # an interrupted or stopped run never reached this step
        acc = accumulators.get(plan.index) or StepAccumulator(scenario.slo.per_request)
        s = acc.summary(index=plan.index, mode=plan.mode, value=plan.value)
        s["loop_lag_ms"] = _merge_loop_lag([h for h in health if h.get("step") == plan.index])
        s["warnings"] = harness_warnings(s)
        steps.append(s)
        verdicts += evaluate_slos(s, scenario.slo)
    return {
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
        "tokenizer": tokenizer_info(
            scenario.target.tokenizer,
            scenario.target.model,
            mock_words=scenario.target.base_url == "mock" and scenario.target.mock.tokenizer is None,
        ),
        "environment": _environment(),
        "steps": steps,
        "skipped_steps": skipped,
        "stopped_early": _stop_reason(steps[-1]) if skipped and steps else None,
        "slo": {"passed": all(v["ok"] for v in verdicts), "verdicts": verdicts},
        "search": search_result(steps, scenario, probe),
    }


def _planned_steps(scenario: Scenario, health: list[dict[str, Any]]) -> list[StepPlan]:
    """The steps of the scenario; limit discovery chooses its steps as it goes: steps.jsonl has them."""
    if scenario.load.search is None:
        return plan_steps(scenario.load)
    seen = {h["step"]: h["value"] for h in health if "value" in h}
    return [step_plan(scenario.load, i, seen[i]) for i in sorted(seen)]


def _csv(summary: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    head = [
        "index",
        "mode",
        "value",
        "duration_s",
        "sent",
        "ok",
        "failed",
        "error_rate",
        "request_throughput",
        "output_token_throughput",
        "total_token_throughput",
        "goodput",
    ]
    head += [f"{d}_{s}" for d in _CSV_DISTS for s in _CSV_STATS]
    w.writerow(head)
    for s in summary["steps"]:
        row = [
            s["index"],
            s["mode"],
            s["value"],
            s["duration_s"],
            s["requests"]["sent"],
            s["requests"]["ok"],
            s["requests"]["failed"],
            s["error_rate"],
            s["request_throughput"],
            s["output_token_throughput"],
            s["total_token_throughput"],
            s["goodput"],
        ]
        row += [s[d][st] for d in _CSV_DISTS for st in _CSV_STATS]
        w.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(run_dir / "summary.csv", _csv(summary))


def write_scenario(run_dir: Path, scenario: Scenario) -> None:
    write_atomic(run_dir / "scenario.yaml", scenario_to_yaml(scenario))


@dataclass
class Run:
    """A run directory read back: its scenario, its summary, and the per-step data plots need."""

    run_dir: Path
    scenario: Scenario
    summary: dict[str, Any]
    steps: dict[int, StepAccumulator]
    health: list[dict[str, Any]]
    probe: ProbeSeries | None = None  # limit discovery: every request's admission and advertised remaining


def analyze(
    run_dir: Path, scenario: Scenario, *, started_at: str, partial: bool, base_url: str, warn: Any = None
) -> Run:
    """Everything a report needs, from the records on disk (the source of truth), in one pass."""
    health = read_step_health(run_dir)
    probe = ProbeSeries(scenario.workload.max_tokens) if scenario.load.search is not None else None
    records = read_run_records(run_dir, warn)
    steps = accumulate(scenario, probe.tee(records) if probe is not None else records)
    summary = build_summary(
        scenario, steps, started_at=started_at, partial=partial, base_url=base_url, step_health=health, probe=probe
    )
    return Run(run_dir, scenario, summary, steps, health, probe)


def load_run(run_dir: Path, warn: Any = None) -> Run:
    """Recompute a run from requests.jsonl and the resolved scenario.yaml alone."""
    if not (run_dir / "scenario.yaml").is_file() or not (
        (run_dir / "requests.jsonl").is_file() or any(run_dir.glob("requests.w*.jsonl"))
    ):
        raise ScenarioError(f"{run_dir}: not a run directory (scenario.yaml or requests.jsonl missing)")
    scenario = load_scenario(run_dir / "scenario.yaml", expand=False)  # its secrets stay [redacted] or ${VAR}
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):  # no summary (deleted, or a killed run): rebuild from scratch
        old = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    started = old.get("started_at") or datetime.fromtimestamp(
        (run_dir / "scenario.yaml").stat().st_mtime, tz=timezone.utc
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    base_url = (old.get("target") or {}).get("base_url", scenario.target.base_url)
    if "partial" in old:
        partial = bool(old["partial"])
    else:  # no summary to say so (a killed run): partial unless every step was seen to finish
        finished = {h.get("step") for h in read_step_health(run_dir)}
        partial = any(p.index not in finished for p in plan_steps(scenario.load))
    run = analyze(run_dir, scenario, started_at=started, partial=partial, base_url=base_url, warn=warn)
    if route := (old.get("tokenizer") or {}).get("route"):  # which tokenize route answered: known at run time only
        run.summary["tokenizer"]["route"] = route
    return run
