"""Human-facing output: the compact step table printed at the end of a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.analysis.serverview import MIN_SCRAPES, sampled
from loadtest.output.breakdowns import cell, print_breakdowns

__all__ = ["EMBEDDINGS_NOTE", "answer_metrics", "embeddings_only", "print_step_table", "step_line"]

# said where an embeddings run's table would show TTFT and the other token timings
EMBEDDINGS_NOTE = "embeddings: no TTFT, TTFA, ITL or TPOT (one response body, no tokens generated); latency is E2E"


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
        shown |= {k for k in ("images", "tools") if s.get(k)}  # the APIs beyond chat (analysis/apistats.py)
    return shown


def embeddings_only(steps: list[dict[str, Any]]) -> bool:
    """Every step measured embeddings: tables show inputs/s and E2E instead of token timings."""
    return bool(steps) and all(s.get("embeddings") for s in steps)


def _answer_columns(steps: list[dict[str, Any]]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    shown = answer_metrics(steps)
    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = []
    if "ttfa_ms" in shown:
        cols += [("TTFA p50", lambda s: cell(s["ttfa_ms"]["p50"])), ("TTFA p99", lambda s: cell(s["ttfa_ms"]["p99"]))]
    if "reasoning_tokens" in shown:
        cols.append(("reasoning tok", lambda s: cell(s["reasoning_tokens"]["mean"])))
    if "tokens_per_chunk" in shown:
        cols.append(("tok/chunk", lambda s: cell(s["tokens_per_chunk"]["mean"], 2)))
    if "images" in shown:
        cols.append(("img/req", lambda s: cell((s.get("images") or {}).get("per_request"))))
    if "tools" in shown:
        cols.append(("tool called", lambda s: "{called}/{requests}".format(**s["tools"]) if s.get("tools") else "-"))
    return cols


def _server_columns(steps: list[dict[str, Any]]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """The server's own view of each step, when it was scraped: requests waiting/running (time
    means over the step) and the KV cache's fullest moment; none when no step has them, and "-" for
    a step with fewer than ``MIN_SCRAPES`` scrapes inside it (a short step: the note says so)."""

    def gauge(s: dict[str, Any], key: str, stat: str) -> float | None:
        return ((s.get("server") or {}).get(key) or {}).get(stat) if sampled(s.get("server")) else None

    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = []
    if any(gauge(s, "waiting", "mean") is not None or gauge(s, "running", "mean") is not None for s in steps):
        cols.append(
            ("srv wait/run", lambda s: f"{cell(gauge(s, 'waiting', 'mean'), 1)}/{cell(gauge(s, 'running', 'mean'), 1)}")
        )
    if any(gauge(s, "kv_cache_usage", "max") is not None for s in steps):

        def kv_max(s: dict[str, Any]) -> str:
            v = gauge(s, "kv_cache_usage", "max")
            return "-" if v is None else cell(100 * v, 0) + "%"

        cols.append(("KV max", kv_max))
    return cols


def step_line(s: dict[str, Any]) -> str:
    """One line per finished step (CI logs, non-interactive output)."""
    r = s["requests"]
    if s.get("embeddings"):
        return (
            f"step {s['index']} {s['mode']}={s['value']}: {r['ok']}/{r['sent']} ok, "
            f"{cell(s['request_throughput'], 2)} req/s, {cell(s['inputs_per_s'])} inputs/s, "
            f"{cell(s['input_tokens_per_s'])} input tok/s, E2E p50 {cell(s['e2e_ms']['p50'])} ms"
        )
    return (
        f"step {s['index']} {s['mode']}={s['value']}: {r['ok']}/{r['sent']} ok, "
        f"{cell(s['request_throughput'], 2)} req/s, {cell(s['output_token_throughput'])} tok/s, "
        f"TTFT p50 {cell(s['ttft_ms']['p50'])} ms"
    ) + (f", TTFA p50 {cell(s['ttfa_ms']['p50'])} ms" if "ttfa_ms" in answer_metrics([s]) else "")


def _embeddings_table(summary: dict[str, Any], console: Console) -> None:
    t = Table(title=f"{summary['scenario']}" + (" (partial)" if summary["partial"] else ""), title_justify="left")
    cols = ("step", "load", "ok/sent", "req/s", "inputs/s", "in tok/s", "batch", "E2E p50", "E2E p99", "errors")
    for col in cols:
        t.add_column(col, justify="right" if col not in ("load", "errors") else "left")
    for s in summary["steps"]:
        unit = "c" if s["mode"] == "concurrency" else " req/s"
        t.add_row(
            str(s["index"]),
            f"{s['value']}{unit}",
            f"{s['requests']['ok']}/{s['requests']['sent']}",
            cell(s["request_throughput"], 2),
            cell(s["inputs_per_s"]),
            cell(s["input_tokens_per_s"]),
            cell(s["embeddings"]["batch_size"]["mean"]),
            cell(s["e2e_ms"]["p50"]),
            cell(s["e2e_ms"]["p99"]),
            ", ".join(f"{k}:{v}" for k, v in sorted(s["errors"].items())) or "-",
        )
    console.print(t)
    console.print(f"latencies in ms; {EMBEDDINGS_NOTE}", style="dim")


def print_step_table(summary: dict[str, Any], console: Console) -> None:
    if embeddings_only(summary["steps"]):
        _embeddings_table(summary, console)
        _print_notes(summary, console)
        return
    t = Table(title=f"{summary['scenario']}" + (" (partial)" if summary["partial"] else ""), title_justify="left")
    extra = _answer_columns(summary["steps"])  # TTFA, reasoning tokens, tokens per chunk: when they differ
    extra += _server_columns(summary["steps"])  # the server's queue and KV cache: when scraped
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
            cell(s["request_throughput"], 2),
            cell(s["output_token_throughput"]),
            cell(s["ttft_ms"]["p50"]),
            cell(s["ttft_ms"]["p99"]),
            cell(s["itl_ms"]["p50"], 2),
            cell(s["tpot_ms"]["p50"], 2),
            cell(s["e2e_ms"]["p50"]),
            cell(s["e2e_ms"]["p99"]),
            *(show(s) for _, show in extra),
            errors,
        )
    console.print(t)
    console.print("latencies in ms", style="dim")
    _print_notes(summary, console)


def _print_notes(summary: dict[str, Any], console: Console) -> None:
    """What follows a step table: an early stop, limit discovery, warnings, failed SLOs."""
    if summary.get("skipped_steps"):
        why = escape(summary.get("stopped_early") or "load.stop")
        console.print(f"[yellow]stopped early[/]: {why}; steps {summary['skipped_steps']} were skipped")
    if search := summary.get("search"):
        found = search["sustainable_rpm"] is not None or search.get("no_limit_found_up_to_rps") is not None
        verdict = search.get("verdict") or "no rate held, down to the lowest one tried"  # older summaries
        console.print(f"[{'bold' if found else 'red'}]limit discovery[/]: {escape(verdict)}", highlight=False)
        console.print(f"audit: {escape(search['audit'])}", highlight=False)
    short = [s["index"] for s in summary["steps"] if s.get("server") and not sampled(s["server"])]
    if short:
        console.print(
            f"server columns: '-' for steps {short}, with fewer than {MIN_SCRAPES} /metrics scrapes inside "
            "them (lower server_metrics.interval_s, or lengthen the steps)",
            style="dim",
            highlight=False,
        )
    print_breakdowns(summary, console)  # per turn of conversations, cold and warm prefix groups
    for s in summary["steps"]:
        for w in s.get("warnings", []):
            console.print(f"[yellow]warning[/]: step {s['index']} ({s['value']}): {w}", highlight=False)
    for v in summary["slo"]["verdicts"]:
        if not v["ok"]:
            console.print(
                f"[red]SLO failed[/]: step {v['step']} ({v['value_of_step']}): {v['slo']} {v['stat']} "
                f"= {cell(v['measured'], 2)}, bound {v['kind']} {v['bound']}"
            )
