"""A limit discovery's evidence and what it says about a rate limiter. Pure estimators.

A limiter is a token bucket (docs/DESIGN.md §3, §8): it holds at most a capacity, refills at R per
second, and admits a request when it holds the request's charge (1 request; prompt + max_tokens
tokens, as OpenAI charges at admission). Its two numbers are measured like this:

- Sustainable rate (the refill R), from 429s: once a 429 has come the bucket is empty, and while
  the offered rate stays above R it stays (nearly) empty, so what is admitted between two 429s of
  a step is R times the time between them, give or take one charge.
- The same from headers: while the bucket is neither full nor empty, the advertised remaining
  plus everything charged so far grows at exactly R (sending at x while remaining falls at s:
  R = x - s). Fitted over the drain, before the first 429, so it does not reuse the 429 evidence.
- Burst capacity, from 429s: what a full bucket admitted until the first 429, less the refill
  meanwhile: the largest A(t0, t1) - R (t1 - t0) over start times t0 (a queue's Lindley recursion:
  exact when the bucket was full at some t0). From headers: the fullest the bucket was seen
  (remaining + the charge of the request that saw it).

Every request of the run is kept (warmup and retries too: the server charged them all), sorted
by send time, which stands in for the server's admission time.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from loadtest.analysis.ratelimit import limit_named, parse_ratelimit, parse_ratelimit_windows
from loadtest.analysis.records import RequestRecord

__all__ = [
    "CONCLUSIVE",
    "JUDGE_MIN",
    "KINDS",
    "SHALLOW",
    "Findings",
    "Frame",
    "HeaderFit",
    "ProbeSeries",
    "Window",
    "findings",
    "judge",
]

KINDS = ("requests", "tokens")
# A steady window shows the refill when at least this share of its requests was refused (the
# offered rate was at least twice what was admitted). A shallower overload is ambiguous: a bucket
# of a few requests refuses bursts of Poisson arrivals below its refill (at 2.5 requests deep and
# the rate at the refill, a fifth are refused and only 80% of the refill admitted; at twice the
# refill, 97%). A deep bucket's refusals mean it is empty at any overload, but its depth is not
# known when a window is judged.
CONCLUSIVE = 0.5
JUDGE_MIN = 10  # requests in a window before its share of 429s is judged
SHALLOW = 2.0  # a bucket admitting fewer requests than this is measured at the highest rate only
_UNANSWERED, _ADMITTED, _THROTTLED = 0, 1, 2


@dataclass(frozen=True)
class Frame:
    """The series as numpy arrays, sorted by send time (seconds since the run's start)."""

    t: np.ndarray
    step: np.ndarray
    admitted: np.ndarray  # answered with anything but a 429: the server charged it
    throttled: np.ndarray  # answered 429
    charge: dict[str, np.ndarray]  # per kind, what each request was charged (0 when it was not admitted)
    remaining: dict[str, np.ndarray]  # per kind, the remaining its response advertised (nan: none)


class ProbeSeries:
    """Every request of a limit discovery, a few numbers each (compact arrays, not records)."""

    def __init__(self, max_tokens: int | None) -> None:
        self.max_tokens = max_tokens  # tokens charged = prompt + max_tokens (the output when unset)
        self._step, self._state = array("q"), array("b")
        self._sent, self._input, self._output = array("d"), array("d"), array("d")
        self._remaining = {k: array("d") for k in KINDS}
        self.windows: dict[str, str] = {}  # kind -> the window its remaining is over
        self.advertised: dict[tuple[str, str], dict[str, Any]] = {}  # every window, as last advertised
        self._advertised_ns = -1
        self.named: Counter[str] = Counter()  # the kinds that 429 messages named
        self.throttled_steps: set[int] = set()

    def __len__(self) -> int:
        return len(self._sent)

    def add(self, r: RequestRecord) -> None:
        throttled = r.error_class == "http_429"
        self._state.append(_THROTTLED if throttled else _ADMITTED if r.http_status is not None else _UNANSWERED)
        self._step.append(r.step)
        self._sent.append(r.sent_ns / 1e9)
        self._input.append(math.nan if r.input_tokens is None else r.input_tokens)
        self._output.append(math.nan if r.output_tokens is None else r.output_tokens)
        parsed = parse_ratelimit(r.ratelimit)
        for kind in KINDS:
            value = (parsed.get(kind) or {}).get("remaining")
            self._remaining[kind].append(math.nan if value is None else float(value))
            if kind in parsed:
                self.windows[kind] = parsed[kind]["window"]
        if r.ratelimit and r.end_ns >= self._advertised_ns:
            self.advertised, self._advertised_ns = parse_ratelimit_windows(r.ratelimit), r.end_ns
        if throttled:
            self.throttled_steps.add(r.step)
            if named := limit_named(r.error):
                self.named[named[0]] += 1

    def tee(self, records: Iterable[RequestRecord]) -> Iterator[RequestRecord]:
        for r in records:
            self.add(r)
            yield r

    def tokens_per_request(self) -> float:
        """The mean token charge of an admitted request (0 when none was admitted)."""
        f = self.frame()
        return float(f.charge["tokens"][f.admitted].mean()) if f.admitted.any() else 0.0

    def frame(self) -> Frame:
        order = np.argsort(np.asarray(self._sent), kind="stable")
        state = np.asarray(self._state, dtype=np.int8)[order]
        admitted = state == _ADMITTED
        prompt = np.asarray(self._input)[order]
        known = prompt[~np.isnan(prompt)]
        prompt = np.where(np.isnan(prompt), known.mean() if len(known) else 0.0, prompt)
        if self.max_tokens is not None:
            tokens = prompt + self.max_tokens
        else:
            tokens = prompt + np.nan_to_num(np.asarray(self._output)[order])
        return Frame(
            t=np.asarray(self._sent)[order],
            step=np.asarray(self._step, dtype=np.int64)[order],
            admitted=admitted,
            throttled=state == _THROTTLED,
            charge={"requests": admitted.astype(float), "tokens": np.where(admitted, tokens, 0.0)},
            remaining={k: np.asarray(self._remaining[k])[order] for k in KINDS},
        )


@dataclass(frozen=True)
class Window:
    """Between the first and the last 429 of one step: the bucket was empty at both ends."""

    step: int
    rate: float  # what the step offered, requests/s (nan when not known)
    start: float
    end: float
    admitted: dict[str, float]  # requests and tokens charged inside
    throttled: int


def judge(windows: list[Window]) -> tuple[bool, bool]:
    """(judged: enough requests to say, clear: the offered rate was clearly above the refill)."""
    refused = sum(w.throttled for w in windows)
    n = refused + sum(w.admitted["requests"] for w in windows)
    return n >= JUDGE_MIN, n >= JUDGE_MIN and refused >= CONCLUSIVE * n


@dataclass(frozen=True)
class HeaderFit:
    """One bucket as its advertised remaining showed it."""

    capacity: float  # the fullest it was seen: remaining + the charge of the request that saw it
    remaining: float  # the last remaining seen
    falling: float  # how fast the level fell during the last step, per second (<= 0: it did not)
    refill: float | None = None  # per second, fitted over the drain; None: it never drained enough
    fitted_s: float = 0.0


@dataclass(frozen=True)
class Findings:
    start: float  # when the probe started (on a full bucket)
    first_429: float | None
    first_429_step: int | None = None
    tokens_per_request: float = 0.0  # the mean token charge of an admitted request
    windows: list[Window] = field(default_factory=list)  # the steady windows the refill rests on
    every_window: list[Window] = field(default_factory=list)  # those and the ones at rates judged unclear
    conclusive: bool = False  # every one of them was judged and refused at least CONCLUSIVE of its requests
    burst: dict[str, float] | None = None  # from 429s
    fits: dict[str, HeaderFit] = field(default_factory=dict)  # from headers, per kind
    binding: str | None = None

    @property
    def verified_s(self) -> float:
        return sum(w.end - w.start for w in self.windows)

    def at_rate(self, rate: float) -> list[Window]:
        return [w for w in self.every_window if w.rate == rate]

    @property
    def throttled_share(self) -> float:
        n = sum(w.throttled + w.admitted["requests"] for w in self.windows)
        return sum(w.throttled for w in self.windows) / n if n else 0.0

    def refill(self, kind: str) -> float | None:
        """Admitted per second in the steady windows (429 evidence); None without a window."""
        s = self.verified_s
        return sum(w.admitted[kind] for w in self.windows) / s if s > 0 else None


def probe_start(f: Frame) -> float:
    """The first send; when the first step already met 429s (its bucket was not full), the first
    send after that step (the planner waited for the bucket to refill)."""
    if not len(f.t):
        return math.inf
    first = f.step.min()
    if not f.throttled[f.step == first].any():
        return float(f.t[0])
    later = f.t[f.step > first]
    return float(later.min()) if len(later) else math.inf


def steady_windows(f: Frame, since: float, rates: dict[int, float]) -> list[Window]:
    out = []
    hit = f.throttled & (f.t >= since)
    for step in np.unique(f.step[hit]):
        in_step = f.step == step
        times = f.t[in_step & hit]
        if len(times) < 2:
            continue
        a, b = float(times[0]), float(times[-1])
        inside = in_step & (f.t > a) & (f.t <= b)
        admitted = {k: float(f.charge[k][inside].sum()) for k in KINDS}
        out.append(Window(int(step), rates.get(int(step), math.nan), a, b, admitted, int((inside & f.throttled).sum())))
    return out


def burst(f: Frame, since: float, until: float, refill: dict[str, float]) -> dict[str, float]:
    """What a full bucket admitted from ``since`` to the first 429 at ``until``, less the refill."""
    m = f.admitted & (f.t >= since) & (f.t < until)
    t = f.t[m]
    out = {}
    for kind in KINDS:
        charged = f.charge[kind][m]
        after = np.cumsum(charged[::-1])[::-1]  # charged from each send until the first 429
        out[kind] = max(0.0, float((after - refill[kind] * (until - t)).max())) if len(t) else 0.0
    return out


def header_fit(f: Frame, kind: str, since: float, until: float) -> HeaderFit | None:
    rem = f.remaining[kind]
    m = ~np.isnan(rem) & (f.t >= since) & (f.t <= until) & (f.admitted | f.throttled)
    if m.sum() < 2:
        return None
    charge = f.charge[kind]
    t, level = f.t[m], (rem + charge)[m]  # the level each request found, before its own charge
    y = rem[m] + np.cumsum(charge)[m]  # remaining + all charged so far: grows at R unless full or empty
    capacity = float(level.max())
    charges = charge[m & f.admitted]
    tol = max(1.0, float(np.median(charges))) if len(charges) else 1.0
    start = int(np.flatnonzero(level >= capacity - tol)[-1])  # the last time it was seen full
    refill, fitted = None, float(t[-1] - t[start])
    if len(t) - start >= 8 and fitted >= 0.5 and level[start] - level[-1] >= 2 * tol:
        refill = max(0.0, float(np.polyfit(t[start:], y[start:], 1)[0]))
    last = f.step[m] == f.step[m][-1]
    falling = 0.0
    if last.sum() >= 3 and np.ptp(t[last]) > 0:
        falling = -float(np.polyfit(t[last], level[last], 1)[0])
    return HeaderFit(capacity, float(rem[m][-1]), falling, refill, fitted if refill is not None else 0.0)


def binding(f: Frame, since: float, named: Counter[str]) -> str | None:
    """The limit that refused: the kind whose advertised level sat lowest, counted in charges,
    once 429s came (under two charges); else the kind most 429 messages named."""
    levels = {}
    for kind in KINDS:
        m = ~np.isnan(f.remaining[kind]) & (f.t >= since)
        charges = f.charge[kind][f.admitted]
        if m.any() and len(charges):
            levels[kind] = float(np.median(f.remaining[kind][m])) / max(1.0, float(np.median(charges)))
    if levels and min(levels.values()) < 2:
        return min(levels, key=lambda k: levels[k])
    return named.most_common(1)[0][0] if named else None


def findings(series: ProbeSeries, rates: dict[int, float] | None = None) -> Findings:
    """Everything the series says about the limiter so far (the planner asks after each step).
    ``rates``: each step's offered rate; the steady windows of one rate are judged together."""
    f = series.frame()
    start = probe_start(f)
    hit = np.flatnonzero(f.throttled & (f.t >= start))
    first = float(f.t[hit[0]]) if len(hit) else None
    fits = {k: fit for k in KINDS if (fit := header_fit(f, k, start, first if first is not None else math.inf))}
    per_request = float(f.charge["tokens"][f.admitted].mean()) if f.admitted.any() else 0.0
    if first is None:
        return Findings(start, None, tokens_per_request=per_request, fits=fits)
    windows = steady_windows(f, first, rates or {})
    groups: dict[float, list[Window]] = {}
    for w in windows:
        groups.setdefault(w.rate if rates else float(w.step), []).append(w)
    clear = [w for group in groups.values() if judge(group)[1] for w in group]
    found = Findings(
        start,
        first,
        int(f.step[hit[0]]),
        per_request,
        clear or windows,
        windows,
        bool(clear),
        fits=fits,
        binding=binding(f, first, series.named),
    )
    refill = {k: found.refill(k) for k in KINDS}
    if any(v is None for v in refill.values()):
        return found
    found = replace(found, burst=burst(f, start, first, refill))  # type: ignore[arg-type]
    top = max(groups, key=lambda g: (g, len(groups[g])))
    if found.burst is not None and found.burst["requests"] < SHALLOW and found.windows != groups[top]:
        # a shallow bucket wastes refill between bursty arrivals, less the faster they come
        found = replace(found, windows=groups[top], conclusive=judge(groups[top])[1])
        refill = {k: found.refill(k) for k in KINDS}
        found = replace(found, burst=burst(f, start, first, refill))  # type: ignore[arg-type]
    return found
