"""The pictures a sweep is read by, as PNG bytes. One or several runs per plot (a comparison).

matplotlib's object API (``Figure``), never pyplot: no global state, safe in any thread, no display.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadtest.analysis.summary import Run

__all__ = [
    "PLOTS",
    "Series",
    "capacity",
    "has_ratelimit_data",
    "has_server_data",
    "itl_cdf",
    "latency",
    "ratelimit",
    "render_plots",
    "throughput",
    "timeline",
    "ttft_cdf",
]

_PCTS = (("p50", "-"), ("p95", "--"), ("p99", ":"))
_LEVELS = np.linspace(0.0, 1.0, 401)


@dataclass(frozen=True)
class Series:
    """One run in a plot, under the label its legend entries carry."""

    label: str
    run: Run


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _legend(ax: Axes, **kw: object) -> None:
    """A legend when something is labelled (a step with no successful request draws nothing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)  # type: ignore[arg-type]


def _color(i: int) -> str:
    return f"C{i % 10}"


def _load_axis(ax: Axes, series: list[Series]) -> None:
    modes = {s["mode"] for x in series for s in x.run.summary["steps"]}
    ax.set_xlabel("concurrency" if modes == {"concurrency"} else "rate (req/s)" if modes == {"rate"} else "load")
    values = [s["value"] for x in series for s in x.run.summary["steps"] if s["value"]]
    if values and max(values) / min(values) >= 8:
        ax.set_xscale("log", base=2)
    ax.grid(True, alpha=0.3)


def _steps(x: Series) -> list[dict]:
    return [s for s in x.run.summary["steps"] if s["requests"]["ok"]]


def throughput(series: list[Series]) -> Figure:
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for i, x in enumerate(series):
        steps = _steps(x)
        v = [s["value"] for s in steps]
        ax1.plot(v, [s["request_throughput"] for s in steps], "o-", color=_color(i), label=x.label)
        ax2.plot(v, [s["output_token_throughput"] for s in steps], "o-", color=_color(i), label=x.label)
    for ax, title in ((ax1, "requests/s"), (ax2, "output tokens/s")):
        _load_axis(ax, series)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        _legend(ax, fontsize="small")
    return fig


def latency(series: list[Series]) -> Figure:
    fig = Figure(figsize=(14, 4))
    axes = fig.subplots(1, 3)
    for ax, metric in zip(axes, ("ttft_ms", "tpot_ms", "e2e_ms"), strict=True):
        for i, x in enumerate(series):
            steps = [s for s in _steps(x) if s[metric]["p50"] is not None]
            for pct, style in _PCTS:
                ax.plot(
                    [s["value"] for s in steps],
                    [s[metric][pct] for s in steps],
                    style,
                    marker="o",
                    markersize=3,
                    color=_color(i),
                    label=f"{x.label} {pct}",
                )
        _load_axis(ax, series)
        ax.set_title(metric.replace("_ms", " (ms)").upper().replace("(MS)", "(ms)"))
        ax.set_ylim(bottom=0)
        _legend(ax, fontsize="x-small")
    return fig


