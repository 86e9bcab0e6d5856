"""report.html: one self-contained page (no network, images inline) for one run or a comparison."""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from loadtest import __version__
from loadtest.analysis.summary import Run, pick
from loadtest.config.loading import scenario_to_yaml
from loadtest.output.plots import Series, render_plots
from loadtest.output.rundir import write_atomic
from loadtest.output.sloplot import has_capacity, slo_vs_load
from loadtest.output.table import EMBEDDINGS_NOTE, answer_metrics, embeddings_only

__all__ = [
    "COLUMNS",
    "SERVER_COLUMNS",
    "Column",
    "columns_for",
    "fmt",
    "render_page",
    "write_report",
]


@dataclass(frozen=True)
class Column:
    title: str
    key: str  # dotted path into a step summary
    digits: int = 2
    left: bool = False

    def get(self, step: dict[str, Any]) -> Any:
        return pick(step, self.key)


COLUMNS = [
    Column("step", "index", 0),
    Column("mode", "mode", 0, left=True),
    Column("load", "value", 2),
    Column("duration s", "duration_s", 2),
    Column("sent", "requests.sent", 0),
    Column("ok", "requests.ok", 0),
    Column("failed", "requests.failed", 0),
    Column("error rate", "error_rate", 4),
    Column("req/s", "request_throughput", 2),
    Column("out tok/s", "output_token_throughput", 1),
    Column("total tok/s", "total_token_throughput", 1),
    Column("goodput req/s", "goodput", 2),
    Column("TTFT p50", "ttft_ms.p50", 2),
    Column("TTFT p90", "ttft_ms.p90", 2),
    Column("TTFT p99", "ttft_ms.p99", 2),
    Column("TTFA p50", "ttfa_ms.p50", 2),
    Column("TTFA p90", "ttfa_ms.p90", 2),
    Column("TTFA p99", "ttfa_ms.p99", 2),
    Column("ITL p50", "itl_ms.p50", 3),
    Column("ITL p99", "itl_ms.p99", 3),
    Column("TPOT p50", "tpot_ms.p50", 3),
    Column("TPOT p99", "tpot_ms.p99", 3),
    Column("E2E p50", "e2e_ms.p50", 1),
    Column("E2E p99", "e2e_ms.p99", 1),
    Column("out tokens mean", "output_tokens.mean", 1),
    Column("reasoning tokens mean", "reasoning_tokens.mean", 1),
    Column("tokens/chunk mean", "tokens_per_chunk.mean", 2),
    Column("inputs/s", "inputs_per_s", 1),  # embeddings
    Column("input tok/s", "input_tokens_per_s", 1),
    Column("batch mean", "embeddings.batch_size.mean", 1),
    Column("images/req", "images.per_request", 1),
    Column("image bytes/s", "images.bytes_per_s", 0),
    Column("tool called", "tools.called", 0),
    Column("tool calls", "tools.calls", 0),
    Column("in flight max", "in_flight.max", 0),
    Column("loop lag p99", "loop_lag_ms.p99", 2),
]
# the server's own view of each step (README "Server metrics"), where its metrics were read and have them
SERVER_COLUMNS = [
    Column("server running mean", "server.running.mean", 2),
    Column("server waiting mean", "server.waiting.mean", 2),
    Column("server waiting max", "server.waiting.max", 0),
    Column("server KV max", "server.kv_cache_usage.max", 3),
    Column("server TTFT mean s", "server.ttft_s.mean", 3),
]


_ANSWER_METRICS = ("ttfa_ms", "reasoning_tokens", "tokens_per_chunk", "images", "tools")
_EMBEDDINGS_KEYS = ("inputs_per_s", "input_tokens_per_s", "embeddings")
_TOKEN_TIMINGS = ("ttft_ms", "ttfa_ms", "itl_ms", "tpot_ms", "output_token_throughput", "output_tokens")


def columns_for(summaries: list[dict[str, Any]]) -> list[Column]:
    """The columns of the step tables: TTFA, reasoning tokens, tokens per chunk, images and tool calls
    only where one of the runs' steps has something to say in them (``report.answer_metrics``);
    embeddings runs get inputs/s instead of the token timings they do not have; the server's columns
    where its metrics have them."""
    steps = [s for summary in summaries for s in summary["steps"]]
    shown = answer_metrics(steps)
    only = embeddings_only(steps)
    if any(s.get("embeddings") for s in steps):
        shown |= set(_EMBEDDINGS_KEYS)
    hidden = set(_TOKEN_TIMINGS) if only else set()

    def keep(c: Column) -> bool:
        head = c.key.split(".")[0]
        if head in hidden or (head in _EMBEDDINGS_KEYS and head not in shown):
            return False
        return head not in _ANSWER_METRICS or head in shown

    return [c for c in COLUMNS if keep(c)] + [c for c in SERVER_COLUMNS if any(c.get(s) is not None for s in steps)]


