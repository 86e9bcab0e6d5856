"""The answer first: one short paragraph on top of the report and in the terminal, from summary.json.

Pure: a summary in, a few sentences out. It says the capacity (a capacity search's, or else the
highest step meeting every SLO), the knee (the lowest load whose throughput reached 95% of the best
step's: more load stopped buying throughput there), the binding SLO, the steps the client itself
limited (harness warnings), and what the server's metrics said at the first step that failed
(requests waiting, KV cache full, preemptions).
"""

from __future__ import annotations

from typing import Any

from loadtest.analysis.checks import evaluate_slos
from loadtest.analysis.serverview import sampled
from loadtest.config.scenario import SLO

__all__ = ["KNEE_SHARE", "headline", "knee"]

KNEE_SHARE = 0.95  # the knee: the first load whose throughput reaches this share of the best step's


def _unit(step: dict[str, Any]) -> str:
    return "req/s" if step["mode"] == "rate" else "concurrent"


def knee(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The lowest-load step whose request throughput is within KNEE_SHARE of the best (None: one step or none)."""
    ran = sorted((s for s in steps if s.get("request_throughput")), key=lambda s: s["value"])
    if len(ran) < 2:
        return None
    best = max(s["request_throughput"] for s in ran)
    return next(s for s in ran if s["request_throughput"] >= KNEE_SHARE * best)


def _answer(summary: dict[str, Any], slo: SLO) -> str:
    cap = summary.get("capacity")
    if cap:
        if cap["value"] is None:
            return f"No capacity: even the lowest load tried ({cap['interval'][1]:g} {cap['unit']}) broke an SLO."
        lo, hi = cap["interval"]
        top = f"{hi:g}" if hi is not None else "open: max reached"
        binding = f"; {cap['binding_slo']} binds" if cap.get("binding_slo") else ""
        return f"Capacity {cap['value']:g} {cap['unit']} (interval {lo:g}-{top}{binding})."
    steps = summary["steps"]
    held = [s for s in steps if all(v["ok"] for v in evaluate_slos(s, slo))]
    if not steps:
        return "No step ran."
    if not held:
        return "No step met every SLO."
    best = max(held, key=lambda s: s["value"])
    done = best["request_throughput"]
    return f"Best step meeting every SLO: {best['value']:g} {_unit(best)} ({done:.3g} req/s done)."


def _binding(summary: dict[str, Any]) -> str | None:
    failed = [v for v in summary["slo"]["verdicts"] if not v["ok"]]
    if summary.get("capacity") or not failed:
        return None
    v = min(failed, key=lambda v: v["value_of_step"])
    measured = "none" if v["measured"] is None else f"{v['measured']:.4g}"
    return f"First to break: {v['slo']} {v['stat']} {measured} > {v['bound']:g} at {v['value_of_step']:g}."


def _server(summary: dict[str, Any], slo: SLO) -> str | None:
    """What the server's metrics said at the first step that failed (or the heaviest)."""
    steps = [s for s in summary["steps"] if sampled(s.get("server"))]  # too few scrapes: no view to report
    if not steps:
        return None
    failing = [s for s in steps if not all(v["ok"] for v in evaluate_slos(s, slo)) or s.get("saturation")]
    s = min(failing, key=lambda s: s["value"]) if failing else max(steps, key=lambda s: s["value"])
    srv, bits = s["server"], []
    if (w := (srv.get("waiting") or {}).get("max")) is not None:
        bits.append(f"up to {w:.0f} requests waiting" if w > 0 else "no queue")
    if (r := (srv.get("running") or {}).get("max")) is not None:
        bits.append(f"{r:.0f} running")
    if (kv := (srv.get("kv_cache_usage") or {}).get("max")) is not None:
        bits.append(f"KV cache {'full' if kv >= 0.99 else f'at most {kv:.0%}'}")
    if srv.get("preemptions"):
        bits.append(f"{srv['preemptions']:.0f} preemptions")
    return f"Server ({srv.get('engine') or 'metrics'}) at {s['value']:g}: {', '.join(bits)}." if bits else None


def headline(summary: dict[str, Any], slo: SLO) -> str:
    """One short paragraph: the answer, the knee, what binds, the client's own limits, the server's view."""
    parts = [_answer(summary, slo)]
    if (k := knee(summary["steps"])) is not None:
        parts.append(
            f"Knee at {k['value']:g} {_unit(k)}: {k['request_throughput']:.3g} req/s, "
            f"{k['output_token_throughput']:.4g} output tok/s; more load bought under "
            f"{100 - 100 * KNEE_SHARE:.0f}% more."
        )
    if (b := _binding(summary)) is not None:
        parts.append(b)
    limited = [f"{s['value']:g}" for s in summary["steps"] if s.get("warnings")]
    if limited:
        parts.append(f"The client itself limited {len(limited)} step(s) ({', '.join(limited)}): see the warnings.")
    if (srv := _server(summary, slo)) is not None:
        parts.append(srv)
    return " ".join(parts)
