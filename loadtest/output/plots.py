"""The pictures a sweep is read by, as PNG bytes. One or several runs per plot (a comparison).

Each plot is a ``Chart`` (output/chart.py): data first, drawn to PNG by ``render_plots``.
Runs whose answers streamed no tokens (embeddings; answers not streamed) have no inter-token gaps,
and embeddings no first token or output tokens: they get an E2E latency distribution instead of the
empty ones, latency panels only for what was measured, and embeddings plot inputs/s where tokens/s
would be zero (``plots_for``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loadtest.analysis.summary import Run, pick
from loadtest.output.chart import Bars, Chart, Mark, Panel
from loadtest.output.chart import color as _color
from loadtest.output.table import embeddings_only

__all__ = [
    "PLOTS",
    "Series",
    "capacity",
    "e2e_cdf",
    "embeddings_runs",
    "has_ratelimit_data",
    "has_server_data",
    "itl_cdf",
    "latency",
    "plots_for",
    "ratelimit",
    "render_plots",
    "throughput",
    "timeline",
    "ttft_cdf",
    "value_notes",
]

_PCTS = (("p50", "-"), ("p95", "--"), ("p99", ":"))
_LEVELS = np.linspace(0.0, 1.0, 401)


@dataclass(frozen=True)
class Series:
    """One run in a plot, under the label its legend entries carry."""

    label: str
    run: Run


def _load_axis(ax: Panel, series: list[Series]) -> None:
    modes = {s["mode"] for x in series for s in x.run.summary["steps"]}
    ax.xlabel = "concurrency" if modes == {"concurrency"} else "rate (req/s)" if modes == {"rate"} else "load"
    values = [s["value"] for x in series for s in x.run.summary["steps"] if s["value"]]
    if values and max(values) / min(values) >= 8:
        ax.xlog = 2


def _steps(x: Series) -> list[dict]:
    return [s for s in x.run.summary["steps"] if s["requests"]["ok"]]


def value_notes(values: list[float]) -> list[str]:
    """Each point's value written beside it: read exactly, not off the axis."""
    return [f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" for v in values]


def embeddings_runs(series: list[Series]) -> bool:
    """Every run measured embeddings only: no tokens generated, inputs/s is the work done."""
    return all(embeddings_only(x.run.summary["steps"]) for x in series)


def _measured(series: list[Series], metric: str) -> bool:
    """Some step of some run has ``metric`` (``itl_ms``: some answer streamed two tokens or more)."""
    return any(pick(s, f"{metric}.p50") is not None for x in series for s in x.run.summary["steps"])


def _work(series: list[Series]) -> tuple[str, str]:
    """What a step's work is measured in: output tokens/s, or inputs/s for embeddings (no tokens out)."""
    return ("inputs_per_s", "inputs/s") if embeddings_runs(series) else ("output_token_throughput", "output tokens/s")


def throughput(series: list[Series]) -> Chart:
    chart = Chart(990, 360, 1, 2)
    ax1, ax2 = chart.panels
    work, name = _work(series)
    for i, x in enumerate(series):
        steps = _steps(x)
        v = [s["value"] for s in steps]
        for ax, key in ((ax1, "request_throughput"), (ax2, work)):
            ys = [s[key] for s in steps]
            ax.plot(v, ys, _color(i), x.label, marker=True, notes=value_notes(ys))
    for ax, title in ((ax1, "requests/s"), (ax2, name)):
        _load_axis(ax, series)
        ax.title, ax.ymin, ax.legend = title, 0.0, "upper left"
    return chart


def latency(series: list[Series]) -> Chart:
    """TTFT, TPOT and E2E percentiles against the load; only the panels some step measured (E2E always)."""
    metrics = [m for m in ("ttft_ms", "tpot_ms") if _measured(series, m)] + ["e2e_ms"]
    chart = Chart(max(420 * len(metrics), 630), 360, 1, len(metrics))
    for ax, metric in zip(chart.panels, metrics, strict=True):
        for i, x in enumerate(series):
            steps = [s for s in _steps(x) if s[metric]["p50"] is not None]
            for pct, style in _PCTS:
                ys = [s[metric][pct] for s in steps]
                notes = value_notes(ys) if pct == "p50" else None
                ax.plot(
                    [s["value"] for s in steps], ys, _color(i), f"{x.label} {pct}", dash=style, marker=True, notes=notes
                )
        _load_axis(ax, series)
        ax.title = metric.replace("_ms", " (ms)").upper().replace("(MS)", "(ms)")
        ax.ymin, ax.legend = 0.0, "upper left"
    return chart


def capacity(series: list[Series]) -> Chart:
    """Output tokens/s against per-request latency, one point per step: the knee is where adding
    load stops buying throughput and starts costing latency."""
    chart = Chart(630, 450)
    (ax,) = chart.panels
    streamed = all(x.run.scenario.workload.stream for x in series) and _measured(series, "tpot_ms")
    key, name = ("tpot_ms", "TPOT p50 (ms)") if streamed else ("e2e_ms", "E2E p50 (ms)")
    work, work_name = _work(series)
    for i, x in enumerate(series):
        steps = [s for s in _steps(x) if s[key]["p50"] is not None]
        xs, ys = [s[key]["p50"] for s in steps], [s[work] for s in steps]
        notes = [f"{s['value']}: {y:,.0f}" for s, y in zip(steps, ys, strict=True)]
        ax.plot(xs, ys, _color(i), x.label, marker=True, notes=notes)
    ax.xlabel = f"per-request latency: {name}"
    ax.ylabel = f"{work_name} (all requests)"
    ax.title = f"capacity curve (points: load, {'inputs/s' if work == 'inputs_per_s' else 'tokens/s'})"
    ax.legend = "lower right"
    return chart


def _cdf(series: list[Series], title: str, quantiles: Callable[[Run, int], np.ndarray]) -> Chart:
    chart = Chart(720, 450)
    (ax,) = chart.panels
    styles = ["-", "--", ":", "-."]
    for i, x in enumerate(series):
        steps = _steps(x)
        for j, s in enumerate(steps):
            q = quantiles(x.run, s["index"])
            if len(q):
                shade = 0.15 + 0.75 * (j / max(1, len(steps) - 1))
                rgb = f"#{25:02x}{int(255 * 0.3 * shade):02x}{int(255 * shade):02x}"
                ax.plot(q, _LEVELS, rgb, f"{x.label} {s['mode']}={s['value']}", dash=styles[i % len(styles)])
    ax.xlog, ax.ymin, ax.ymax, ax.legend = 10, 0.0, 1.0, "lower right"
    ax.xlabel = f"{title} (ms, log scale)"
    ax.ylabel = "fraction of values <= x"
    ax.title = f"{title} distribution (CDF) per step"
    return chart


def ttft_cdf(series: list[Series]) -> Chart:
    def q(run: Run, step: int) -> np.ndarray:
        values = np.asarray(run.steps[step].ttft) if step in run.steps else np.empty(0)
        return np.quantile(values, _LEVELS).clip(min=1e-3) if len(values) else values

    return _cdf(series, "TTFT", q)


def itl_cdf(series: list[Series]) -> Chart:
    def q(run: Run, step: int) -> np.ndarray:
        return run.steps[step].itl.quantiles_ms(_LEVELS).clip(min=1e-3) if step in run.steps else np.empty(0)

    return _cdf(series, "ITL", q)


def e2e_cdf(series: list[Series]) -> Chart:
    def q(run: Run, step: int) -> np.ndarray:
        values = np.asarray(run.steps[step].e2e) if step in run.steps else np.empty(0)
        return np.quantile(values, _LEVELS).clip(min=1e-3) if len(values) else values

    return _cdf(series, "E2E latency", q)


def _rate(times: np.ndarray, grid: np.ndarray, window: float) -> np.ndarray:
    """Events per second in a window centred on each grid point (``times`` sorted)."""
    hi = np.searchsorted(times, grid + window / 2, side="right")
    return (hi - np.searchsorted(times, grid - window / 2, side="left")) / window


def has_server_data(series: list[Series]) -> bool:
    return any(x.run.server is not None and len(x.run.server) for x in series)


def _server_axes(ax: Panel, x: Series, t0: float, i: int) -> None:
    """The server's own running and waiting requests (solid, dashed) and KV cache usage (dotted, right
    axis) as scraped, each value held until the next scrape."""
    server = x.run.server
    if server is None or not len(server):
        return
    t = server.t_ns / 1e9 - t0
    for key, style in (("running", "-"), ("waiting", "--"), ("kv_cache_usage", ":")):
        v = server.values.get(key)
        if v is not None and not np.isnan(v).all():
            kv = key == "kv_cache_usage"
            what = "KV cache %" if kv else key
            ax.plot(
                t, v * (100.0 if kv else 1.0), _color(i), f"{x.label} server {what}", dash=style, step=True, right=kv
            )


def _pooled(accs: list, name: str) -> np.ndarray:
    """One timestamp array of every step's accumulator, in seconds, sorted."""
    return np.sort(np.concatenate([np.asarray(getattr(a, name), dtype=np.int64) for a in accs])) / 1e9


def timeline(series: list[Series]) -> Chart:
    """In-flight requests, completions/s and errors/s over the run (measured and warmup alike are
    absent: only measured requests are in the accumulators), and under them the server's running and
    waiting requests and KV cache usage when its metrics were scraped."""
    server = has_server_data(series)
    chart = Chart(1080, 850 if server else 630, 4 if server else 3, 1, sharex=True)
    titles = ["requests in flight", "completions/s", "errors/s", "server: requests"]
    for ax, title in zip(chart.panels, titles, strict=False):
        ax.ylabel, ax.ymin = title, 0.0
    if server:
        chart.panels[3].ylabel_right, chart.panels[3].right_ylim = "server: KV cache usage %", (0.0, 105.0)
    ax1, ax2, ax3 = chart.panels[:3]
    for i, x in enumerate(series):
        accs = list(x.run.steps.values())
        if not accs or not any(len(a.sent_ns) for a in accs):
            continue
        sent, end, failed = _pooled(accs, "sent_ns"), _pooled(accs, "end_ns"), _pooled(accs, "failed_end_ns")
        t0 = sent[0]
        span = max(end[-1] - t0, 1e-3)
        grid = np.linspace(t0, end[-1], 400)
        window = max(1.0, span / 60)  # rates over a sliding window: bins would alias with lock-step load
        inflight = np.searchsorted(sent, grid, side="right") - np.searchsorted(end, grid, side="right")
        ax1.plot(grid - t0, inflight, _color(i), x.label)
        ax2.plot(grid - t0, _rate(end, grid, window), _color(i), f"{x.label} ({window:.1f} s window)")
        ax3.plot(grid - t0, _rate(failed, grid, window), _color(i), x.label)
        if server:
            _server_axes(chart.panels[3], x, t0, i)
        for h in x.run.health:
            if h.get("worker", 0) == 0 and h.get("started_ns"):
                for ax in chart.panels:
                    ax.marks.append(Mark(_color(i), x=h["started_ns"] / 1e9 - t0, dash=":"))
    chart.panels[-1].xlabel = "seconds since the first measured send (dotted: step starts)"
    return chart


def has_ratelimit_data(series: list[Series]) -> bool:
    return any(len(a.limited_ns) or len(a.throttled_ns) or a.retries for x in series for a in x.run.steps.values())


def _probe_marks(axes: tuple[Panel, ...], x: Series, t0: float, grid: np.ndarray, window: float, i: int) -> None:
    """Limit discovery: requests admitted per second (the steady state once the bucket is empty),
    the sustainable rate found, the first 429 (dashed) and the steady windows (shaded)."""
    search, probe = x.run.summary.get("search") or {}, x.run.probe
    if probe is None or not len(probe):
        return
    f = probe.frame()
    admitted = f.t[f.admitted]
    axes[0].plot(grid - t0, _rate(admitted, grid, window), _color(i), f"{x.label} admitted/s")
    if (rps := search.get("sustainable_rate_rps")) is not None and search.get("evidence") != "steps":
        axes[0].marks.append(Mark(_color(i), y=rps, dash=":", label=f"{x.label} sustainable {rps:,.2f} req/s"))
    for ax in axes:
        if (first := search.get("first_429_s")) is not None:
            ax.marks.append(Mark(_color(i), x=first - t0, dash="--"))
        for a, b in search.get("steady_windows_s") or []:
            ax.marks.append(Mark(_color(i), x=a - t0, x2=b - t0))


def _remaining(x: Series, accs: list) -> tuple[np.ndarray, list[tuple[bool, str, str, np.ndarray]]]:
    """When each x-ratelimit-remaining value was seen, and the values (requests; tokens on the right
    axis): in limit discovery as each request was admitted, otherwise as each response came."""
    if x.run.probe is not None and len(x.run.probe):
        f = x.run.probe.frame()
        return f.t, [(False, "-", "requests", f.remaining["requests"]), (True, "--", "tokens", f.remaining["tokens"])]
    when = np.concatenate([np.asarray(a.limited_ns, dtype=np.int64) for a in accs]) / 1e9
    order = np.argsort(when)
    values = [
        (False, "-", "requests", np.concatenate([np.asarray(a.remaining_requests) for a in accs])[order]),
        (True, "--", "tokens", np.concatenate([np.asarray(a.remaining_tokens) for a in accs])[order]),
    ]
    return when[order], values


def ratelimit(series: list[Series]) -> Chart:
    """429s (and, in limit discovery, admitted requests) over time, what the server said was left
    over time (the bucket draining), and how many attempts requests took."""
    chart = Chart(1080, 720, 3, 1)
    ax1, ax2, ax3 = chart.panels
    most = 1
    for i, x in enumerate(series):
        accs = list(x.run.steps.values())
        if not accs or not any(len(a.sent_ns) for a in accs):
            continue
        t0 = min(min(a.sent_ns) for a in accs if len(a.sent_ns)) / 1e9
        end = max(max(a.end_ns) for a in accs if len(a.end_ns)) / 1e9
        grid = np.linspace(t0, end, 400)
        window = max(1.0, (end - t0) / 60)
        ax1.plot(grid - t0, _rate(_pooled(accs, "throttled_ns"), grid, window), _color(i), f"{x.label} 429/s")
        _probe_marks((ax1, ax2), x, t0, grid, window, i)
        when, remaining = _remaining(x, accs)
        for right, style, what, values in remaining:
            if len(values) and not np.isnan(values).all():
                ax2.plot(when - t0, values, _color(i), f"{x.label} remaining {what}", dash=style, right=right)
        attempts = np.concatenate([np.asarray(a.attempts) for a in accs])
        if len(attempts):
            counts = np.bincount(attempts.astype(np.int64))[1:]
            most = max(most, len(counts))
            width = 0.8 / len(series)
            xs = np.arange(1, len(counts) + 1) + (i - (len(series) - 1) / 2) * width
            ax3.bars.append(Bars(xs.tolist(), counts.tolist(), width, _color(i), x.label))
    ax1.ylabel, ax1.ymin = "answers/s", 0.0
    ax1.xlabel = "seconds since the first measured send (dashed: first 429; shaded: steady windows)"
    ax2.ylabel, ax2.ylabel_right, ax2.ymin, ax2.legend = (
        "remaining requests (solid)",
        "remaining tokens (dashed)",
        0.0,
        "upper left",
    )
    ax2.xlabel = "seconds since the first measured send (x-ratelimit-* headers; in limit discovery: at send)"
    ax3.xlabel, ax3.ylabel, ax3.ymin = "attempts a request took (1: no retry)", "requests", 0.0
    ax3.xticks = [(k, str(k)) for k in range(1, most + 1)]
    return chart


PLOTS: dict[str, Callable[[list[Series]], Chart]] = {
    "throughput": throughput,
    "latency": latency,
    "capacity": capacity,
    "ttft_cdf": ttft_cdf,
    "itl_cdf": itl_cdf,
    "timeline": timeline,
}


def plots_for(series: list[Series]) -> dict[str, Callable[[list[Series]], Chart]]:
    """``PLOTS`` without the distributions no run measured (TTFT: embeddings; ITL: no tokens streamed),
    and with the E2E latency distribution when no answer streamed tokens."""
    drop = {name for name, metric in (("ttft_cdf", "ttft_ms"), ("itl_cdf", "itl_ms")) if not _measured(series, metric)}
    chosen: dict[str, Callable[[list[Series]], Chart]] = {}
    for name, draw in PLOTS.items():
        if name == "timeline" and "itl_cdf" in drop:
            chosen["e2e_cdf"] = e2e_cdf
        if name not in drop:
            chosen[name] = draw
    return chosen


def render_plots(series: list[Series]) -> dict[str, bytes]:
    """Every plot a run has data for, as PNG bytes by name (``plots_for``; the rate-limit one when a
    run saw limits or retries)."""
    pngs = {name: draw(series).png() for name, draw in plots_for(series).items()}
    if has_ratelimit_data(series):
        pngs["ratelimit"] = ratelimit(series).png()
    return pngs