_CAPTIONS = {
    "throughput": ("Throughput vs load", "Successful requests/s and output tokens/s of each step."),
    "latency": ("Latency vs load", "TTFT, TPOT and end-to-end latency at p50 (solid), p95 (dashed), p99 (dotted)."),
    "capacity": (
        "Capacity curve",
        "Output tokens/s against per-request latency, one point per step (labels: load): "
        "past the knee, more load costs latency without buying throughput.",
    ),
    "capacity_slo": (
        "Capacity under SLO",
        "Goodput and each bounded SLO metric against load, one point per step (labels: its value); the "
        "SLO bound in red, the capacity found as a dashed line, its interval shaded.",
    ),
    "ttft_cdf": ("TTFT distribution", "Cumulative distribution of time to first token, per step."),
    "itl_cdf": ("ITL distribution", "Cumulative distribution of inter-token gaps, per step."),
    "e2e_cdf": (
        "E2E latency distribution",
        "Cumulative distribution of end-to-end latency, per step (no answer streamed tokens: no inter-token gaps).",
    ),
    "timeline": (
        "Timeline",
        "Requests in flight, completions/s and errors/s over the run; when the server's metrics were "
        "scraped, under them the requests it was running (solid) and holding waiting (dashed), and its KV "
        "cache usage (dotted, right axis), as it reported them.",
    ),
    "ratelimit": (
        "Rate limits",
        "429 answers over time, the remaining requests and tokens the server advertised (the bucket "
        "draining), and how many attempts requests took (retries). In limit discovery, also the requests "
        "admitted per second: after the first 429 (dashed) the steady state, whose windows (shaded) "
        "give the sustainable rate (dotted).",
    ),
}


# embeddings runs: no tokens generated, so the plots show inputs/s and E2E latency
_EMBEDDINGS_CAPTIONS = {
    "throughput": ("Throughput vs load", "Successful requests/s and embeddings inputs/s of each step."),
    "latency": (
        "Latency vs load",
        "End-to-end latency (one response body) at p50 (solid), p95 (dashed), p99 (dotted).",
    ),
    "capacity": (
        "Capacity curve",
        "Inputs/s against E2E latency p50, one point per step (labels: load): "
        "past the knee, more load costs latency without buying throughput.",
    ),
}


def fmt(value: Any, digits: int) -> str:
    """How a number shows in the page: the value of summary.json, rounded for the eye."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}" if math.isfinite(value) else str(value)


class _TemplateCache(jinja2.FileSystemBytecodeCache):
    """Jinja's compiled template kept between processes (keyed by the template's checksum and the
    Python version): compiling report.html.j2 costs about 0.1 s of CPU a report. Not cached when
    the cache cannot be written: the page is drawn all the same."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def _template_cache() -> jinja2.BytecodeCache | None:
    try:
        return _TemplateCache()  # a private directory of the user's in the system's temp directory
    except (OSError, RuntimeError):  # no safe temp directory: compile each time
        return None


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("loadtest", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        bytecode_cache=_template_cache(),
    )
    env.globals.update(fmt=fmt, json=json.dumps)
    return env


def write_report(
    runs: list[Run], out_dir: Path, labels: list[str] | None = None, progress: Callable[[str], None] | None = None
) -> Path:
    """Render plots/*.png and report.html into ``out_dir``; returns the report's path."""
    labels = labels or [r.run_dir.name if len(runs) > 1 else r.scenario.name for r in runs]
    series = [Series(label, run) for label, run in zip(labels, runs, strict=True)]
    pngs = render_plots(series)
    if has_capacity(series):  # a capacity search: its picture first
        pngs = {"capacity_slo": slo_vs_load(series).png(), **pngs}
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        (plots_dir / f"{name}.png").write_bytes(png)
    page = render_page(runs, labels, pngs)
    path = out_dir / "report.html"
    write_atomic(path, page)
    if progress is not None:
        progress(str(path))
    return path


def render_page(runs: list[Run], labels: list[str], pngs: dict[str, bytes]) -> str:
    """report.html's text: the runs' tables (labelled ``labels``) and the plots ``pngs`` inline."""
    embeddings = all(embeddings_only(run.summary["steps"]) for run in runs)
    captions = {**_CAPTIONS, **_EMBEDDINGS_CAPTIONS} if embeddings else _CAPTIONS
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=" vs ".join(labels) if len(runs) > 1 else f"loadtest report: {labels[0]}",
            tool_version=__version__,
            columns=columns_for([run.summary for run in runs]),
            notes=[EMBEDDINGS_NOTE] if any(embeddings_only(run.summary["steps"]) for run in runs) else [],
            runs=[
                {
                    "label": label,
                    "summary": run.summary,
                    "scenario_yaml": scenario_to_yaml(run.scenario),
                    "run_dir": str(run.run_dir),
                }
                for label, run in zip(labels, runs, strict=True)
            ],
            plots=[
                {"name": n, "title": captions[n][0], "caption": captions[n][1], "b64": base64.b64encode(png).decode()}
                for n, png in pngs.items()
            ],
        )
    )
