"""Per-turn and per-group figures shown to the reader: in the terminal after the step table, and in
report.html, only for the steps that have them. Checked against hand-computed values of the run
(the context each turn carries, how many requests were cold) and the mock's own counts."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from rich.console import Console

from loadtest.config.scenario import Scenario
from loadtest.mock import MockProcess
from loadtest.output.htmlreport import fmt, render_page
from loadtest.output.rundir import load_run
from loadtest.output.table import print_step_table
from loadtest.runner import execute
from tests.conftest import mock_stats

INPUTS = [12, 5, 7]  # each turn's new user message, tokens
ANSWERS = [4, 6, 2]  # each turn's answer (max_tokens: the mock answers exactly that many)


class _Tables(HTMLParser):
    """The rows of every table of a page: its class -> [(the row's attributes, its cells' texts)]."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[dict[str, str | None], list[str]]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("class") or ""
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append((dict(attrs), []))
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1][1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _run(base_url: str, tmp_path: Path, workload: dict[str, Any], load: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A run: its summary and report.html's tables, and what the terminal shows after it."""
    sc = Scenario.model_validate({"name": "bd", "target": {"base_url": base_url}, "workload": workload, "load": load})
    outcome = execute(sc, "bd.yaml", tmp_path, on_step=lambda s: None, report=False)
    out = io.StringIO()
    print_step_table(outcome.summary, Console(file=out, width=200))
    parser = _Tables()
    parser.feed(render_page([load_run(outcome.run_dir)], ["bd"], {}))  # report.html's page, without its plots
    return {"summary": outcome.summary, "tables": parser.tables}, out.getvalue()


def test_per_turn_figures_reach_the_terminal_and_the_report(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    mock = mock_server(ttft_ms=3, itl_ms=0, output_tokens=1000)
    got, terminal = _run(
        mock.base_url,
        tmp_path,
        {
            "prompt": {"synthetic": {"input_tokens": 50}},
            "sessions": {"turns": 3, "input_tokens": INPUTS, "max_tokens": ANSWERS},
        },
        {"concurrency": [2], "requests": 3},
    )
    assert mock_stats(mock.base_url)["requests"] == 9
    context = [sum(INPUTS[:t]) + sum(ANSWERS[: t - 1]) for t in (1, 2, 3)]  # 12, 21, 30: by hand
    by_turn = got["summary"]["steps"][0]["sessions"]["by_turn"]
    # the terminal: a row per turn after the step table, under how the conversations ended
    assert "3 conversations: 3 completed, 0 failed, 0 cut" in terminal
    for t, row in enumerate(by_turn, 1):
        cells = [f"{t}", "3/3", f"{context[t - 1]}", f"{row['ttft_ms']['p50']:,.1f}", f"{row['ttft_ms']['p95']:,.1f}"]
        assert re.search(r"\s+│\s+".join(map(re.escape, cells)), terminal), (t, terminal)
        assert row["ttft_ms"]["p50"] >= 3  # the mock's TTFT
    # the report: the same rows, read back from the page
    rows = [cells for attrs, cells in got["tables"]["turns"] if attrs.get("data-turn")]
    assert [r[:4] for r in rows] == [[f"{t}", "3", "3", f"{context[t - 1]}"] for t in (1, 2, 3)]
    assert [r[4] for r in rows] == [fmt(row["ttft_ms"]["p50"], 2) for row in by_turn]
    assert "groups" not in got["tables"] and "prefix groups" not in terminal  # no groups in this step


def test_cold_and_warm_groups_reach_the_terminal_and_the_report(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    """Two groups, six requests one at a time: the first of each group is cold (2), the rest warm (4)."""
    mock = mock_server(ttft_ms=2, itl_ms=0, output_tokens=2, prefix_cache={"prefill_ms_per_1k": 20})
    got, terminal = _run(
        mock.base_url,
        tmp_path,
        {"prompt": {"shared_prefix": {"groups": 2, "prefix_tokens": 400, "suffix_tokens": 8}}, "max_tokens": 2},
        {"concurrency": [1], "requests": 6},
    )
    assert mock_stats(mock.base_url)["requests"] == 6
    groups = got["summary"]["steps"][0]["prefix_groups"]
    cold, warm = groups["cold"]["ttft_ms"], groups["warm"]["ttft_ms"]
    line = f"step 0: 2 prefix groups, TTFT p50 / p95: cold {cold['p50']:,.1f} / {cold['p95']:,.1f} ms (2 requests"
    assert line in terminal and f"warm {warm['p50']:,.1f} / {warm['p95']:,.1f} ms (4 requests" in terminal
    rows = {attrs["data-part"]: cells for attrs, cells in got["tables"]["groups"] if attrs.get("data-part")}
    assert rows["cold"][1:4] == ["2", fmt(cold["p50"], 2), fmt(cold["p95"], 2)]
    assert rows["warm"][1] == "4" and rows["cold"][4] == fmt(0.0, 3)  # nothing of a cold prefix was cached
    per_group = [int(rows[f"group {g}"][1]) for g in (0, 1)]
    assert sum(per_group) == 6 and min(per_group) >= 1  # each group was sent (its cold one at least)
    assert "turns" not in got["tables"] and "by turn" not in terminal  # no conversations in this step
