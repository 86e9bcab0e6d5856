"""Every run appends one line to ``results/<scenario>/history.jsonl``; ``loadtest history`` reads
the trend back: a table, and a plot per key metric (one line per load value)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadtest.analysis.summary import pick

__all__ = ["KEY_METRICS", "append_history", "history_line", "plot_history", "read_history"]

KEY_METRICS = {
    "output_token_throughput": "output tokens/s",
    "request_throughput": "requests/s",
    "ttft_ms.p50": "TTFT p50 (ms)",
    "ttft_ms.p99": "TTFT p99 (ms)",
    "tpot_ms.p50": "TPOT p50 (ms)",
    "itl_ms.p50": "ITL p50 (ms)",
    "e2e_ms.p99": "E2E p99 (ms)",
    "error_rate": "error rate",
}


def history_line(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    return {
        "started_at": summary["started_at"],
        "run_dir": str(run_dir),
        "partial": summary["partial"],
        "slo_passed": summary["slo"]["passed"],
        "tool_version": summary["tool_version"],
        "steps": [
            {"mode": s["mode"], "value": s["value"], **{k: pick(s, k) for k in KEY_METRICS}} for s in summary["steps"]
        ],
        "capacity": _capacity(summary.get("capacity")),
    }


def _capacity(cap: dict[str, Any] | None) -> dict[str, Any] | None:
    """A capacity search's answer, for the trend: value and interval."""
    if not cap:
        return None
    lo, hi = cap["interval"]
    return {"value": cap["value"], "lo": lo, "hi": hi, "unit": cap["unit"], "status": cap["status"]}


def append_history(summary: dict[str, Any], run_dir: Path) -> Path:
    path = run_dir.parent / "history.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(history_line(summary, run_dir)) + "\n")
    return path


def read_history(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn line from a killed run
    return sorted(out, key=lambda h: h["started_at"])


def plot_history(history: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per key metric: its value per run, one line per load value."""
    from loadtest.output.chart import Chart, color  # here: a run appends history without loading Pillow

    out_dir.mkdir(parents=True, exist_ok=True)
    loads = sorted({(s["mode"], s["value"]) for h in history for s in h["steps"]}, key=lambda m: (m[0], m[1]))
    paths = []
    for key, label in KEY_METRICS.items():
        chart = Chart(810, 360)
        (ax,) = chart.panels
        for i, (mode, value) in enumerate(loads):
            xs, ys = [], []
            for n, h in enumerate(history):
                for s in h["steps"]:
                    if (s["mode"], s["value"]) == (mode, value) and s.get(key) is not None:
                        xs.append(n)
                        ys.append(s[key])
            if xs:
                ax.plot(xs, ys, color(i), f"{mode}={value}", marker=True)
        every = max(1, len(history) // 10)  # at most ~10 dates under the axis
        ax.xticks = [(n, h["started_at"][5:16]) for n, h in enumerate(history)][::every]
        ax.title = f"{label} per run"
        path = out_dir / f"{key.replace('.', '_')}.png"
        path.write_bytes(chart.png())
        paths.append(path)
    if any(h.get("capacity") for h in history):
        paths.append(_plot_capacity(history, out_dir))
    return paths


def _plot_capacity(history: list[dict[str, Any]], out_dir: Path) -> Path:
    """Capacity per run (each point labelled with its value) between its interval's edges (dotted;
    an open top is not drawn)."""
    from loadtest.output.chart import Chart, color

    chart = Chart(810, 360)
    (ax,) = chart.panels
    runs = [(n, h["capacity"]) for n, h in enumerate(history) if (h.get("capacity") or {}).get("value") is not None]
    xs, ys = [n for n, _ in runs], [c["value"] for _, c in runs]
    ax.plot(xs, ys, color(0), "capacity", marker=True, notes=[f"{y:.4g}" for y in ys])
    for edge, label in (("lo", "interval low"), ("hi", "interval high")):
        pts = [(n, c[edge]) for n, c in runs if c[edge] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color(0), label, dash=":")
    every = max(1, len(history) // 10)
    ax.xticks = [(n, h["started_at"][5:16]) for n, h in enumerate(history)][::every]
    ax.title = f"capacity under SLO ({runs[0][1]['unit'] if runs else ''}) per run, with its interval"
    ax.ymin = 0.0
    path = out_dir / "capacity.png"
    path.write_bytes(chart.png())
    return path
