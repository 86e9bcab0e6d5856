"""The capacity search's picture: goodput and each bounded SLO metric against load, one point per
step (labelled with its value, so exact numbers read off the PNG), the SLO bound as a horizontal
line, and the capacity with its interval marked (a vertical line and a shaded band)."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from loadtest.output.plots import Series

__all__ = ["has_capacity", "slo_vs_load"]

_LATENCY = ("ttft_ms", "ttfa_ms", "tpot_ms", "itl_ms", "e2e_ms")


def has_capacity(series: list[Series]) -> bool:
    return any(x.run.summary.get("capacity") for x in series)


def _bounds(x: Series) -> list[tuple[str, str, float]]:
    slo = x.run.scenario.slo
    out = []
    for name in _LATENCY:
        b = getattr(slo, name)
        if b is not None:
            out += [(name, stat, v) for stat, v in b.model_dump(exclude_none=True).items()]
    return out


def _mark(ax: Any, cap: dict[str, Any], color: str) -> None:
    lo, hi = cap["interval"]
    if cap.get("value") is not None:
        ax.axvline(cap["value"], color=color, lw=1.2, ls="--")
    if lo is not None and hi is not None:
        ax.axvspan(lo, hi, color=color, alpha=0.12)


def slo_vs_load(series: list[Series]) -> Figure:
    panels = [("goodput", "goodput (req/s)", None)] + [
        (f"{n}.{s}", f"{n.replace('_ms', '')} {s} (ms)", v) for n, s, v in _bounds(series[0])
    ]
    fig = Figure(figsize=(5.5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title, bound) in zip(axes, panels, strict=True):
        for i, x in enumerate(series):
            color = f"C{i % 10}"
            steps = sorted(x.run.summary["steps"], key=lambda s: s["value"])
            pts = [(s["value"], _pick(s, key)) for s in steps if _pick(s, key) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=x.label)
            for px, py in pts:
                ax.annotate(f"{py:.4g}", (px, py), textcoords="offset points", xytext=(3, 4), fontsize="x-small")
            if cap := x.run.summary.get("capacity"):
                _mark(ax, cap, color)
        if bound is not None:
            ax.axhline(bound, color="red", lw=1, label=f"bound {bound:g}")
        ax.set_title(title)
        ax.set_xlabel("load (" + (series[0].run.summary.get("capacity") or {}).get("unit", "") + ")")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    return fig


def _pick(step: dict[str, Any], key: str) -> float | None:
    node: Any = step
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, int | float) else None
