"""The capacity search's picture: goodput and each bounded SLO metric against load, one point per
step (labelled with its value, so exact numbers read off the PNG), the SLO bound as a horizontal
line, and the capacity with its interval marked (a vertical line and a shaded band). A ``Chart``
(output/chart.py), drawn to PNG like the other plots."""

from __future__ import annotations

from typing import Any

from loadtest.analysis.summary import pick
from loadtest.output.chart import Chart, Mark, Panel, color
from loadtest.output.plots import Series, value_notes

__all__ = ["has_capacity", "slo_vs_load"]

_LATENCY = ("ttft_ms", "ttfa_ms", "tpot_ms", "itl_ms", "e2e_ms")
_BOUND = "#d62728"


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


def _mark(ax: Panel, cap: dict[str, Any], c: str) -> None:
    lo, hi = cap["interval"]
    if lo is not None and hi is not None:
        ax.marks.append(Mark(c, x=lo, x2=hi))
    if cap.get("value") is not None:
        ax.marks.append(Mark(c, x=cap["value"], dash="--", label=f"capacity {cap['value']:g}"))


def slo_vs_load(series: list[Series]) -> Chart:
    panels = [("goodput", "goodput (req/s)", None)] + [
        (f"{n}.{s}", f"{n.replace('_ms', '')} {s} (ms)", v) for n, s, v in _bounds(series[0])
    ]
    chart = Chart(440 * len(panels), 320, rows=1, cols=len(panels))
    unit = (series[0].run.summary.get("capacity") or {}).get("unit", "")
    for ax, (key, title, bound) in zip(chart.panels, panels, strict=True):
        ax.title, ax.xlabel, ax.ymin = title, f"load ({unit})", 0.0
        for i, x in enumerate(series):
            steps = sorted(x.run.summary["steps"], key=lambda s: s["value"])
            pts = [(s["value"], v) for s in steps if isinstance(v := pick(s, key), int | float)]
            ys = [p[1] for p in pts]
            ax.plot([p[0] for p in pts], ys, color(i), x.label, marker=True, notes=value_notes(ys))
            if cap := x.run.summary.get("capacity"):
                _mark(ax, cap, color(i))
        if bound is not None:
            ax.marks.append(Mark(_BOUND, y=bound, label=f"bound {bound:g}"))
    return chart
