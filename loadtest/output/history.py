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
    from matplotlib.figure import Figure  # here: a run appends history without loading matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    loads = sorted({(s["mode"], s["value"]) for h in history for s in h["steps"]}, key=lambda m: (m[0], m[1]))
    paths = []
    for key, label in KEY_METRICS.items():
        fig = Figure(figsize=(9, 4))
        ax = fig.subplots()
        for i, (mode, value) in enumerate(loads):
            xs, ys = [], []
            for n, h in enumerate(history):
                for s in h["steps"]:
                    if (s["mode"], s["value"]) == (mode, value) and s.get(key) is not None:
                        xs.append(n)
                        ys.append(s[key])
            if xs:
                ax.plot(xs, ys, "o-", color=f"C{i % 10}", label=f"{mode}={value}")
        ax.set_xticks(
            range(len(history)), [h["started_at"][5:16] for h in history], rotation=45, ha="right", fontsize="x-small"
        )
        ax.set_title(f"{label} per run")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
        path = out_dir / f"{key.replace('.', '_')}.png"
        fig.savefig(path, dpi=80, bbox_inches="tight")
        paths.append(path)
    if any(h.get("capacity") for h in history):
        paths.append(_plot_capacity(history, out_dir))
    return paths


def _plot_capacity(history: list[dict[str, Any]], out_dir: Path) -> Path:
    """Capacity per run, its interval as an error bar (an open top: drawn to the value)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    runs = [(n, h["capacity"]) for n, h in enumerate(history) if (h.get("capacity") or {}).get("value") is not None]
    xs = [n for n, _ in runs]
    ys = [c["value"] for _, c in runs]
    below = [c["value"] - (c["lo"] or c["value"]) for _, c in runs]
    above = [(c["hi"] if c["hi"] is not None else c["value"]) - c["value"] for _, c in runs]
    ax.errorbar(xs, ys, yerr=[below, above], fmt="o-", capsize=4)
    unit = runs[0][1]["unit"] if runs else ""
    ax.set_xticks(
        range(len(history)), [h["started_at"][5:16] for h in history], rotation=45, ha="right", fontsize="x-small"
    )
    ax.set_title(f"capacity under SLO ({unit}) per run, with its interval")
    ax.grid(True, alpha=0.3)
    path = out_dir / "capacity.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    return path
