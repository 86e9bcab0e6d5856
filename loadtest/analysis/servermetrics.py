"""A server's metrics over a window of the run: what ``server_metrics.jsonl``'s scrapes say about a step.

Pure: the scrapes (plain dicts, as written) in, numbers out. Each scrape is ``{"t_ns", "text"}`` (the kept
lines of the server's answer, parsed here) on the run's timeline (ns since the run's t0, like the
request records). Over a window ``[s, e]``:

- gauges (running, waiting, KV cache usage): the time-weighted mean and the max, each scrape's value
  held until the next scrape (requests counted: summed over label sets; a usage ratio: averaged);
- counters (prefix cache queries and hits, preemptions, tokens): the increase from s to e, read off the
  counter linearly interpolated between the scrapes around s and around e (a counter that went down was
  reset: the increase restarts from its new value);
- histograms (server-side TTFT, queue time): each bucket's increase the same way; mean = increase of
  the sum / increase of the count; percentiles interpolated inside their bucket as Prometheus's
  ``histogram_quantile`` does (one in the +Inf bucket: the highest finite bound).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from loadtest.analysis.promtext import ENGINES, KINDS, detect_engine, family_name, parse_metrics

__all__ = ["ServerSeries", "parsed", "server_window"]

_QUANTILES = (0.5, 0.9, 0.99)


def _value(kind: str, samples: list[list[Any]]) -> float:
    values = [s[2] for s in samples if not s[0].endswith(("_bucket", "_sum", "_count"))]
    if not values:
        return math.nan
    return float(np.mean(values)) if kind == "gauge_mean" else float(sum(values))


def _buckets(samples: list[list[Any]]) -> dict[str, float]:
    """A histogram's cumulative bucket counts by bound (and ``_sum``, ``_count``), summed over label sets."""
    out: dict[str, float] = {}
    for name, labels, value in samples:
        if name.endswith("_bucket"):
            key = labels.get("le")
        else:
            key = "_sum" if name.endswith("_sum") else "_count" if name.endswith("_count") else None
        if key is not None:
            out[key] = out.get(key, 0.0) + value
    return out


def parsed(scrape: dict[str, Any]) -> dict[str, Any] | None:
    """A scrape with its ``families`` (parsing its kept ``text``); None for a failed or unreadable one."""
    if "families" in scrape:
        return scrape
    if not isinstance(scrape.get("text"), str):
        return None
    try:
        return {"t_ns": scrape["t_ns"], "families": parse_metrics(scrape["text"])}
    except ValueError:
        return None


