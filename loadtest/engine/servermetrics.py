"""Reading the server's ``/metrics`` through a run (``server_metrics:``), beside the load, never in its way.

A thread of its own with its own connection (``transport/scrape.py``): the load's event loop and its
connection pool never wait for it, and it runs the same whether the load comes from this process,
worker processes or Ray actors. The first scrape, before the load starts, is the probe: a server
without metrics (404, 501, refused, JSON instead of Prometheus text, none of the known metrics) turns
scraping off with one line of notice (``enabled: true``: an error instead). Then every ``interval_s``,
and at once when poked (a step starting or ending), one GET; the lines of the known metric families
(``analysis/promtext.py``) are picked out of the answer and handed to the sink with its time on the
run's timeline, to be parsed when the run is analysed (parsing costs ~30x more than picking, and
would hold the GIL the load's event loop needs). A late or failed scrape is recorded as such and
never fails the run.

What is sent: the target's own auth (its key as a bearer token, its ``headers``) only when the metrics
URL has the target's scheme, host and port (llama-server with ``--api-key`` wants the key on
``/metrics``; vLLM and SGLang ask none), nothing to any other host. Nothing but the lines of
the known metric families is kept: no response header, no error text that could carry the URL's credentials.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx2

from loadtest.analysis.promtext import parse_metrics, prefilter, wanted_names
from loadtest.config.scenario import Scenario
from loadtest.config.secrets import redact_url, redacted, scrub, secret_values, shown_base_url
from loadtest.config.tls import ssl_context
from loadtest.transport.scrape import MetricsAnswer, MetricsClient, default_metrics_url, same_origin

__all__ = ["MetricsUnavailable", "Scraper", "metrics_request", "start_scraper"]

Sink = Callable[[dict[str, Any]], None]


class MetricsUnavailable(Exception):
    """The metrics URL gave no metrics; the message is one line without credentials."""


def metrics_request(scenario: Scenario, base_url: str, api_key: str) -> tuple[str, dict[str, str]]:
    """The URL to scrape and the headers to send it (the target's auth on the target's origin only)."""
    sm, t = scenario.server_metrics, scenario.target
    url = sm.url or default_metrics_url(base_url)
    if not same_origin(url, base_url):
        return url, {}
    headers = {"authorization": f"Bearer {api_key}"} if t.api_key_env is not None else {}
    return url, {**headers, **t.headers}


def _reason(answer: MetricsAnswer) -> str | None:
    """Why an answer holds no metrics (None: it may)."""
    if answer.status != 200:
        return f"HTTP {answer.status}"
    if "json" in answer.content_type.lower() or "html" in answer.content_type.lower():
        return f"answered {answer.content_type.split(';')[0]}, not Prometheus text"
    return None


def _no_metrics(kept: str) -> str | None:
    """Why the kept lines of an answer hold no metrics (None: they parse into some)."""
    try:
        families = parse_metrics(kept)
    except ValueError:
        return "not Prometheus text"
    return None if families else "none of the known metrics (vLLM, SGLang, llama.cpp, TGI)"


class Scraper:
    """Scrapes ``fetch`` on a thread of its own; ``t0``: the run's perf_counter_ns origin."""

    def __init__(self, fetch: Callable[[], MetricsAnswer], sink: Sink, *, t0: int, interval_s: float,
                 extra: tuple[str, ...] = (), close: Callable[[], None] | None = None,
                 hide: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.fetch, self.sink, self.t0, self.interval_s, self.close = fetch, sink, t0, interval_s, close
        self.hide = hide  # secrets a label may carry (a model name from a variable): [redacted] in what is kept
        self.wanted = wanted_names(extra)
        self.scrapes = self.failures = 0
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    def scrape(self, probe: bool = False) -> str | None:
        """One scrape, written to the sink; the reason it gave no metrics (None: it did). Its kept lines
        are parsed later (``loadtest report`` too), off the load's process time; a ``probe`` parses them now."""
        t = time.perf_counter_ns()
        try:
            answer = self.fetch()
        except httpx2.TimeoutException:
            reason = "no answer in time"
        except httpx2.ConnectError:
            reason = "could not connect"
        except Exception as e:  # any other failure of the request: TLS, a broken connection, a bad proxy
            reason = f"no answer ({type(e).__name__})"
        else:
            reason = _reason(answer)
        done = time.perf_counter_ns()
        line: dict[str, Any] = {"t_ns": (t + done) // 2 - self.t0, "took_ms": (done - t) / 1e6}
        if reason is None:
            line["text"] = scrub(prefilter(answer.text, self.wanted), self.hide)
            reason = _no_metrics(line["text"]) if probe else None
        if reason is not None:
            line["error"] = reason
            self.failures += 1
        else:
            self.scrapes += 1
        self.sink(line)
        return reason

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="loadtest-server-metrics", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Scrape now (a step starts or ends): counters read at the edges of a step."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            if self._stop.is_set():
                return
            self._wake.clear()
            self.scrape()

    def stop(self) -> None:
        """Stop the thread, then one last scrape (the counters at the end of the run)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.scrape()
        if self.close is not None:
            self.close()


def _secrets(scenario: Scenario, base_url: str, api_key: str) -> tuple[str, ...]:
    """What must not be kept from an answer: the target's secrets, and its model when it came from a
    variable (vLLM labels every metric with the served model's name)."""
    t = scenario.target
    values = list(secret_values(base_url, api_key if t.api_key_env is not None else "", t.headers))
    if redacted(scenario).target.model != t.model:
        values.append(t.model)
    return tuple(values)


def _shown_url(scenario: Scenario, base_url: str) -> str:
    """The metrics URL as files and messages show it: without credentials; the default one of a
    ``base_url`` that came from a variable as that variable's reference (``${BASE_URL}/metrics``)."""
    if scenario.server_metrics.url is not None:
        return redact_url(scenario.server_metrics.url)
    shown = shown_base_url(scenario, base_url)
    return redact_url(default_metrics_url(shown)) if shown.startswith(("http://", "https://")) else f"{shown}/metrics"


def start_scraper(
    scenario: Scenario, base_url: str, api_key: str, sink: Sink, *, t0: int, warn: Callable[[str], None] | None
) -> Scraper | None:
    """Probe the metrics URL and start scraping it (None: off, or nothing there; the sink has the status
    line either way). ``MetricsUnavailable`` when ``enabled: true`` and there is nothing."""
    sm, t = scenario.server_metrics, scenario.target
    if sm.enabled is False:
        return None
    url, headers = metrics_request(scenario, base_url, api_key)
    shown = _shown_url(scenario, base_url)
    client = MetricsClient(
        url,
        headers=headers,
        timeout_s=sm.timeout_s,
        ssl_context=ssl_context(**t.tls.model_dump()),
        trust_env=t.base_url != "mock",
    )
    scraper = Scraper(
        client.get,
        sink,
        t0=t0,
        interval_s=sm.interval_s,
        extra=tuple(sm.metrics),
        close=client.close,
        hide=_secrets(scenario, base_url, api_key),
    )
    status = {"status": "ok", "url": shown, "reason": None, "interval_s": sm.interval_s}
    probe: list[dict[str, Any]] = []
    scraper.sink = probe.append  # the status line goes first: hold the probe's scrape until it is known
    reason = scraper.scrape(probe=True)
    scraper.sink = sink
    if reason is not None:
        client.close()
        sink({**status, "status": "unavailable", "reason": reason})
        if sm.enabled is True:
            raise MetricsUnavailable(f"{shown}: {reason}")
        if warn is not None:
            warn(f"server metrics: {shown}: {reason}; the run goes on without them (server_metrics.enabled: false)")
        return None
    sink(status)
    sink(probe[0])
    scraper.start()
    return scraper
