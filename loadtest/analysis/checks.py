"""SLO verdicts: a step summary and the scenario's SLOs in, one verdict per bound out. Pure."""

from __future__ import annotations

from typing import Any

from loadtest.config.scenario import SLO, StepSLO

__all__ = [
    "CANNOT_CONNECT",
    "EXIT_HARNESS",
    "EXIT_OK",
    "EXIT_SLO",
    "LOOP_LAG_LATE_MIN",
    "LOOP_LAG_P99_MS",
    "SCHEDULE_LAG_P99_MS",
    "endpoint_unreachable",
    "evaluate_slos",
    "harness_warnings",
]

# Exit codes of `loadtest run` (and compare): all SLOs hold / an SLO failed or a metric regressed /
# the harness could not run (bad input, the endpoint unreachable for every request).
EXIT_OK, EXIT_SLO, EXIT_HARNESS = 0, 1, 2

LOOP_LAG_P99_MS = 5.0  # a 10 ms sleep woken this late means the client was busy when data was due
# ...and it must have happened more than once: in a short step (a few dozen samples) p99 is the
# maximum, and one scheduler hiccup of the machine is not a client that cannot keep up
LOOP_LAG_LATE_MIN = 2
SCHEDULE_LAG_P99_MS = 10.0  # an open-loop send this late means the client could not keep the rate

_LATENCY = ("ttft_ms", "ttfa_ms", "tpot_ms", "itl_ms", "e2e_ms")
# SLO field -> (summary key, "max" means value <= bound, "min" means value >= bound)
_SCALAR = {
    "error_rate": ("error_rate", "max"),
    "output_tokens_per_s": ("output_token_throughput", "min"),
    "requests_per_s": ("request_throughput", "min"),
    "goodput_ratio": ("goodput_ratio", "min"),
}


def _verdict(step: dict[str, Any], slo: str, stat: str, value: float | None, bound: float, kind: str) -> dict[str, Any]:
    ok = value is not None and (value <= bound if kind == "max" else value >= bound)
    return {
        "step": step["index"],
        "value_of_step": step["value"],
        "slo": slo,
        "stat": stat,
        "bound": bound,
        "kind": kind,
        "measured": value,
        "ok": ok,
    }


def evaluate_slos(step: dict[str, Any], slo: SLO) -> list[dict[str, Any]]:
    """Verdicts for one step summary (the SLOs of every step, then this step's own). A metric with no
    value (e.g. no successful request) fails."""
    own = slo.steps.get(step["index"])
    return _evaluate(step, slo) + (_evaluate(step, own) if own is not None else [])


def _evaluate(step: dict[str, Any], slo: StepSLO) -> list[dict[str, Any]]:
    verdicts = []
    for name in _LATENCY:
        bounds = getattr(slo, name)
        if bounds is None:
            continue
        for stat, bound in bounds.model_dump(exclude_none=True).items():
            verdicts.append(_verdict(step, name, stat, (step.get(name) or {}).get(stat), bound, "max"))
    for name, (key, kind) in _SCALAR.items():
        bound_model = getattr(slo, name)
        if bound_model is not None:
            verdicts.append(_verdict(step, name, kind, step.get(key), getattr(bound_model, kind), kind))
    return verdicts


# Error classes of a request that never reached the server: no connection, or no TLS session on it.
# A reset after the connection was accepted (``reset``) is an overloaded server, not an absent one.
CANNOT_CONNECT = frozenset({"connect", "tls"})


def endpoint_unreachable(step: dict[str, Any]) -> bool:
    """The step sent requests and not one of them could connect (or complete TLS)."""
    sent = step["requests"]["sent"]
    errors = step["errors"]
    return bool(sent) and sum(errors.get(k, 0) for k in CANNOT_CONNECT) == sent


def harness_warnings(step: dict[str, Any]) -> list[str]:
    """Why this step may describe the client rather than the server (empty when it looks healthy)."""
    out = []
    loop = step.get("loop_lag_ms") or {}
    late = loop.get("late")  # how many wake-ups were that late (None: a run from before it was counted)
    if (p99 := loop.get("p99")) is not None and p99 > LOOP_LAG_P99_MS and (late is None or late >= LOOP_LAG_LATE_MIN):
        out.append(
            f"client bottleneck: event-loop lag p99 {p99:.1f} ms > {LOOP_LAG_P99_MS:g} ms; the client, not the "
            "server, limited or skewed this step (fewer requests per process: --workers)"
        )
    lag = step.get("schedule_lag_ms") or {}
    if (p99 := lag.get("p99")) is not None and p99 > SCHEDULE_LAG_P99_MS:
        out.append(
            f"client bottleneck: schedule lag p99 {p99:.1f} ms > {SCHEDULE_LAG_P99_MS:g} ms; requests left later "
            "than the arrival process asked (raise load.max_concurrency or use --workers)"
        )
    if lost := (step.get("errors") or {}).get("worker_lost"):
        out.append(
            f"worker lost: a load-generating worker died with {lost} requests in flight; the rest of its "
            "share was never sent, so the step ran below its configured load"
        )
    return out
