"""The APIs beyond chat without a server: what each server's Responses events and embeddings bodies
become in a record (httpx2.MockTransport), request bodies, the image token rule, scenario checks."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from loadtest.analysis.metrics import summarize_step
from loadtest.analysis.records import RequestRecord
from loadtest.config.loading import load_scenario
from loadtest.config.scenario import Scenario, ScenarioError
from loadtest.mock.inputs import image_size, image_tokens
from loadtest.output.htmlreport import columns_for
from loadtest.output.table import print_step_table, step_line
from loadtest.transport.bodies import RequestShape, request_body, request_shape
from loadtest.transport.client import make_endpoint, send
from loadtest.workload.images import EncodedImage, build_images, synthetic_image
from loadtest.workload.prompts import PromptItem, run_prompts
from loadtest.workload.tokens import count_tokens
from loadtest.workload.tools import ToolCall
from tests.conftest import write

ITEM = PromptItem(messages=[{"role": "user", "content": "hi there"}], prompt=None, max_tokens=8, input_tokens=2)
USAGE = {"input_tokens": 7, "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 12}


def events(*objs: dict[str, Any], framed: bool = True) -> bytes:
    """A Responses stream: ``event:`` + ``data:`` pairs (OpenAI, vLLM, SGLang) or ``data:`` alone."""
    out = [(f"event: {o['type']}\n" if framed else "") + f"data: {json.dumps(o)}\n\n" for o in objs]
    return "".join(out).encode()


async def call(
    body: bytes | dict[str, Any],
    api: str = "responses",
    stream: bool = True,
    item: PromptItem = ITEM,
    shape: RequestShape | None = None,
) -> tuple[RequestRecord, list[httpx2.Request], list[ToolCall]]:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, content=body) if isinstance(body, bytes) else httpx2.Response(200, json=body)

    ep = make_endpoint(
        "http://127.0.0.1:1/v1", "k", max_connections=2, timeout_s=5, connect_timeout_s=1,
        transport=httpx2.MockTransport(handler),
    )  # fmt: skip
    calls: list[ToolCall] = []
    rec = await send(
        ep, RequestRecord(id=1, step=0), item, model="m", api=api, stream=stream, extra_body=None,  # type: ignore[arg-type]
        t0=time.perf_counter_ns(), timeout_s=5, shape=shape, calls=calls,
    )  # fmt: skip
    await ep.close()
    return rec, seen, calls


def delta(kind: str, text: str, **more: Any) -> dict[str, Any]:
    return {"type": f"response.{kind}.delta", "delta": text, **more}


async def test_openai_stream_every_kind_of_output_is_a_chunk_and_done_events_are_not() -> None:
    body = events(
        {"type": "response.created", "sequence_number": 0, "response": {"status": "in_progress"}},
        {"type": "response.in_progress", "sequence_number": 1, "response": {}},
        delta("reasoning_summary_text", "think", item_id="rs_1", summary_index=0),
        delta("reasoning_text", " more", item_id="rs_1", content_index=0),
        {"type": "response.reasoning_summary_text.done", "text": "think"},
        delta("output_text", "Hel", item_id="msg_1", content_index=0),
        delta("output_text", "lo", item_id="msg_1", content_index=0),
        delta("refusal", "!", item_id="msg_1"),
        {"type": "response.output_text.done", "text": "Hello"},
        {"type": "response.completed", "response": {"status": "completed", "usage": USAGE}},
    )
    rec, seen, _ = await call(body)
    sent = json.loads(seen[0].content)
    assert seen[0].url.path == "/v1/responses" and sent["input"] == ITEM.messages and sent["store"] is False
    assert sent["max_output_tokens"] == 8 and sent["stream_options"] == {"include_obfuscation": False}
    assert rec.status == "ok" and rec.api == "responses" and len(rec.chunk_times_ns) == 5
    assert rec.first_token_ns == rec.chunk_times_ns[0] and rec.first_answer_ns == rec.chunk_times_ns[2]
    assert (rec.input_tokens, rec.output_tokens, rec.reasoning_tokens, rec.tokens_source) == (7, 5, 2, "usage")


async def test_llama_cpp_stream_without_ids_sequence_or_event_lines() -> None:
    # llama.cpp: only type, item_id and delta; usage without details; a gateway's [DONE] tolerated
    usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    body = (
        events(
            {"type": "response.output_text.delta", "item_id": "x", "delta": "a"},
            {"type": "response.output_text.delta", "item_id": "x", "delta": " b"},
            {"type": "response.completed", "response": {"usage": usage}},
            framed=False,
        )
        + b"data: [DONE]\n\n"
    )
    rec, _, _ = await call(body)
    assert rec.status == "ok" and len(rec.chunk_times_ns) == 2 and rec.output_tokens == 2
    assert rec.reasoning_tokens == 0  # no details, no reasoning text


async def test_incomplete_counts_failed_and_error_fail_and_a_missing_end_is_broken() -> None:
    cut = {"type": "response.incomplete", "response": {"status": "incomplete", "usage": USAGE}}
    rec, _, _ = await call(events(delta("output_text", "a"), cut))
    assert rec.status == "ok" and rec.output_tokens == 5  # max_output_tokens reached: an answer, as chat's "length"
    failed = {"type": "response.failed", "response": {"status": "failed", "error": {"message": "overloaded"}}}
    rec, _, _ = await call(events(delta("output_text", "a"), failed))
    assert rec.error_class == "stream_error" and "overloaded" in (rec.error or "") and len(rec.chunk_times_ns) == 1
    rec, _, _ = await call(events({"type": "error", "message": "boom", "code": "server_error"}))
    assert rec.error_class == "stream_error"
    rec, _, _ = await call(events(delta("output_text", "a")))
    assert rec.error_class == "stream_broken" and rec.first_token_ns == rec.chunk_times_ns[0]


async def test_responses_without_usage_count_every_output_with_the_tokenizer() -> None:
    body = events(
        delta("reasoning_text", "one two"),
        delta("output_text", " three"),
        delta("function_call_arguments", ' {"a": 1}'),
        {"type": "response.completed", "response": {}},
    )
    rec, _, _ = await call(body)
    assert rec.tokens_source == "tiktoken" and rec.input_tokens == 2
    assert rec.output_tokens == count_tokens('one two three {"a": 1}') and rec.reasoning_tokens == 2


async def test_function_call_events_give_the_call_and_its_arguments() -> None:
    item = {"id": "fc_1", "type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": ""}
    body = events(
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        delta("function_call_arguments", '{"city":', item_id="fc_1", output_index=0),
        delta("function_call_arguments", '"Paris"}', item_id="fc_1", output_index=0),
        {"type": "response.function_call_arguments.done", "item_id": "fc_1", "arguments": '{"city":"Paris"}'},
        {"type": "response.completed", "response": {"usage": USAGE}},
    )
    shape = RequestShape(tools=({"name": "get_weather", "parameters": {"type": "object"}},), tool_choice="get_weather")
    rec, seen, calls = await call(body, shape=shape)
    sent = json.loads(seen[0].content)
    assert sent["tools"] == [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    assert sent["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert rec.tool_calls == 1 and len(rec.chunk_times_ns) == 2 and rec.first_answer_ns == rec.chunk_times_ns[0]
    assert calls == [ToolCall("call_9", "get_weather", '{"city":"Paris"}')]


async def test_chat_tool_call_pieces_and_a_whole_message() -> None:
    def piece(i: int, **call: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, **call}]}}]}

    chunks = [  # vLLM: the first piece has no arguments key; two parallel calls
        piece(0, id="call_a", type="function", function={"name": "f"}),
        piece(0, function={"arguments": '{"x":'}),
        piece(1, id="call_b", type="function", function={"name": "g", "arguments": ""}),
        piece(0, function={"arguments": "1}"}),
        piece(1, function={"arguments": "{}"}),
    ]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"
    shape = RequestShape(tools=({"name": "f"}, {"name": "g"}), tool_choice="required")
    rec, seen, calls = await call(body, api="chat", shape=shape)
    sent = json.loads(seen[0].content)
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "f"}},
        {"type": "function", "function": {"name": "g"}},
    ]
    assert sent["tool_choice"] == "required"
    assert calls == [ToolCall("call_a", "f", '{"x":1}'), ToolCall("call_b", "g", "{}")] and rec.tool_calls == 2
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
    }
    whole = {"choices": [{"index": 0, "message": message}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    rec, _, calls = await call(whole, api="chat", stream=False, shape=shape)
    assert calls == [ToolCall("c1", "f", "{}")] and rec.tool_calls == 1
    rec, _, calls = await call(whole, api="chat", stream=False)  # no tools sent: nothing to say
    assert rec.tool_calls is None


async def test_whole_response_object() -> None:
    output = [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hmm"}]},
        {"type": "message", "content": [{"type": "output_text", "text": "yes"}]},
    ]
    rec, _, _ = await call({"status": "completed", "output": output, "usage": USAGE}, stream=False)
    assert rec.status == "ok" and rec.first_token_ns == rec.first_answer_ns == rec.end_ns and not rec.stream
    assert (rec.output_tokens, rec.reasoning_tokens) == (5, 2) and rec.chunk_times_ns == []
    rec, _, _ = await call({"status": "failed", "error": {"message": "nope"}, "output": []}, stream=False)
    assert rec.error_class == "stream_error"


async def test_embeddings_body_and_record() -> None:
    item = PromptItem(None, None, 8, 9, inputs=("a b", "c d e", "f g h i"))
    answer = {"data": [{"index": i, "embedding": [0.1, 0.2]} for i in range(3)], "usage": {"prompt_tokens": 11}}
    rec, seen, _ = await call(answer, api="embeddings", item=item, shape=RequestShape(encoding_format="base64"))
    sent = json.loads(seen[0].content)
    assert seen[0].url.path == "/v1/embeddings"
    assert sent == {"model": "m", "input": ["a b", "c d e", "f g h i"], "encoding_format": "base64"}
    assert rec.status == "ok" and rec.inputs == 3 and rec.input_tokens == 11 and rec.tokens_source == "usage"
    assert rec.first_token_ns is None and rec.output_tokens is None and rec.stream is False
    rec, _, _ = await call({"data": answer["data"][:2]}, api="embeddings", item=item)
    assert rec.error_class == "bad_response" and "2 embeddings for 3 inputs" in (rec.error or "")
    one = PromptItem(None, "just one", 8, 2)
    rec, seen, _ = await call({"data": [{"embedding": "AAAA"}]}, api="embeddings", item=one)
    assert (
        json.loads(seen[0].content)["input"] == "just one" and json.loads(seen[0].content)["encoding_format"] == "float"
    )
    assert rec.inputs == 1 and rec.input_tokens == 2 and rec.tokens_source == "tiktoken"  # no usage: the prompt's count


def test_images_go_last_in_the_last_user_message() -> None:
    images = (EncodedImage("data:image/png;base64,AAA", 2), EncodedImage("data:image/png;base64,BBB", 2))
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "look"}]
    item = PromptItem(messages, None, 8, 1, images=images)
    chat = request_body(item, "m", "chat", True, None, RequestShape(image_detail="low"))
    assert chat["messages"][0] == messages[0] and messages[1]["content"] == "look"  # the item is not changed
    assert chat["messages"][1]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,BBB", "detail": "low"}},
    ]
    resp = request_body(item, "m", "responses", False, {"store": True}, RequestShape())
    assert resp["input"][1]["content"][1] == {
        "type": "input_image",
        "image_url": "data:image/png;base64,AAA",
        "detail": "auto",
    }
    assert resp["store"] is True and "stream_options" not in resp  # extra_body has the last word


def test_synthetic_images_are_seeded_sized_and_distinct() -> None:
    sc = Scenario.model_validate({"name": "x", "workload": {"images": {"width": 40, "height": 30, "pool": 3}}})
    a = build_images(sc.workload.images, seed=1)  # type: ignore[arg-type]
    assert [x.url for x in a] == [x.url for x in build_images(sc.workload.images, seed=1)]  # type: ignore[arg-type]
    assert len({x.url for x in a}) == 3 and a[0].url != build_images(sc.workload.images, seed=2)[0].url  # type: ignore[arg-type]
    for fmt in ("png", "jpeg"):
        data = synthetic_image(40, 30, fmt, np.random.default_rng(0))
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == fmt.upper() and im.size == (40, 30) and im.mode == "RGB"


@pytest.mark.parametrize(("size", "fmt"), [((300, 200), "PNG"), ((1920, 1080), "JPEG"), ((7, 3000), "JPEG")])
def test_mock_reads_image_sizes_from_headers(size: tuple[int, int], fmt: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, format=fmt)
    url = f"data:image/{fmt.lower()};base64,{base64.b64encode(out.getvalue()).decode()}"
    assert image_size(url) == size


def test_image_token_rule_matches_openais_worked_examples() -> None:
    assert image_tokens(1024, 1024, "high") == 765  # 768 x 768: 4 tiles
    assert image_tokens(2048, 4096, "high") == 1105  # 1024 x 2048 -> 768 x 1536: 6 tiles
    assert image_tokens(4096, 8192, "auto") == 1105  # auto is high
    assert image_tokens(500, 500, "high") == 255  # never scaled up: 1 tile
    assert image_tokens(4096, 8192, "low") == image_tokens(10, 10, "low") == 85


def test_scenario_checks_name_the_field(tmp_path: Path) -> None:
    bad = [
        ("target: {api: completions}\nworkload: {images: {count: 1}}\n", r"workload: images: only with"),
        ("workload: {batch_size: 4}\n", r"workload: batch_size: only with target.api: embeddings"),
        ("workload: {tool_result: ok}\n", r"workload: tool_choice and tool_result need tools"),
        ("workload: {tools: [{name: f}], tool_choice: {name: g}}\n", r"workload: tool_choice: no tool named 'g'"),
        ("workload: {tools: missing.json}\n", r"workload\.tools: .*missing\.json: file not found"),
        ("workload: {tools: [{type: web_search}]}\n", r"only function tools"),
        ("target: {api: embeddings}\nworkload: {encoding_format: bytes}\n", r"workload\.encoding_format"),
    ]
    for text, pattern in bad:
        with pytest.raises(ScenarioError, match=pattern) as e:
            load_scenario(write(tmp_path / "bad.yaml", text))
        assert "\n" not in str(e.value) and "bad.yaml" in str(e.value)


def test_tools_from_a_file_beside_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "tools.yaml", "tools:\n  - {type: function, function: {name: f, description: d}}\n")
    write(tmp_path / "s.yaml", "target: {api: responses}\nworkload: {tools: sub/tools.yaml, tool_choice: {name: f}}\n")
    sc = load_scenario(tmp_path / "s.yaml")
    shape = request_shape(sc.workload)
    assert shape.tools == ({"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}},)
    assert shape.tool_choice == "f" and shape.named_choice


def test_embeddings_step_summary_without_token_timings() -> None:
    recs = [
        RequestRecord(id=i, step=0, sent_ns=i * 10**7, end_ns=i * 10**7 + 5 * 10**6, stream=False,
                      api="embeddings", inputs=16, input_tokens=16 * 20, tokens_source="usage")
        for i in range(10)
    ]  # fmt: skip
    s = summarize_step(recs, index=0, mode="concurrency", value=1)
    assert s["duration_s"] == pytest.approx(0.095)
    assert s["inputs_per_s"] == 16 * s["request_throughput"] == pytest.approx(160 / 0.095)
    assert s["input_tokens_per_s"] == pytest.approx(3200 / 0.095) and s["e2e_ms"]["p50"] == 5
    assert s["ttft_ms"]["p50"] is None and s["embeddings"]["not_measured"] == [
        "ttft_ms",
        "ttfa_ms",
        "itl_ms",
        "tpot_ms",
    ]
    console = Console(record=True, width=200)
    summary = {"scenario": "e", "partial": False, "steps": [{**s, "warnings": []}], "slo": {"verdicts": []}}
    print_step_table(summary, console)
    text = console.export_text()
    assert "inputs/s" in text and "TTFT" not in text.split("latencies")[0] and "no TTFT, TTFA, ITL or TPOT" in text
    assert "inputs/s" in step_line(s) and "TTFT" not in step_line(s)
    titles = [c.title for c in columns_for([{"steps": [s]}])]  # report.html's step table
    assert {"inputs/s", "input tok/s", "E2E p50"} <= set(titles)
    assert not [t for t in titles if t.startswith(("TTFT", "TTFA", "ITL", "TPOT", "out tok"))]


def test_embeddings_batches_from_a_jsonl_file_and_from_synthetic_inputs(tmp_path: Path) -> None:
    words = ["the", "a", "one", "two", "red"]
    lines = [{"prompt": f"{w} cat"} for w in words] + [{"messages": [{"role": "user", "content": "five"}]}]
    write(tmp_path / "in.jsonl", "\n".join(json.dumps(x) for x in lines))
    write(tmp_path / "s.yaml", "target: {api: embeddings}\nworkload: {prompt: {file: in.jsonl}, batch_size: 4}\n")
    pool, _ = run_prompts(load_scenario(tmp_path / "s.yaml"), "", "")
    assert pool[0].inputs == ("the cat", "a cat", "one cat", "two cat") and pool[0].input_tokens == 8  # 2 each
    assert pool[1].inputs == ("red cat", "five", "the cat", "a cat") and pool[1].input_tokens == 7  # lines cycle
    synthetic = {"prompt": {"synthetic": {"input_tokens": 9, "stddev": 3}}, "batch_size": 16}
    sc = Scenario.model_validate({"name": "e", "target": {"api": "embeddings"}, "workload": synthetic})
    pool, _ = run_prompts(sc, "", "")
    batches = [pool[i] for i in range(3)]
    texts = [t for b in batches for t in b.inputs]
    assert len(set(texts)) == 48  # never repeated
    assert [b.input_tokens for b in batches] == [sum(count_tokens(t) for t in b.inputs) for b in batches]
