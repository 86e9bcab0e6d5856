"""The terminal table's server columns: a step's scrapes (hand-written vLLM /metrics text) through the
same aggregation as a run (analysis/servermetrics.py server_window), then the table: requests
waiting/running as time means over the step and the KV cache's fullest moment, hand-computed; no
server columns for steps that were not scraped."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from loadtest.analysis.metrics import summarize_step
from loadtest.analysis.records import RequestRecord
from loadtest.analysis.servermetrics import ServerSeries, server_window
from loadtest.output.table import print_step_table

S = 1_000_000_000


def scrape(t_s: float, waiting: int, running: int, kv: float) -> dict[str, Any]:
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        f'vllm:num_requests_waiting{{model_name="m"}} {waiting}\n'
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{model_name="m"}} {running}\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        f'vllm:kv_cache_usage_perc{{model_name="m"}} {kv}\n'
    )
    return {"t_ns": int(t_s * S), "text": text}


def step() -> dict[str, Any]:
    r = RequestRecord(
        id=0, step=0, sent_ns=0, first_token_ns=S // 10, last_token_ns=S, end_ns=S, chunk_times_ns=[S // 10, S],
        output_tokens=2, tokens_source="usage", http_status=200,
    )  # fmt: skip
    return summarize_step([r], index=0, mode="rate", value=4)


def table(steps: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    print_step_table(
        {"scenario": "x", "partial": False, "steps": steps, "slo": {"verdicts": []}}, Console(file=out, width=300)
    )
    return out.getvalue()


def test_the_table_shows_the_servers_queue_and_kv_cache_when_scraped() -> None:
    # waiting 0 for 1 s then 6 for 3 s: mean (0 x 1 + 6 x 3) / 4 = 4.5; running 2 then 8: (2 + 24) / 4 = 6.5
    series = ServerSeries([scrape(0, 0, 2, 0.25), scrape(1, 6, 8, 1.0), scrape(3, 6, 8, 0.75)])
    s = step()
    s["server"] = server_window(series, 0, 4 * S)
    text = table([s])
    header = next(line for line in text.splitlines() if "srv wait/run" in line)
    row = next(line for line in text.splitlines() if line.strip().startswith("│ 0") or "4 req/s" in line)
    assert "KV max" in header
    assert "4.5/6.5" in row and "100%" in row, row
    assert "srv wait/run" not in table([step()]) and "KV max" not in table([step()])


def test_a_step_with_fewer_than_three_scrapes_inside_shows_no_server_figures() -> None:
    """Two scrapes inside the step (at 1 s and 3 s of [0.5 s, 4 s]): its time means would mostly hold
    what its edges saw, so the cells say "-" and a note says why."""
    series = ServerSeries([scrape(0, 0, 2, 0.25), scrape(1, 6, 8, 1.0), scrape(3, 6, 8, 0.75)])
    s = step()
    s["server"] = server_window(series, S // 2, 4 * S)
    assert s["server"]["scrapes"] == 2
    text = table([s])
    row = next(line for line in text.splitlines() if line.strip().startswith("│ 0") or "4 req/s" in line)
    *_, wait_run, kv_max, _errors, _ = (c.strip() for c in row.split("│"))  # the last columns: srv, KV, errors
    assert wait_run in ("-", "-/-") and kv_max == "-", row
    assert "server columns: '-' for steps [0], with fewer than 3 /metrics scrapes" in " ".join(text.split())
