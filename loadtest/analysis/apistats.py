"""Step metrics of the APIs beyond chat: embeddings inputs, images sent, tool calls. Pure.

Embeddings: a request carries a batch of inputs, so requests/s alone says little ("50 requests/s
at batch 1 may be a twentieth of the work of 5 at batch 200"): ``inputs_per_s`` = inputs of
successful requests / step duration, ``input_tokens_per_s`` = their input tokens / step duration.
An embeddings response is one body: it has no first token, no inter-token gaps and no output tokens,
so TTFT, TTFA, ITL and TPOT are not measured (the summary says so instead of showing zeros) and its
latency is ``e2e_ms``.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import Any

from loadtest.analysis.records import RequestRecord
from loadtest.analysis.stats import distribution

__all__ = ["NOT_MEASURED_FOR_EMBEDDINGS", "ApiStats", "inputs_per_s"]

NOT_MEASURED_FOR_EMBEDDINGS = ("ttft_ms", "ttfa_ms", "itl_ms", "tpot_ms")


def inputs_per_s(inputs_ok: int, duration_s: float) -> float | None:
    """Embeddings inputs of successful requests / step duration (None: no step time)."""
    return inputs_ok / duration_s if duration_s > 0 else None


class ApiStats:
    """What the successful requests of a step sent and got, per API feature; fed one record at a time."""

    def __init__(self) -> None:
        self.apis: Counter[str] = Counter()
        self.batches = array("d")
        self.inputs_ok = self.images = self.image_bytes = self.image_requests = 0
        self.tool_requests = self.called = self.calls = self.answers = 0

    def add(self, r: RequestRecord) -> None:
        """A successful measured request."""
        if r.api is not None:
            self.apis[r.api] += 1
        if r.inputs is not None:
            self.batches.append(r.inputs)
            self.inputs_ok += r.inputs
        if r.images:
            self.image_requests += 1
            self.images += r.images
            self.image_bytes += r.image_bytes or 0
        if r.tool_calls is not None:
            self.tool_requests += 1
            self.called += r.tool_calls > 0
            self.calls += r.tool_calls
        self.answers += bool(r.tool_round)

    def summary(self, duration_s: float, input_tokens_ok: int) -> dict[str, Any]:
        rate = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: None)
        embeddings = None
        if self.batches:
            embeddings = {
                "inputs": self.inputs_ok,
                "batch_size": distribution(self.batches),
                "not_measured": list(NOT_MEASURED_FOR_EMBEDDINGS),  # one body: latency is e2e_ms
            }
        images = None
        if self.image_requests:
            images = {
                "sent": self.images,
                "per_request": self.images / self.image_requests,
                "bytes": self.image_bytes,
                "bytes_per_s": rate(self.image_bytes),
            }
        tools = None
        if self.tool_requests:
            tools = {
                "requests": self.tool_requests,  # sent with tools
                "called": self.called,  # of them, answered with at least one call
                "calls": self.calls,
                "answers": self.answers,  # turns that answered calls with workload.tool_result
            }
        return {
            "apis": dict(self.apis),
            "inputs_per_s": inputs_per_s(self.inputs_ok, duration_s) if self.batches else None,
            "input_tokens_per_s": rate(input_tokens_ok),
            "embeddings": embeddings,
            "images": images,
            "tools": tools,
        }
