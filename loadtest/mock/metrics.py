"""The mock's ``GET /metrics``: what a vLLM server exposes, with vLLM's names, labels and buckets.

Rendered by prometheus_client from a custom collector on a private registry (no process or Python
metrics). Labels are vLLM v1's ``model_name`` (the mock's one model) and ``engine="0"``. The rules:

- ``vllm:num_requests_running`` / ``vllm:num_requests_waiting``: requests generating / queued for a
  slot (``slots``), the same counts as ``/mock/stats``'s ``running`` and ``waiting``;
- ``vllm:kv_cache_usage_perc``: running / slots (0 to 1): a request holds its slot's share of the cache
  while it generates; 0 without ``slots`` (every request generates at once: the cache never fills);
- ``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits`` (counters, in tokens): every admitted
  prompt's tokens are queries; hits are the tokens the mock's prefix cache (``prefix_cache``,
  ``prefixcache.py``) served, the same count its usage reports as ``cached_tokens``; 0 without one
  (a server with prefix caching off);
- ``vllm:num_preemptions``: always 0 (the mock never evicts a running request);
- ``vllm:prompt_tokens`` / ``vllm:generation_tokens`` (counters): tokens of admitted prompts and of answers;
- ``vllm:time_to_first_token_seconds``: from the request's arrival to its first token (queueing
  included, as vLLM counts from arrival), vLLM's buckets; ``vllm:request_queue_time_seconds``: the
  wait for a slot, vLLM's request-latency buckets.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

__all__ = ["CONTENT_TYPE", "QUEUE_BUCKETS", "TTFT_BUCKETS", "Histogram", "MockMetrics", "render"]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # text/plain; version=0.0.4, what vLLM serves
MODEL = "mock-model"  # the one model of /v1/models
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TTFT_BUCKETS += (20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
QUEUE_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
QUEUE_BUCKETS += (120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class Histogram:
    """Counts per bucket (non-cumulative here, cumulative when rendered), their sum and count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts in it
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class MockMetrics:
    """The counters behind ``/metrics`` (the gauges are read from the state when it is rendered)."""

    def __init__(self) -> None:
        self.ttft = Histogram(TTFT_BUCKETS)
        self.queue = Histogram(QUEUE_BUCKETS)
        self.prompt_tokens = self.generation_tokens = 0
        self.prefix_queries = self.prefix_hits = 0

    def admitted(self, prompt_tokens: int, cached_tokens: int) -> None:
        """A request got its slot: its prompt's tokens are queries, those the prefix cache held hits."""
        self.prompt_tokens += prompt_tokens
        self.prefix_queries += prompt_tokens
        self.prefix_hits += cached_tokens


def _families(metrics: MockMetrics, running: int, waiting: int, slots: int | None) -> Iterator[Metric]:
    labels, values = ["model_name", "engine"], [MODEL, "0"]

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=labels)
        g.add_metric(values, value)
        return g

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        c = CounterMetricFamily(name, doc, labels=labels)  # exposed as name_total, as vLLM's are
        c.add_metric(values, value)
        return c

    def histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
        f = HistogramMetricFamily(name, doc, labels=labels)
        f.add_metric(values, buckets=h.cumulative(), sum_value=h.sum)
        return f

    yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", running)
    yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", waiting)
    usage = running / slots if slots else 0.0
    yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage)
    yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
                  metrics.prefix_queries)  # fmt: skip
    yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
                  metrics.prefix_hits)  # fmt: skip
    yield counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", 0)
    yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", metrics.prompt_tokens)
    yield counter("vllm:generation_tokens", "Number of generation tokens processed.", metrics.generation_tokens)
    yield histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", metrics.ttft)
    yield histogram("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
                    metrics.queue)  # fmt: skip


class _Collector:
    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state
        return _families(s.metrics, s.running, s.waiting, s.config.slots)


def render(state: Any) -> bytes:
    """The Prometheus text of the state's metrics now (``state``: a ``MockState``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(state))
    return generate_latest(registry)
