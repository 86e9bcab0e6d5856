"""The report's opening paragraph (analysis/headline.py) on hand-built summaries: every number in it
is read off the summary by hand here."""

from __future__ import annotations

from typing import Any

from loadtest.analysis.headline import headline, knee
from loadtest.config.scenario import SLO


def step(i: int, load: float, rps: float, p95: float, **extra: Any) -> dict[str, Any]:
    return {"index": i, "mode": "rate", "value": load, "request_throughput": rps, "output_token_throughput": 64 * rps,
            "ttft_ms": {"p95": p95}, "warnings": [], **extra}  # fmt: skip


SLOS = SLO.model_validate({"ttft_ms": {"p95": 500}})
STEPS = [
    step(0, 2, 2.0, 60),
    step(1, 4, 4.0, 70),
    step(2, 8, 7.6, 300, warnings=["client bottleneck: ..."]),
    step(3, 16, 7.7, 2400, server={"engine": "vllm", "scrapes": 12, "waiting": {"max": 41}, "running": {"max": 8},
                                   "kv_cache_usage": {"max": 1.0}, "preemptions": 0}),
]  # fmt: skip


def verdicts(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"ok": s["ttft_ms"]["p95"] <= 500, "value_of_step": s["value"], "slo": "ttft_ms", "stat": "p95",
             "measured": s["ttft_ms"]["p95"], "bound": 500} for s in steps]  # fmt: skip


def test_sweep_headline_names_best_step_knee_binding_client_and_server() -> None:
    summary = {"steps": STEPS, "slo": {"verdicts": verdicts(STEPS)}, "capacity": None}
    text = headline(summary, SLOS)
    assert text.startswith("Best step meeting every SLO: 8 req/s (7.6 req/s done).")
    assert "Knee at 8 req/s" in text  # 7.6 >= 95% of the best 7.7; 4.0 is not
    assert "First to break: ttft_ms p95 2400 > 500 at 16." in text
    assert "The client itself limited 1 step(s) (8)" in text
    assert "Server (vllm) at 16: up to 41 requests waiting, 8 running, KV cache full." in text
    few = [*STEPS[:3], {**STEPS[3], "server": {**STEPS[3]["server"], "scrapes": 2}}]  # a short step: edges only
    assert "Server" not in headline({"steps": few, "slo": {"verdicts": verdicts(few)}, "capacity": None}, SLOS)


def test_capacity_headline_gives_value_interval_and_binding_slo() -> None:
    cap = {"value": 9.5, "unit": "req/s", "interval": [9.5, 10.4], "binding_slo": "ttft_ms.p95"}
    summary = {"steps": STEPS[:2], "slo": {"verdicts": verdicts(STEPS[:2])}, "capacity": cap}
    text = headline(summary, SLOS)
    assert text.startswith("Capacity 9.5 req/s (interval 9.5-10.4; ttft_ms.p95 binds).")
    assert knee(STEPS[:1]) is None