class ServerSeries:
    """The scrapes of a run as one time series per known key (and per ``extra`` family name)."""

    def __init__(self, scrapes: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> None:
        scrapes = sorted((p for s in scrapes if (p := parsed(s)) is not None), key=lambda s: s["t_ns"])
        self.t_ns = np.asarray([s["t_ns"] for s in scrapes], dtype=np.int64)
        names = {f["name"] for s in scrapes for f in s["families"]}
        self.engine = detect_engine(names)
        table = ENGINES.get(self.engine or "", {})
        self.names = {key: next((n for n in cands if n in names), None) for key, cands in table.items()}
        self.values: dict[str, np.ndarray] = {}  # gauges and counters: one value a scrape (NaN: absent)
        self.hists: dict[str, list[dict[str, float]]] = {}
        # each counter's (and histogram bucket's) growth through the run, built once: a report asks for
        # it over every step, steady window and time slice
        self._grown: dict[tuple[str, str], _Growth] = {}
        self._bounds: dict[str, list[str]] = {}  # each histogram's bucket bounds, ascending
        by_name = [{f["name"]: f for f in s["families"]} for s in scrapes]
        for key, name in self.names.items():
            if name is not None:
                self._add(key, KINDS[key], name, by_name)
        for given in extra:
            name = family_name(given)
            types = {fams[name]["type"] for fams in by_name if name in fams}
            kind = "histogram" if "histogram" in types else "counter" if "counter" in types else "gauge_sum"
            self._add(f"extra:{given}", kind, name, by_name)

    def _add(self, key: str, kind: str, name: str, by_name: list[dict[str, dict[str, Any]]]) -> None:
        if kind == "histogram":
            self.hists[key] = [_buckets(fams[name]["samples"]) if name in fams else {} for fams in by_name]
        else:
            self.values[key] = np.asarray(
                [_value(kind, fams[name]["samples"]) if name in fams else math.nan for fams in by_name]
            )

    def __len__(self) -> int:
        return len(self.t_ns)

    def gauge(self, key: str, s: int, e: int) -> dict[str, float] | None:
        """Time-weighted mean and max of a gauge over [s, e] (ns), each scrape held until the next."""
        v = self.values.get(key)
        if v is None:
            return None
        ok = ~np.isnan(v)
        t, v = self.t_ns[ok], v[ok]
        first = max(int(np.searchsorted(t, s, side="right")) - 1, 0)  # the scrape in force at s
        last = int(np.searchsorted(t, e, side="right"))
        t, v = t[first:last], v[first:last]
        if not len(t) or t[0] > e:
            return None
        edges = np.append(np.maximum(t, s), e).astype(np.float64)
        held = np.diff(edges)
        mean = float(np.dot(held, v) / held.sum()) if held.sum() > 0 else float(v[-1])
        return {"mean": mean, "max": float(v.max())}

    def increase(self, key: str, s: int, e: int) -> float | None:
        """A counter's increase over [s, e], resets counted (see the module docstring)."""
        v = self.values.get(key)
        if v is None:
            return None
        if (key, "") not in self._grown:
            self._grown[key, ""] = _growth(self.t_ns, v)
        return _over(self._grown[key, ""], s, e)

    def histogram(self, key: str, s: int, e: int) -> dict[str, float | None] | None:
        """count, mean and p50/p90/p99 of what a histogram counted over [s, e]."""
        if key not in self.hists:
            return None
        bounds = self._hist_growth(key)
        if not bounds:
            return None
        delta = {b: _over(self._grown[key, b], s, e) for b in [*bounds, "_sum"]}
        count = delta[bounds[-1]] or 0.0  # the +Inf bucket: every observation
        out: dict[str, float | None] = {"count": count, "mean": (delta["_sum"] or 0.0) / count if count > 0 else None}
        cum = [delta[b] or 0.0 for b in bounds]
        for q in _QUANTILES:
            out[f"p{round(q * 100)}"] = _bucket_quantile(q, [float(b) for b in bounds], cum) if count > 0 else None
        return out

    def _hist_growth(self, key: str) -> list[str]:
        """A histogram's bucket bounds (ascending), each bucket's and ``_sum``'s growth: built once."""
        if key in self._bounds:
            return self._bounds[key]
        snaps = self.hists[key]
        ok = np.asarray([bool(h) for h in snaps])
        t, snaps = self.t_ns[ok], [h for h in snaps if h]
        bounds = self._bounds[key] = sorted({b for h in snaps for b in h if not b.startswith("_")}, key=float)
        for b in [*bounds, "_sum"]:
            self._grown[key, b] = _growth(t, np.asarray([h.get(b, math.nan) for h in snaps]))
        return bounds


_Growth = tuple[np.ndarray, np.ndarray]  # scrape times, and a counter's growth up to each (resets counted)


def _growth(t: np.ndarray, v: np.ndarray) -> _Growth:
    ok = ~np.isnan(v)
    t, v = t[ok], v[ok]
    steps = np.diff(v)
    grown = np.concatenate(([0.0], np.cumsum(np.where(steps >= 0, steps, v[1:]))))  # a drop: reset to v
    return t, grown


def _over(growth: _Growth, s: int, e: int) -> float | None:
    """A counter's increase over [s, e] from its growth."""
    t, grown = growth
    if not len(t):
        return None
    return float(np.interp(e, t, grown) - np.interp(s, t, grown))


def _bucket_quantile(q: float, bounds: list[float], cum: list[float]) -> float:
    """Prometheus's histogram_quantile over cumulative counts ``cum`` at upper bounds ``bounds``."""
    rank = q * cum[-1]
    for i, (bound, c) in enumerate(zip(bounds, cum, strict=True)):
        if c >= rank:
            if math.isinf(bound):
                return bounds[i - 1] if i > 0 else 0.0
            lo, below = (bounds[i - 1], cum[i - 1]) if i > 0 else (0.0, 0.0)
            inside = c - below
            return lo + (bound - lo) * ((rank - below) / inside if inside > 0 else 1.0)
    return bounds[-1]


def server_window(series: ServerSeries | None, s: int, e: int, extra: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The server's side of [s, e] (ns on the run's timeline): None without scrapes or when none covers it."""
    if series is None or not len(series) or e <= s:
        return None
    inside = int(np.count_nonzero((series.t_ns >= s) & (series.t_ns <= e)))
    if series.t_ns[0] > e or series.t_ns[-1] < s:
        return None
    queries = series.increase("prefix_cache_queries", s, e)
    hits = series.increase("prefix_cache_hits", s, e)
    out: dict[str, Any] = {
        "engine": series.engine,
        "scrapes": inside,
        "running": series.gauge("running", s, e),
        "waiting": series.gauge("waiting", s, e),
        "kv_cache_usage": series.gauge("kv_cache_usage", s, e),
        "prefix_cache_queries": queries,
        "prefix_cache_hits": hits,
        "prefix_cache_hit_rate": hits / queries if hits is not None and queries else None,
        "preemptions": series.increase("preemptions", s, e),
        "prompt_tokens": series.increase("prompt_tokens", s, e),
        "generation_tokens": series.increase("generation_tokens", s, e),
        "ttft_s": series.histogram("ttft", s, e),
        "queue_time_s": series.histogram("queue_time", s, e),
    }
    if extra:
        out["extra"] = {name: _extra(series, f"extra:{name}", s, e) for name in extra}
    return out


def _extra(series: ServerSeries, key: str, s: int, e: int) -> dict[str, Any] | None:
    if key in series.hists:
        return series.histogram(key, s, e)
    if key not in series.values:
        return None
    return {**(series.gauge(key, s, e) or {}), "increase": series.increase(key, s, e)}
