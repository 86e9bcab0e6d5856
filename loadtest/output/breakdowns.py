"""The figures of a step below its totals, for the terminal: per turn index of its conversations
(``sessions.by_turn``) and cold against warm shared-prefix groups (``prefix_groups``). Printed after
the step table, only for the steps that have them; report.html shows the same in its own tables.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["cache_line", "cell", "print_breakdowns", "sessions_line"]


def cell(v: float | None, digits: int = 1) -> str:
    """A number as a table cell: grouped, ``digits`` decimals, "-" when missing."""
    return "-" if v is None else f"{v:,.{digits}f}"


def sessions_line(c: dict[str, Any]) -> str:
    """How a step's conversations ended, in one line."""
    by_context = c.get("completed_by_context") or 0  # absent from summaries older than the key
    context = f", {by_context} ended by max_context_tokens" if by_context else ""
    return f"{c['started']} conversations: {c['completed']} completed{context}, {c['failed']} failed, {c['cut']} cut"


def _turn_table(s: dict[str, Any]) -> Table:
    c = s["sessions"]
    t = Table()
    for col in ("turn", "ok/sent", "context tok p50", "TTFT p50", "TTFT p95", "E2E p50"):
        t.add_column(col, justify="right")
    for row in c["by_turn"]:
        t.add_row(
            str(row["turn"]),
            f"{row['ok']}/{row['requests']}",
            cell(row["context_tokens"]["p50"], 0),
            cell(row["ttft_ms"]["p50"]),
            cell(row["ttft_ms"]["p95"]),
            cell(row["e2e_ms"]["p50"]),
        )
    return t


def cache_line(g: dict[str, Any]) -> str:
    """Shared-prefix groups in one line: TTFT p50/p95 of cold (first of a group) and warm requests."""

    def part(name: str) -> str:
        p = g[name]
        if not p["requests"]:
            return f"{name} none"
        share = "" if p["cached_share"] is None else f", {100 * p['cached_share']:.0f}% cached"
        ttft = p["ttft_ms"]
        return f"{name} {cell(ttft['p50'])} / {cell(ttft.get('p95'))} ms ({p['requests']} requests{share})"

    return f"{g['groups']} prefix groups, TTFT p50 / p95: {part('cold')}; {part('warm')}"


def print_breakdowns(summary: dict[str, Any], console: Console) -> None:
    """Per-turn tables of the steps with conversations, the cache line of the steps with prefix groups."""
    for s in summary["steps"]:
        if c := s.get("sessions"):
            console.print(f"step {s['index']} by turn: {sessions_line(c)}", highlight=False)
            console.print(_turn_table(s))
        if g := s.get("prefix_groups"):
            console.print(f"step {s['index']}: {cache_line(g)}", highlight=False)
