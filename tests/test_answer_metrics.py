"""TTFA, reasoning tokens and tokens per chunk as pure functions: hand-computed records in, numbers,
SLO verdicts and table columns out; the mock's generation plan; the scenario fields."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from loadtest.analysis.checks import evaluate_slos
from loadtest.analysis.metrics import meets_slo, summarize_step, tokens_per_chunk, tpot_ms, ttfa_ms, ttft_ms
from loadtest.analysis.records import RequestRecord, record_from_json, record_to_json
from loadtest.config.loading import load_scenario
from loadtest.config.scenario import SLO, PerRequestSLO, ScenarioError
from loadtest.mock import WORDS
from loadtest.mock.generation import Generation, tool_name
from loadtest.output.htmlreport import COLUMNS, columns_for
from loadtest.output.table import answer_metrics, print_step_table, step_line
from tests.conftest import write

MS = 1_000_000


def word(i: int) -> str:
    """The mock's default token i."""
    return WORDS[i % len(WORDS)]


def rec(i: int, chunks: list[int], answer: int | None, out: int, reasoning: int = 0, **kw: object) -> RequestRecord:
    """Sent at 0; chunk and answer times in ms; ends 5 ms after the last chunk."""
    return RequestRecord(
        id=i,
        step=0,
        chunk_times_ns=[c * MS for c in chunks],
        first_token_ns=chunks[0] * MS,
        last_token_ns=chunks[-1] * MS,
        first_answer_ns=None if answer is None else answer * MS,
        end_ns=(chunks[-1] + 5) * MS,
        output_tokens=out,
        reasoning_tokens=reasoning,
        **kw,
    )  # type: ignore[arg-type]


# R: 4 reasoning chunks (10..40 ms), the answer from 50 ms; 12 tokens in 6 chunks (8 of them reasoning)
R = rec(0, [10, 20, 30, 40, 50, 60], 50, 12, reasoning=8)
# P: no reasoning: the answer is the first token; 4 tokens in 4 chunks
P = rec(1, [30, 31, 32, 33], 30, 4)
# N: reasoning only (max_tokens ran out before the answer): no TTFA
N = rec(2, [10, 20], None, 6, reasoning=6)


def test_ttfa_ttft_and_tokens_per_chunk_by_hand() -> None:
    assert (ttft_ms(R), ttfa_ms(R)) == (10, 50) and (ttft_ms(P), ttfa_ms(P)) == (30, 30)
    assert ttfa_ms(N) is None and ttft_ms(N) == 10
    assert tokens_per_chunk(R) == 2.0 and tokens_per_chunk(P) == 1.0 and tokens_per_chunk(N) == 3.0
    assert tpot_ms(R) == pytest.approx((65 - 10) / 11)  # per token, reasoning included
    whole = RequestRecord(id=3, step=0, stream=False, first_token_ns=9 * MS, end_ns=9 * MS, output_tokens=5)
    assert tokens_per_chunk(whole) is None  # a non-streamed body has no chunks


def test_step_summary_reports_ttfa_reasoning_and_tokens_per_chunk() -> None:
    s = summarize_step([R, P, N], index=0, mode="concurrency", value=1)
    assert s["ttft_ms"]["p50"] == 10 and s["ttfa_ms"]["p50"] == 40 and s["ttfa_ms"]["max"] == 50  # N has none
    assert s["reasoning_tokens"]["mean"] == pytest.approx(14 / 3) and s["reasoning_tokens"]["max"] == 8
    assert s["tokens_per_chunk"]["mean"] == 2.0 and s["tokens_per_chunk"]["p50"] == 2.0


def test_ttfa_slos_per_request_and_per_step() -> None:
    assert [meets_slo(r, PerRequestSLO(ttfa_ms=40)) for r in (R, P, N)] == [False, True, False]
    assert [meets_slo(r, PerRequestSLO(ttft_ms=40)) for r in (R, P, N)] == [True, True, True]
    s = summarize_step([R, P], index=0, mode="concurrency", value=1, per_request_slo=PerRequestSLO(ttfa_ms=40))
    assert s["goodput_ratio"] == 0.5
    slo = SLO.model_validate({"ttft_ms": {"p99": 35}, "ttfa_ms": {"p50": 35, "max": 60}})
    v = {(x["slo"], x["stat"]): (x["ok"], x["measured"]) for x in evaluate_slos(s, slo)}
    assert v[("ttft_ms", "p99")][0] is True  # TTFTs 10 and 30
    assert v[("ttfa_ms", "p50")] == (False, 40.0) and v[("ttfa_ms", "max")] == (True, 50.0)  # TTFAs 50 and 30


