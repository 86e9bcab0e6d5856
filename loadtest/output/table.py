"""Human-facing output: the compact step table printed at the end of a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["answer_metrics", "print_step_table", "step_line"]


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def answer_metrics(steps: list[dict[str, Any]]) -> set[str]:
    """Which of TTFA, reasoning tokens and tokens per chunk say something about these steps: TTFA
    when it differs from TTFT (reasoning before the answer), reasoning tokens when there were any,
    tokens per chunk when a chunk carried more (or fewer) than one token."""
    shown = set()
    for s in steps:
        if s.get("ttfa_ms") and s["ttfa_ms"] != s["ttft_ms"]:
            shown.add("ttfa_ms")
        if (s.get("reasoning_tokens") or {}).get("mean"):
            shown.add("reasoning_tokens")
        if (s.get("tokens_per_chunk") or {}).get("mean") not in (None, 1.0):
            shown.add("tokens_per_chunk")
    return shown


def _answer_columns(steps: list[dict[str, Any]]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    shown = answer_metrics(steps)
    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = []
    if "ttfa_ms" in shown:
        cols += [("TTFA p50", lambda s: _f(s["ttfa_ms"]["p50"])), ("TTFA p99", lambda s: _f(s["ttfa_ms"]["p99"]))]
    if "reasoning_tokens" in shown:
        cols.append(("reasoning tok", lambda s: _f(s["reasoning_tokens"]["mean"])))
    if "tokens_per_chunk" in shown:
        cols.append(("tok/chunk", lambda s: _f(s["tokens_per_chunk"]["mean"], 2)))
    return cols


def step_line(s: dict[str, Any]) -> str:
    """One line per finished step (CI logs, non-interactive output)."""
    r = s["requests"]
    return (
        f"step {s['index']} {s['mode']}={s['value']}: {r['ok']}/{r['sent']} ok, "
        f"{_f(s['request_throughput'], 2)} req/s, {_f(s['output_token_throughput'])} tok/s, "
        f"TTFT p50 {_f(s['ttft_ms']['p50'])} ms"
    ) + (f", TTFA p50 {_f(s['ttfa_ms']['p50'])} ms" if "ttfa_ms" in answer_metrics([s]) else "")


def print_step_table(summary: dict[str, Any], console: Console) -> None:
    t = Table(title=f"{summary['scenario']}" + (" (partial)" if summary["partial"] else ""), title_justify="left")
    extra = _answer_columns(summary["steps"])  # TTFA, reasoning tokens, tokens per chunk: when they differ
    for col in (
        "step",
        "load",
        "ok/sent",
        "req/s",
        "out tok/s",
        "TTFT p50",
        "TTFT p99",
        "ITL p50",
        "TPOT p50",
        "E2E p50",
        "E2E p99",
        *(title for title, _ in extra),
        "errors",
    ):
        t.add_column(col, justify="right" if col not in ("load", "errors") else "left")
    for s in summary["steps"]:
        unit = {"concurrency": "c", "trace": "x trace"}.get(s["mode"], " req/s")
        errors = ", ".join(f"{k}:{v}" for k, v in sorted(s["errors"].items())) or "-"
        t.add_row(
            str(s["index"]),
            f"{s['value']}{unit}",
            f"{s['requests']['ok']}/{s['requests']['sent']}",
            _f(s["request_throughput"], 2),
            _f(s["output_token_throughput"]),
            _f(s["ttft_ms"]["p50"]),
            _f(s["ttft_ms"]["p99"]),
            _f(s["itl_ms"]["p50"], 2),
            _f(s["tpot_ms"]["p50"], 2),
            _f(s["e2e_ms"]["p50"]),
            _f(s["e2e_ms"]["p99"]),
            *(cell(s) for _, cell in extra),
            errors,
        )
    console.print(t)
    console.print("latencies in ms", style="dim")
    if summary.get("skipped_steps"):
        why = escape(summary.get("stopped_early") or "load.stop")
        console.print(f"[yellow]stopped early[/]: {why}; steps {summary['skipped_steps']} were skipped")
    if search := summary.get("search"):
        found = search["sustainable_rpm"] is not None or search.get("no_limit_found_up_to_rps") is not None
        verdict = search.get("verdict") or "no rate held, down to the lowest one tried"  # older summaries
        console.print(f"[{'bold' if found else 'red'}]limit discovery[/]: {escape(verdict)}", highlight=False)
        console.print(f"audit: {escape(search['audit'])}", highlight=False)
    for s in summary["steps"]:
        if g := s.get("prefix_groups"):
            console.print(f"step {s['index']}: {_cache_line(g)}", highlight=False)
    for s in summary["steps"]:
        for w in s.get("warnings", []):
            console.print(f"[yellow]warning[/]: step {s['index']} ({s['value']}): {w}", highlight=False)
    for v in summary["slo"]["verdicts"]:
        if not v["ok"]:
            console.print(
                f"[red]SLO failed[/]: step {v['step']} ({v['value_of_step']}): {v['slo']} {v['stat']} "
                f"= {_f(v['measured'], 2)}, bound {v['kind']} {v['bound']}"
            )


def _cache_line(g: dict[str, Any]) -> str:
    """Shared-prefix groups in one line: TTFT p50 of cold (first of a group) and warm requests."""

    def part(name: str) -> str:
        p = g[name]
        if not p["requests"]:
            return f"{name} none"
        share = "" if p["cached_share"] is None else f", {100 * p['cached_share']:.0f}% cached"
        return f"{name} {_f(p['ttft_ms']['p50'])} ms ({p['requests']}{share})"

    return f"{g['groups']} prefix groups, TTFT p50 {part('cold')}, {part('warm')}"
