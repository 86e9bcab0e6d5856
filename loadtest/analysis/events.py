"""What the driver tells its listeners (the recorder, live progress, the planner): plain data, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass

from loadtest.analysis.checks import LOOP_LAG_P99_MS
from loadtest.analysis.records import RequestRecord, record_to_json
from loadtest.analysis.stats import distribution
from loadtest.config.steps import StepPlan

__all__ = ["Event", "RequestDone", "StepFinished", "StepStarted", "event_line"]


@dataclass(frozen=True)
class StepStarted:
    step: StepPlan
    t_ns: int


@dataclass(frozen=True)
class RequestDone:
    record: RequestRecord


@dataclass(frozen=True)
class StepFinished:
    step: StepPlan
    t_ns: int
    started_ns: int = 0
    loop_lag_ms: tuple[float, ...] = ()  # how late the event loop woke a 10 ms sleep, sampled through the step
    worker: int = 0
    saturation: str | None = None  # capacity search: why the driver ended this open-loop step early


Event = StepStarted | RequestDone | StepFinished


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
            if event.saturation is not None:
                line["saturation"] = event.saturation
            return "steps", json.dumps(line)
    return None