def test_columns_and_lines_show_ttfa_only_when_it_differs() -> None:
    plain = summarize_step([P], index=0, mode="concurrency", value=1)
    reasoning = summarize_step([R], index=1, mode="concurrency", value=2)
    assert answer_metrics([plain]) == set()
    assert answer_metrics([plain, reasoning]) == {"ttfa_ms", "reasoning_tokens", "tokens_per_chunk"}
    # the columns of embeddings, images and tool calls show only in runs that have them (test_apis_parsing.py)
    apis = sum(
        c.key.split(".")[0] in ("inputs_per_s", "input_tokens_per_s", "embeddings", "images", "tools") for c in COLUMNS
    )
    assert len(columns_for([{"steps": [plain]}])) == len(COLUMNS) - 5 - apis  # 3 TTFA, reasoning, tokens/chunk
    assert len(columns_for([{"steps": [plain]}, {"steps": [reasoning]}])) == len(COLUMNS) - apis
    assert "TTFA" not in step_line(plain) and "TTFA p50 50.0 ms" in step_line(reasoning)
    for steps, shown in (([plain], False), ([plain, reasoning], True)):
        out = io.StringIO()
        summary = {"scenario": "x", "partial": False, "steps": steps, "slo": {"verdicts": []}}
        print_step_table(summary, Console(file=out, width=300))
        assert ("TTFA p50" in out.getvalue()) is shown and ("tok/chunk" in out.getvalue()) is shown


def test_records_keep_the_answer_time_and_reasoning_tokens() -> None:
    back = record_from_json(record_to_json(R))
    assert back.first_answer_ns == 50 * MS and back.reasoning_tokens == 8
    old = record_from_json('{"id": 1, "step": 0, "first_token_ns": 5}')  # a line from before the fields
    assert old.first_answer_ns is None and old.reasoning_tokens is None


def test_mock_generation_chunks_reasoning_answer_and_tool_call() -> None:
    g = Generation(word, reasoning=5, answer=3, per_chunk=4)
    assert (g.chunks, g.first_answer_chunk, g.plain) == (2, 1, False)
    assert g.delta(0) == {"role": "assistant", "reasoning_content": "".join(WORDS[:4])}
    assert g.delta(1) == {"reasoning_content": WORDS[4], "content": "".join(WORDS[5:8])}  # the boundary chunk
    assert g.usage(2)["completion_tokens"] == 8 and g.usage(2)["completion_tokens_details"] == {"reasoning_tokens": 5}
    assert Generation(word, 0, 4).plain and "completion_tokens_details" not in Generation(word, 0, 4).usage(1)
    call = Generation(word, 0, 2, tool="f", call_id="c")
    first, last = call.delta(0)["tool_calls"][0], call.delta(1)["tool_calls"][0]
    assert first["id"] == "c" and first["function"] == {"name": "f", "arguments": '{"text":"' + WORDS[0]}
    assert last == {"index": 0, "function": {"arguments": WORDS[1] + '"}'}} and call.finish() == "tool_calls"
    tools = [{"type": "function", "function": {"name": "g"}}]
    assert tool_name({"tools": tools}) == "g" and tool_name({"tools": tools, "tool_choice": "none"}) is None
    assert tool_name({}) is None


def test_scenario_accepts_ttfa_slos_and_checks_the_mock_fields(tmp_path: Path) -> None:
    ok = write(tmp_path / "ok.yaml", "slo: {ttfa_ms: {p95: 900}, per_request: {ttfa_ms: 800}}\n")
    sc = load_scenario(ok, ["target.mock.reasoning_tokens=32", "target.mock.tokens_per_chunk=4"])
    assert sc.slo.ttfa_ms is not None and sc.slo.ttfa_ms.p95 == 900 and sc.slo.per_request.ttfa_ms == 800
    assert (sc.target.mock.reasoning_tokens, sc.target.mock.tokens_per_chunk) == (32, 4)
    with pytest.raises(ScenarioError, match=r"ok\.yaml: target\.mock\.tokens_per_chunk: .*greater than or equal to 1"):
        load_scenario(ok, ["target.mock.tokens_per_chunk=0"])
    with pytest.raises(ScenarioError, match=r"target\.mock\.reasoning_tokens"):
        load_scenario(ok, ["target.mock.reasoning_tokens=-1"])
