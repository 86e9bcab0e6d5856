"""The views of a run over time that summary.json adds to each step: ``server`` (the server's metrics
over the step), ``steady`` (the steady window, with the server's side of it) and ``windows`` (time
slices, each with the server's gauges), plus the run's ``server_metrics`` status. Pure."""

from __future__ import annotations

from typing import Any

from loadtest.analysis.servermetrics import ServerSeries, server_window
from loadtest.analysis.steady import Timelines, steady_view, time_windows

__all__ = ["add_time_views", "server_status"]


def _gauges(server: dict[str, Any] | None) -> dict[str, float | None] | None:
    if server is None:
        return None
    return {k: (server.get(k) or {}).get("mean") for k in ("running", "waiting", "kv_cache_usage")}


def add_time_views(
    summary: dict[str, Any],
    timelines: Timelines,
    series: ServerSeries | None,
    *,
    window_s: float,
    extra: tuple[str, ...] = (),
) -> None:
    """Add ``server``, ``steady`` and ``windows`` to every step of ``summary`` (in place)."""
    for step in summary["steps"]:
        tl = timelines.steps.get(step["index"])
        a = tl.arrays() if tl is not None else None
        keep = a["warm"] == 0 if a is not None else None
        if a is None or keep is None or not keep.any():  # no measured request
            step["server"], step["steady"], step["windows"] = None, None, []
            continue
        first, last = int(a["sent"][keep].min()), int(a["end"][keep].max())
        step["server"] = server_window(series, first, last, extra)
        steady, s0, s1 = steady_view(a, step["mode"], step["value"])
        if steady is not None:
            steady["server"] = server_window(series, s0, s1, extra)
        step["steady"] = steady
        windows = []
        for lo, hi, entry in time_windows(a, window_s):
            entry["server"] = _gauges(server_window(series, lo, hi))
            windows.append(entry)
        step["windows"] = windows


def server_status(header: dict[str, Any] | None, series: ServerSeries | None) -> dict[str, Any]:
    """summary.json's ``server_metrics``: whether the server's metrics were read, from where, which engine."""
    if header is None:
        return {"status": "off", "url": None, "reason": None, "engine": None, "scrapes": 0}
    return {
        "status": header.get("status"),
        "url": header.get("url"),
        "reason": header.get("reason"),
        "engine": series.engine if series is not None else None,
        "scrapes": len(series) if series is not None else 0,
    }