def capacity(series: list[Series]) -> Figure:
    """Output tokens/s against per-request latency, one point per step: the knee is where adding
    load stops buying throughput and starts costing latency."""
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    streamed = all(x.run.scenario.workload.stream for x in series)
    key, name = ("tpot_ms", "TPOT p50 (ms)") if streamed else ("e2e_ms", "E2E p50 (ms)")
    for i, x in enumerate(series):
        steps = [s for s in _steps(x) if s[key]["p50"] is not None]
        xs, ys = [s[key]["p50"] for s in steps], [s["output_token_throughput"] for s in steps]
        ax.plot(xs, ys, "o-", color=_color(i), label=x.label)
        for s, px, py in zip(steps, xs, ys, strict=True):
            ax.annotate(str(s["value"]), (px, py), textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    ax.set_xlabel(f"per-request latency: {name}")
    ax.set_ylabel("output tokens/s (all requests)")
    ax.set_title("capacity curve")
    ax.grid(True, alpha=0.3)
    _legend(ax, fontsize="small")
    return fig


def _cdf(series: list[Series], title: str, quantiles: Callable[[Run, int], np.ndarray]) -> Figure:
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    for i, x in enumerate(series):
        steps = _steps(x)
        for j, s in enumerate(steps):
            q = quantiles(x.run, s["index"])
            if len(q):
                shade = 0.15 + 0.75 * (j / max(1, len(steps) - 1))
                ax.plot(
                    q,
                    _LEVELS,
                    styles[i % len(styles)],
                    color=(0.1, 0.3 * shade, shade),
                    label=f"{x.label} {s['mode']}={s['value']}",
                )
    ax.set_xscale("log")
    ax.set_xlabel(f"{title} (ms, log scale)")
    ax.set_ylabel("fraction of values <= x")
    ax.set_title(f"{title} distribution (CDF) per step")
    ax.grid(True, alpha=0.3, which="both")
    _legend(ax, fontsize="x-small", ncol=2)
    return fig


def ttft_cdf(series: list[Series]) -> Figure:
    def q(run: Run, step: int) -> np.ndarray:
        values = np.asarray(run.steps[step].ttft) if step in run.steps else np.empty(0)
        return np.quantile(values, _LEVELS).clip(min=1e-3) if len(values) else values

    return _cdf(series, "TTFT", q)


def itl_cdf(series: list[Series]) -> Figure:
    def q(run: Run, step: int) -> np.ndarray:
        return run.steps[step].itl.quantiles_ms(_LEVELS).clip(min=1e-3) if step in run.steps else np.empty(0)

    return _cdf(series, "ITL", q)


def _rate(times: np.ndarray, grid: np.ndarray, window: float) -> np.ndarray:
    """Events per second in a window centred on each grid point (``times`` sorted)."""
    hi = np.searchsorted(times, grid + window / 2, side="right")
    return (hi - np.searchsorted(times, grid - window / 2, side="left")) / window


def has_server_data(series: list[Series]) -> bool:
    return any(x.run.server is not None and len(x.run.server) for x in series)


def _server_axes(ax: Axes, kv: Axes, x: Series, t0: float, i: int) -> None:
    """The server's own running and waiting requests (solid, dashed) and KV cache usage (dotted, right
    axis) as scraped, each value held until the next scrape."""
    server = x.run.server
    if server is None or not len(server):
        return
    t = server.t_ns / 1e9 - t0
    for key, style, axis in (("running", "-", ax), ("waiting", "--", ax), ("kv_cache_usage", ":", kv)):
        v = server.values.get(key)
        if v is not None and not np.isnan(v).all():
            scale = 100.0 if key == "kv_cache_usage" else 1.0
            what = "KV cache %" if key == "kv_cache_usage" else key
            axis.step(t, v * scale, style, where="post", color=_color(i), label=f"{x.label} server {what}")


def timeline(series: list[Series]) -> Figure:
    """In-flight requests, completions/s and errors/s over the run (measured and warmup alike are
    absent: only measured requests are in the accumulators), and under them the server's running and
    waiting requests and KV cache usage when its metrics were scraped."""
    server = has_server_data(series)
    fig = Figure(figsize=(12, 9.5 if server else 7))
    axes = fig.subplots(4 if server else 3, 1, sharex=True)
    ax1, ax2, ax3 = axes[:3]
    ax4 = axes[3] if server else None
    kv = ax4.twinx() if ax4 is not None else None
    for i, x in enumerate(series):
        accs = list(x.run.steps.values())
        if not accs or not any(len(a.sent_ns) for a in accs):
            continue
        sent = np.sort(np.concatenate([np.asarray(a.sent_ns, dtype=np.int64) for a in accs])) / 1e9
        end = np.sort(np.concatenate([np.asarray(a.end_ns, dtype=np.int64) for a in accs])) / 1e9
        failed = np.concatenate([np.asarray(a.failed_end_ns, dtype=np.int64) for a in accs]) / 1e9
        failed.sort()
        t0 = sent[0]
        span = max(end[-1] - t0, 1e-3)
        grid = np.linspace(t0, end[-1], 400)
        window = max(1.0, span / 60)  # rates over a sliding window: bins would alias with lock-step load

        inflight = np.searchsorted(sent, grid, side="right") - np.searchsorted(end, grid, side="right")
        ax1.plot(grid - t0, inflight, color=_color(i), label=x.label)
        ax2.plot(grid - t0, _rate(end, grid, window), color=_color(i), label=f"{x.label} ({window:.1f} s window)")
        ax3.plot(grid - t0, _rate(failed, grid, window), color=_color(i), label=x.label)
        if ax4 is not None and kv is not None:
            _server_axes(ax4, kv, x, t0, i)
        for h in x.run.health:
            if h.get("worker", 0) == 0 and h.get("started_ns"):
                for ax in axes:
                    ax.axvline(h["started_ns"] / 1e9 - t0, color=_color(i), alpha=0.25, linestyle=":")
    titles = ["requests in flight", "completions/s", "errors/s", "server: requests"]
    for ax, title in zip(axes, titles, strict=False):
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
        _legend(ax, fontsize="small", loc="upper right")
    if kv is not None:
        kv.set_ylabel("server: KV cache usage %")
        kv.set_ylim(0, 105)
        _legend(kv, fontsize="small", loc="upper left")
    axes[-1].set_xlabel("seconds since the first measured send (dotted: step starts)")
    return fig


def has_ratelimit_data(series: list[Series]) -> bool:
    return any(len(a.limited_ns) or len(a.throttled_ns) or a.retries for x in series for a in x.run.steps.values())


def _probe_marks(axes: tuple[Axes, ...], x: Series, t0: float, grid: np.ndarray, window: float, i: int) -> None:
    """Limit discovery: requests admitted per second (the steady state once the bucket is empty),
    the sustainable rate found, the first 429 (dashed) and the steady windows (shaded)."""
    search, probe = x.run.summary.get("search") or {}, x.run.probe
    if probe is None or not len(probe):
        return
    f = probe.frame()
    admitted = f.t[f.admitted]
    axes[0].plot(grid - t0, _rate(admitted, grid, window), color=_color(i), alpha=0.6, label=f"{x.label} admitted/s")
    if (rps := search.get("sustainable_rate_rps")) is not None and search.get("evidence") != "steps":
        axes[0].axhline(rps, color=_color(i), linestyle=":", label=f"{x.label} sustainable {rps:,.2f} req/s")
    for ax in axes:
        if (first := search.get("first_429_s")) is not None:
            ax.axvline(first - t0, color=_color(i), linestyle="--", alpha=0.7)
        for a, b in search.get("steady_windows_s") or []:
            ax.axvspan(a - t0, b - t0, color=_color(i), alpha=0.1)


def ratelimit(series: list[Series]) -> Figure:
    """429s (and, in limit discovery, admitted requests) over time, what the server said was left
    over time (the bucket draining), and how many attempts requests took."""
    fig = Figure(figsize=(12, 8))
    ax1, ax2, ax3 = fig.subplots(3, 1)
    ax2b = ax2.twinx()  # tokens: a scale of their own
    for i, x in enumerate(series):
        accs = list(x.run.steps.values())
        if not accs or not any(len(a.sent_ns) for a in accs):
            continue
        t0 = min(min(a.sent_ns) for a in accs if len(a.sent_ns)) / 1e9
        end = max(max(a.end_ns) for a in accs if len(a.end_ns)) / 1e9
        grid = np.linspace(t0, end, 400)
        window = max(1.0, (end - t0) / 60)
        throttled = np.sort(np.concatenate([np.asarray(a.throttled_ns, dtype=np.int64) for a in accs])) / 1e9
        ax1.plot(grid - t0, _rate(throttled, grid, window), color=_color(i), label=f"{x.label} 429/s")
        _probe_marks((ax1, ax2), x, t0, grid, window, i)
        if x.run.probe is not None and len(x.run.probe):  # limit discovery: as each request was admitted
            f = x.run.probe.frame()
            when, order = f.t, np.arange(len(f.t))
            remaining = ((ax2, "-", "requests", f.remaining["requests"]), (ax2b, "--", "tokens", f.remaining["tokens"]))
        else:  # as each response came
            when = np.concatenate([np.asarray(a.limited_ns, dtype=np.int64) for a in accs]) / 1e9
            order = np.argsort(when)
            remaining = (
                (ax2, "-", "requests", np.concatenate([np.asarray(a.remaining_requests) for a in accs])),
                (ax2b, "--", "tokens", np.concatenate([np.asarray(a.remaining_tokens) for a in accs])),
            )
        for ax, style, what, values in remaining:
            if len(values) and not np.isnan(values).all():
                ax.plot(when[order] - t0, values[order], style, color=_color(i), label=f"{x.label} remaining {what}")
        attempts = np.concatenate([np.asarray(a.attempts) for a in accs])
        if len(attempts):
            counts = np.bincount(attempts.astype(np.int64))[1:]
            width = 0.8 / len(series)
            ax3.bar(
                np.arange(1, len(counts) + 1) + (i - (len(series) - 1) / 2) * width,
                counts,
                width=width,
                color=_color(i),
                label=x.label,
            )
    ax1.set_ylabel("answers/s")
    ax1.set_xlabel("seconds since the first measured send (dashed: first 429; shaded: steady windows)")
    ax2.set_ylabel("remaining requests (solid)")
    ax2b.set_ylabel("remaining tokens (dashed)")
    for ax in (ax2, ax2b):  # from zero: an empty bucket shows as one
        if ax.has_data():
            ax.set_ylim(bottom=0)
    ax2.set_xlabel("seconds since the first measured send (x-ratelimit-* headers; in limit discovery: at send)")
    ax3.set_xlabel("attempts a request took (1: no retry)")
    ax3.set_ylabel("requests")
    most = int(max((max(a.attempts, default=1) for x in series for a in x.run.steps.values()), default=1))
    ax3.set_xticks(range(1, most + 1))
    for ax in (ax1, ax2, ax3):
        ax.grid(True, alpha=0.3)
    for ax in (ax1, ax2, ax2b, ax3):
        _legend(ax, fontsize="small", loc="upper left" if ax is ax2 else "upper right")
    fig.tight_layout()
    return fig


PLOTS: dict[str, Callable[[list[Series]], Figure]] = {
    "throughput": throughput,
    "latency": latency,
    "capacity": capacity,
    "ttft_cdf": ttft_cdf,
    "itl_cdf": itl_cdf,
    "timeline": timeline,
}


def render_plots(series: list[Series]) -> dict[str, bytes]:
    """Every plot, as PNG bytes by name (the rate-limit one when a run saw limits or retries)."""
    pngs = {name: _png(draw(series)) for name, draw in PLOTS.items()}
    if has_ratelimit_data(series):
        pngs["ratelimit"] = _png(ratelimit(series))
    return pngs
