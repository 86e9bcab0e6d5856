"""A server's Prometheus text: the metric names loadtest knows per engine, the lines it keeps, and
their parsing (prometheus_client's parser, never by hand). Pure: text in, plain data out.

Name rules (README "Server metrics"): prometheus_client strips ``_total`` from a counter family's name
and keeps it on its samples, and gives a counter exposed without ``_total`` (TGI's) samples renamed
``X_total``, so families are matched by their name without ``_total``. ``*_created`` families (the
creation time prometheus_client adds to counters and histograms) are dropped. SGLang behind its
router or a Prometheus server spells ``sglang:`` as ``sglang_``: read as ``sglang:``.
"""

from __future__ import annotations

from typing import Any, Literal

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ENGINES", "KINDS", "Family", "detect_engine", "family_name", "parse_metrics", "prefilter", "wanted_names"]

Kind = Literal["gauge_sum", "gauge_mean", "counter", "histogram"]

# How a key's samples across label sets (engines under data parallelism, ranks) become one number:
# counts add up, a usage ratio is averaged, counters add up, histograms add up bucket by bucket.
KINDS: dict[str, Kind] = {
    "running": "gauge_sum",
    "waiting": "gauge_sum",
    "kv_cache_usage": "gauge_mean",
    "prefix_cache_queries": "counter",
    "prefix_cache_hits": "counter",
    "preemptions": "counter",
    "prompt_tokens": "counter",
    "generation_tokens": "counter",
    "ttft": "histogram",
    "queue_time": "histogram",
}

# For each engine, each key's family names (without _total), the first present wins. Sources:
# vLLM v1 vllm/v1/metrics/loggers.py; SGLang srt/metrics/collector.py; llama.cpp tools/server; TGI router/src.
ENGINES: dict[str, dict[str, tuple[str, ...]]] = {
    "vllm": {
        "running": ("vllm:num_requests_running",),
        "waiting": ("vllm:num_requests_waiting",),
        "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),  # the latter before 0.10
        "prefix_cache_queries": ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
        "prefix_cache_hits": ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
        "preemptions": ("vllm:num_preemptions",),
        "prompt_tokens": ("vllm:prompt_tokens",),
        "generation_tokens": ("vllm:generation_tokens",),
        "ttft": ("vllm:time_to_first_token_seconds",),
        "queue_time": ("vllm:request_queue_time_seconds",),
    },
    "sglang": {
        "running": ("sglang:num_running_reqs",),
        "waiting": ("sglang:num_queue_reqs",),
        "kv_cache_usage": ("sglang:token_usage",),
        "prefix_cache_queries": ("sglang:prompt_tokens",),  # hit rate = cached tokens / prompt tokens
        "prefix_cache_hits": ("sglang:cached_tokens",),
        "prompt_tokens": ("sglang:prompt_tokens",),
        "generation_tokens": ("sglang:generation_tokens",),
        "ttft": ("sglang:time_to_first_token_seconds",),
        "queue_time": ("sglang:queue_time_seconds",),
    },
    "llamacpp": {
        "running": ("llamacpp:requests_processing",),
        "waiting": ("llamacpp:requests_deferred",),
        "kv_cache_usage": ("llamacpp:kv_cache_usage_ratio",),  # removed in 2025-05 builds
        "prefix_cache_queries": ("llamacpp:prompt_tokens",),
        "prefix_cache_hits": ("llamacpp:prompt_tokens_cached",),  # newer builds only
        "prompt_tokens": ("llamacpp:prompt_tokens",),
        "generation_tokens": ("llamacpp:tokens_predicted",),
    },
    "tgi": {
        "running": ("tgi_batch_current_size",),
        "waiting": ("tgi_queue_size",),
        "queue_time": ("tgi_request_queue_duration",),
    },
}
_PREFIXES = {"vllm": ("vllm:",), "sglang": ("sglang:",), "llamacpp": ("llamacpp:",), "tgi": ("tgi_",)}

Family = dict[str, Any]  # {"name", "type", "samples": [[sample name, labels, value], ...]}


def wanted_names(extra: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every family name loadtest keeps: the known ones of every engine, ``sglang_`` spellings, ``extra``."""
    names = {n for table in ENGINES.values() for names in table.values() for n in names}
    names |= {family_name(n) for n in extra}
    names |= {"sglang_" + n.removeprefix("sglang:") for n in names if n.startswith("sglang:")}
    return tuple(sorted(names))


def prefilter(text: str, wanted: tuple[str, ...]) -> str:
    """The lines of ``text`` that belong to a wanted family (its samples and ``# TYPE`` line). A vLLM
    server's 900 lines cost ~40 ms to parse and the few dozen kept under 1 ms (measured: README)."""
    types = tuple("# TYPE " + n for n in wanted)
    keep = [ln for ln in text.splitlines() if ln.startswith(wanted) or ln.startswith(types)]
    return "\n".join(keep) + "\n" if keep else ""


def family_name(name: str) -> str:
    """The name a family is matched by: without ``_total``, ``sglang_`` read as ``sglang:``."""
    name = "sglang:" + name.removeprefix("sglang_") if name.startswith("sglang_") else name
    return name.removesuffix("_total")


def parse_metrics(text: str) -> list[Family]:
    """Parsed families (``ValueError`` on text that is not Prometheus exposition), ``_created`` dropped."""
    out = []
    for f in text_string_to_metric_families(text):
        name = family_name(f.name)
        if name.endswith("_created"):
            continue
        samples = [[s.name, dict(s.labels), float(s.value)] for s in f.samples if not s.name.endswith("_created")]
        out.append({"name": name, "type": f.type, "samples": samples})
    return out


def detect_engine(names: set[str]) -> str | None:
    """The engine whose prefix the most family names carry (None: no known one)."""
    counts = {e: sum(1 for n in names if n.startswith(p)) for e, p in _PREFIXES.items()}
    best = max(counts, key=lambda e: counts[e])
    return best if counts[best] else None
