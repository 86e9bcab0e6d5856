"""The APIs beyond chat against the mock on 127.0.0.1 (issue 17): the Responses API, embeddings, images
in prompts and tool calls, each checked against what the mock itself measured, counted and logged."""

from __future__ import annotations

import base64
import io
import json
import statistics
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from loadtest.config.loading import load_scenario
from loadtest.mock import WORDS, MockProcess
from loadtest.runner import execute
from loadtest.workload.tokens import count_tokens
from tests.conftest import ROOT, mock_stats
from tests.test_integration import run, scenario

MS = 1e6
WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def mock_log(base_url: str) -> list[dict[str, Any]]:
    """The requests the mock at ``base_url`` kept (``request_log``), oldest first."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(base_url.removesuffix("/v1") + "/mock/requests", timeout=5) as resp:
        return json.loads(resp.read())


def words(a: int, b: int) -> str:
    return "".join(WORDS[i % len(WORDS)] for i in range(a, b))


@pytest.mark.timing
def test_responses_stream_timing_and_usage(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    mock = mock_server(ttft_ms=50, itl_ms=10, output_tokens=32)
    sc = scenario(
        mock.base_url,
        target={"api": "responses"},
        workload={"prompt": {"synthetic": {"input_tokens": 40}}, "max_tokens": 64},
        load={"concurrency": [4], "requests": 16, "warmup_requests": 4},
    )
    summary, records = run(sc, tmp_path)
    (s,) = summary["steps"]
    sent = mock_stats(mock.base_url)  # what the mock measured it sent: the same bounds as chat's test
    assert sent["api_requests"] == {"responses": 20}
    assert sent["ttft_ms"]["p50"] >= 50 and abs(s["ttft_ms"]["p50"] - sent["ttft_ms"]["p50"]) <= 3, s["ttft_ms"]
    assert abs(s["itl_ms"]["p50"] - sent["itl_ms"]["p50"]) <= 2, s["itl_ms"]
    assert s["requests"] == {"sent": 16, "ok": 16, "failed": 0} and s["apis"] == {"responses": 16}
    for r in records:  # counts from response.completed's usage; one chunk per output_text delta
        assert r.api == "responses" and r.tokens_source == "usage"
        assert r.output_tokens == 32 and r.input_tokens == 40 and r.reasoning_tokens == 0
        assert len(r.chunk_times_ns) == 32 and r.first_token_ns == r.chunk_times_ns[0] == r.first_answer_ns


@pytest.mark.parametrize("mode", ["summary", "text", "hidden"])
def test_responses_reasoning_events(mock_server: Callable[..., MockProcess], tmp_path: Path, mode: str) -> None:
    # 8 reasoning tokens 5 ms apart, then 8 answer tokens: summary and text deltas are reasoning chunks
    # (TTFT at the first, TTFA 40 ms later); hidden reasoning sends no delta: TTFT = TTFA, and only
    # usage tells the reasoning tokens
    mock = mock_server(ttft_ms=10, itl_ms=5, output_tokens=8, reasoning_tokens=8, responses_reasoning=mode)
    sc = scenario(mock.base_url, target={"api": "responses"}, load={"concurrency": [2], "requests": 8})
    summary, records = run(sc, tmp_path)
    assert summary["steps"][0]["requests"]["ok"] == 8
    visible = mode != "hidden"
    for r in records:
        assert r.output_tokens == 16 and r.reasoning_tokens == 8 and r.tokens_source == "usage"
        assert len(r.chunk_times_ns) == (16 if visible else 8)
        assert r.first_answer_ns == r.chunk_times_ns[8 if visible else 0]
    gap = statistics.median((r.first_answer_ns - r.first_token_ns) / MS for r in records)
    assert abs(gap - (40 if visible else 0)) <= 5, gap


def test_responses_not_streamed(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    mock = mock_server(ttft_ms=2, itl_ms=1, output_tokens=12, reasoning_tokens=4, request_log=8)
    sc = scenario(
        mock.base_url, target={"api": "responses"}, workload={"stream": False, "max_tokens": 10}, load={"requests": 4}
    )
    summary, records = run(sc, tmp_path)
    assert summary["steps"][0]["requests"]["ok"] == 4
    for r in records:  # max_output_tokens caps reasoning and answer together: status incomplete, still ok
        assert r.output_tokens == 10 and r.reasoning_tokens == 4 and r.first_token_ns == r.end_ns and not r.stream
    body = mock_log(mock.base_url)[0]["body"]
    assert body["max_output_tokens"] == 10 and body["store"] is False and "max_tokens" not in body


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_tool_calls_and_their_answer(mock_server: Callable[..., MockProcess], tmp_path: Path, api: str) -> None:
    mock = mock_server(ttft_ms=5, itl_ms=1, output_tokens=12, request_log=16)
    result = '{"temperature": 21}'
    sc = scenario(
        mock.base_url,
        target={"api": api},
        workload={"max_tokens": 12, "tools": [WEATHER], "tool_choice": "auto", "tool_result": result},
        load={"concurrency": [2], "requests": 4},
    )
    summary, records = run(sc, tmp_path)
    (s,) = summary["steps"]
    assert s["requests"] == {"sent": 8, "ok": 8, "failed": 0}  # each call answered in one more turn
    calls = [r for r in records if not r.tool_round]
    answers = [r for r in records if r.tool_round == 1]
    assert len(calls) == len(answers) == 4 and s["tools"] == {"requests": 8, "called": 4, "calls": 4, "answers": 4}
    for r in calls:  # the argument deltas are the output: 12 tokens, 12 chunks
        assert r.tool_calls == 1 and r.output_tokens == 12 and len(r.chunk_times_ns) == 12
    assert all(r.tool_calls == 0 and r.output_tokens == 12 for r in answers)
    assert mock_stats(mock.base_url)["tool_calls"] == 4
    log = mock_log(mock.base_url)
    firsts = [e["body"] for e in log if len(e["body"]["messages" if api == "chat" else "input"]) == 1]
    follow = [e["body"] for e in log if len(e["body"]["messages" if api == "chat" else "input"]) == 3]
    assert len(firsts) == len(follow) == 4
    arguments = '{"text":"' + words(0, 12) + '"}'  # what the mock's call carried
    for body in follow:
        if api == "chat":
            asked, answer = body["messages"][1:]
            (call,) = asked["tool_calls"]
            assert call["function"] == {"name": "get_weather", "arguments": arguments}
            assert answer == {"role": "tool", "tool_call_id": call["id"], "content": result}
            assert body["tools"] == [{"type": "function", "function": WEATHER}]
        else:
            asked, answer = body["input"][1:]
            assert asked["type"] == "function_call" and asked["arguments"] == arguments
            assert answer == {"type": "function_call_output", "call_id": asked["call_id"], "output": result}
            assert body["tools"] == [{"type": "function", **WEATHER}]
    ids = [(b["messages"][1]["tool_calls"][0]["id"] if api == "chat" else b["input"][1]["call_id"]) for b in follow]
    assert len(set(ids)) == 4  # each answer names the call the mock made for its own first turn


@pytest.mark.timing
@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_embeddings_batch_of_16(mock_server: Callable[..., MockProcess], tmp_path: Path, fmt: str) -> None:
    mock = mock_server(ttft_ms=8, request_log=64)
    workload = {"prompt": {"synthetic": {"input_tokens": 24, "stddev": 6}}, "batch_size": 16, "encoding_format": fmt}
    sc = scenario(
        mock.base_url,
        target={"api": "embeddings"},
        # 64 dimensions: 16 x 1536 floats would be 300 KB of JSON, whose transfer and parsing is the
        # client's cost, not the server's latency this checks
        workload={**workload, "extra_body": {"dimensions": 64}},
        load={"concurrency": [2], "requests": 20, "warmup_requests": 2},
    )
    summary, records = run(sc, tmp_path)
    (s,) = summary["steps"]
    assert s["requests"] == {"sent": 20, "ok": 20, "failed": 0}
    assert s["inputs_per_s"] == 16 * s["request_throughput"]  # exactly
    assert s["input_tokens_per_s"] == sum(r.input_tokens for r in records if not r.warmup) / s["duration_s"]
    log = [e["body"] for e in mock_log(mock.base_url)]
    assert len(log) == 22 and all(b["encoding_format"] == fmt and len(b["input"]) == 16 for b in log)
    assert all(b["dimensions"] == 64 for b in log)
    lengths = [count_tokens(text) for b in log for text in b["input"]]  # the inputs the mock received
    assert len(set(lengths)) > 5 and sum(r.input_tokens for r in records) == sum(lengths)
    stats = mock_stats(mock.base_url)
    assert stats["embedding_inputs"] == 16 * 22 and stats["embedding_tokens"] == sum(lengths)
    for r in records:
        assert r.inputs == 16 and r.tokens_source == "usage" and r.api == "embeddings" and not r.stream
        assert r.first_token_ns is None and r.output_tokens is None and not r.chunk_times_ns
    assert s["ttft_ms"]["p50"] is None and s["itl_ms"]["p50"] is None and s["tpot_ms"]["p50"] is None
    assert s["embeddings"]["not_measured"] == ["ttft_ms", "ttfa_ms", "itl_ms", "tpot_ms"]
    assert s["embeddings"]["inputs"] == 320 and s["embeddings"]["batch_size"]["mean"] == 16
    assert stats["ttft_ms"]["p50"] >= 8 and abs(s["e2e_ms"]["p50"] - stats["ttft_ms"]["p50"]) <= 3, s["e2e_ms"]


def _decoded(url: str) -> tuple[str, tuple[int, int], int]:
    """(format, size, bytes) of a data URL's image, read by Pillow (not by the mock's header parser)."""
    b64 = url.partition(",")[2]
    data = base64.b64decode(b64)
    with Image.open(io.BytesIO(data)) as im:
        return im.format or "", im.size, len(data)


@pytest.mark.parametrize(("api", "fmt", "detail"), [("chat", "png", "high"), ("responses", "jpeg", "low")])
def test_images_reach_the_mock(
    mock_server: Callable[..., MockProcess], tmp_path: Path, api: str, fmt: str, detail: str
) -> None:
    mock = mock_server(ttft_ms=2, itl_ms=1, output_tokens=4, request_log=16)
    images = {"count": 3, "width": 300, "height": 200, "format": fmt, "detail": detail, "pool": 4}
    sc = scenario(
        mock.base_url,
        target={"api": api},
        workload={"prompt": {"synthetic": {"input_tokens": 10}}, "images": images},
        load={"concurrency": [2], "requests": 6},
    )
    summary, records = run(sc, tmp_path)
    assert summary["steps"][0]["requests"]["ok"] == 6
    log = [e["body"] for e in mock_log(mock.base_url)]
    assert len(log) == 6
    sent_bytes = []
    for body in log:
        (message,) = body["messages" if api == "chat" else "input"]
        text, *parts = message["content"]
        assert text["type"] == ("text" if api == "chat" else "input_text") and len(text["text"].split()) == 10
        assert len(parts) == 3
        urls = [p["image_url"]["url"] if api == "chat" else p["image_url"] for p in parts]
        assert all((p["image_url"]["detail"] if api == "chat" else p["detail"]) == detail for p in parts)
        decoded = [_decoded(u) for u in urls]
        assert {(f, size) for f, size, _ in decoded} == {(fmt.upper(), (300, 200))}
        sent_bytes.append(sum(n for _, _, n in decoded))
    assert sorted(r.image_bytes for r in records) == sorted(sent_bytes)
    assert all(r.images == 3 for r in records)
    per_image = 85 if detail == "low" else 85 + 170  # OpenAI's rule: 300 x 200 is one 512-px tile
    stats = mock_stats(mock.base_url)
    assert stats["images"] == 18 and stats["image_sizes"] == {"300x200": 18} and stats["image_tokens"] == 18 * per_image
    assert all(r.input_tokens == 10 + 3 * per_image and r.tokens_source == "usage" for r in records)
    assert summary["steps"][0]["images"]["per_request"] == 3


async def test_the_openai_sdk_reads_the_mocks_new_routes(mock_server: Callable[..., MockProcess]) -> None:
    """The SDK's own types accept the mock's Responses events and objects and its embeddings (both formats)."""
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=6, reasoning_tokens=2)
    async with openai.AsyncOpenAI(base_url=mock.base_url, api_key="x", max_retries=0) as client:
        stream = await client.responses.create(model="m", input="a b c", stream=True, max_output_tokens=50)
        got = [e async for e in stream]
        assert [e.sequence_number for e in got] == list(range(len(got)))
        assert got[0].type == "response.created" and got[-1].type == "response.completed"
        text = "".join(e.delta for e in got if e.type == "response.output_text.delta")
        summary = "".join(e.delta for e in got if e.type == "response.reasoning_summary_text.delta")
        assert summary == words(0, 2) and text == words(2, 8)
        assert all(getattr(e, "obfuscation", "") for e in got if e.type.endswith(".delta"))  # not asked to drop it
        done = got[-1].response
        assert done.output_text == text and done.usage is not None and done.usage.output_tokens == 8
        assert done.usage.input_tokens == 3 and done.usage.output_tokens_details.reasoning_tokens == 2
        tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
        whole = await client.responses.create(model="m", input="x", tools=[tool], max_output_tokens=4)  # type: ignore[list-item]
        assert whole.status == "incomplete" and whole.incomplete_details is not None
        (call,) = [o for o in whole.output if o.type == "function_call"]
        assert call.name == "f" and call.call_id.startswith("call_")
        for fmt in ({}, {"encoding_format": "float"}):  # not told, the SDK asks for base64 and decodes it
            emb = await client.embeddings.create(model="m", input=["a b", "c d e"], **fmt)  # type: ignore[arg-type]
            assert [len(d.embedding) for d in emb.data] == [1536, 1536] and emb.usage.prompt_tokens == 5
            assert abs(sum(x * x for x in emb.data[0].embedding) - 1) < 1e-3  # a unit vector


@pytest.mark.parametrize("name", ["responses", "embeddings", "images", "tools"])
def test_example_scenarios_run_against_the_mock(tmp_path: Path, name: str) -> None:
    small = ["load.concurrency=[2]", "load.requests=4", "load.warmup_requests=0"]
    if name == "images":
        small.append("workload.images.pool=2")
    sc = load_scenario(ROOT / "scenarios" / f"{name}.yaml", small)
    outcome = execute(sc, f"{name}.yaml", tmp_path, on_step=lambda s: None, report=False)
    (s,) = outcome.summary["steps"]
    assert outcome.exit_code == 0 and s["requests"]["failed"] == 0 and s["apis"] == {sc.target.api: s["requests"]["ok"]}


@pytest.mark.timing
def test_the_mocks_first_embeddings_answer_is_on_time(mock_server: Callable[..., MockProcess]) -> None:
    """Its vectors are encoded before the first request (building 1536-dimension floats took ~300 ms
    and landed on whoever asked first)."""
    mock = mock_server(ttft_ms=5)
    body = json.dumps({"model": "m", "input": ["a b", "c"], "encoding_format": "float"}).encode()
    request = urllib.request.Request(
        mock.base_url + "/embeddings", data=body, headers={"content-type": "application/json"}
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(request, timeout=5) as resp:
        answer = json.loads(resp.read())
    assert [len(d["embedding"]) for d in answer["data"]] == [1536, 1536] and answer["usage"]["prompt_tokens"] == 3
    took = mock_stats(mock.base_url)["ttft_ms"]["p50"]  # the mock's own time to its answer
    assert 5 <= took < 25, took
