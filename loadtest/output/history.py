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
    }


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
    return paths
