"""One run, end to end: scenario -> (mock) -> driver on uvloop -> requests.jsonl -> summary.

Ctrl-C / SIGTERM stop new sends, give in-flight requests ``grace_s`` and then cancel them; the
summary of what completed is written, marked ``partial``.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
from rich.console import Console

from loadtest.analysis.checks import EXIT_HARNESS, EXIT_OK, EXIT_SLO, endpoint_unreachable
from loadtest.analysis.events import Event, StepFinished, StepStarted
from loadtest.analysis.live import LiveStep
from loadtest.analysis.summary import Run
from loadtest.config.loading import api_key
from loadtest.config.scenario import DatasetPrompt, Scenario, ScenarioError
from loadtest.config.secrets import shown_base_url
from loadtest.config.steps import plan_steps
from loadtest.config.tls import loaded_default_context
from loadtest.engine.driver import RunContext, RunPlan, Sinks, drive
from loadtest.engine.planner import StepPlanner
from loadtest.engine.processes import run_local_workers
from loadtest.engine.servermetrics import MetricsUnavailable, start_scraper
from loadtest.engine.waitingtap import WaitingTap
from loadtest.output.history import append_history
from loadtest.output.progress import LiveProgress
from loadtest.output.rundir import RunFiles, analyze, new_run_dir, write_scenario, write_summary
from loadtest.output.servermetrics import ServerMetricsFile
from loadtest.transport.errors import first_line
from loadtest.transport.loop import new_loop
from loadtest.transport.netconn import ProxyUnsupported, proxy_route
from loadtest.workload.prompts import CyclePool, PromptPool, dataset_info, fix_run_nonces, run_prompts
from loadtest.workload.tokens import TokenizerError, token_source, tokenizer_problem

__all__ = [
    "RunOutcome",
    "execute",
]

_SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class RunOutcome:
    run: Run
    exit_code: int
    message: str | None = None  # one line for the user when the run could not measure anything

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def summary(self) -> dict[str, Any]:
        return self.run.summary


@contextlib.contextmanager
def _endpoint(scenario: Scenario) -> Iterator[str]:
    if scenario.target.base_url != "mock":
        yield scenario.target.base_url
        return
    from loadtest.mock import start_mock  # here: a run against a real endpoint never imports the mock

    with start_mock(scenario.target.mock) as mock:
        yield mock.base_url


def _route_through_proxy(scenario: Scenario, source: str, warn: Callable[[str], None] | None) -> None:
    """Say when the environment's proxy carries the requests (never silently), switching to the
    aiohttp transport for a proxy that h1 does not speak; the built-in mock is never proxied."""
    target = scenario.target
    if target.base_url == "mock":
        return
    try:
        target.transport, notice = proxy_route(target.base_url, target.transport)  # type: ignore[assignment]
    except ProxyUnsupported as e:
        raise ScenarioError(f"{source}: target.base_url: {e}") from None
    if notice and warn is not None:
        warn(notice)


def _ray_backend(source: str) -> ModuleType:
    """The Ray backend, or a one-line error saying how to install it."""
    try:
        from loadtest.engine import raycluster
    except ImportError as e:
        if (e.name or "").split(".")[0] != "ray":
            raise
        raise ScenarioError(
            f"{source}: distributed: Ray is not installed; install it with: pip install 'loadtest[ray]'"
        ) from None
    return raycluster


def _check_tokenizers(scenario: Scenario, source: str) -> None:
    """A tokenizer that is not here is a one-line error before anything is written (never a download)."""
    t = scenario.target
    if (problem := tokenizer_problem(t.tokenizer)) is not None:
        raise ScenarioError(f"{source}: target.tokenizer: {problem}")
    mock = t.mock.tokenizer
    if t.base_url == "mock" and mock is not None:
        if token_source(mock) != "hf":
            raise ScenarioError(f"{source}: target.mock.tokenizer: expected a tokenizer.json, got {mock!r}")
        if (problem := tokenizer_problem(mock)) is not None:
            raise ScenarioError(f"{source}: target.mock.tokenizer: {problem}")


def _load_default_trust(scenario: Scenario, source: str) -> None:
    """An https target on the h1 transport with no ``target.tls`` files: the default trust's CAs loaded
    now (the driver's steps reuse it), so that a CA bundle that cannot be read (``SSL_CERT_FILE``,
    ``SSL_CERT_DIR``) is a one-line error before anything is written, not a failure inside the run."""
    t = scenario.target
    default_trust = t.tls.verify and t.tls.ca_file is None and t.tls.client_cert is None  # ssl_context(): None
    if t.transport != "h1" or not t.base_url.startswith("https://") or not default_trust:
        return
    try:
        loaded_default_context()
    except OSError as e:  # ssl.SSLError is one: a file that is not PEM certificates
        raise ScenarioError(
            f"{source}: target: cannot load the CA certificates to verify https with (SSL_CERT_FILE or "
            f"SSL_CERT_DIR, when set, must name readable PEM certificates): {e.strerror or e.__class__.__name__}"
        ) from None


def _prompts(scenario: Scenario, base_url: str, key: str, source: str) -> tuple[PromptPool, str | None]:
    try:
        return run_prompts(scenario, base_url, key)
    except TokenizerError as e:  # e.g. no tokenize route at the endpoint: one line naming the file
        raise ScenarioError(f"{source}: {e}") from None


def _say_tokenizer(summary: dict[str, Any], warn: Callable[[str], None] | None) -> None:
    """Once per run: counts that came from a tokenizer only assumed to be the model's."""
    tok = summary["tokenizer"]
    counted = sum(s.get("tokens_source", {}).get(tok["source"], 0) for s in summary["steps"])
    if warn is not None and tok["assumed"] and counted:
        warn(
            f"{counted} requests without usage were counted with {tok['name']}, which is not the tokenizer of "
            f"model {summary['target']['model']!r}; set target.tokenizer to its tokenizer.json, its Hugging Face "
            "model id (from the local cache) or server"
        )


def _watch_server(
    scenario: Scenario,
    base_url: str,
    key: str,
    run_dir: Path,
    t0: int,
    source: str,
    warn: Callable[[str], None] | None,
    stack: contextlib.ExitStack,
) -> list[Callable[[Event], None]]:
    """Start scraping the server's metrics into server_metrics.jsonl (stopped when ``stack`` closes);
    the observer that asks for a scrape as each step starts and ends (none when nothing is scraped)."""
    if scenario.server_metrics.enabled is False:
        return []
    out = ServerMetricsFile(run_dir)
    stack.callback(out.close)
    tap = WaitingTap(out)  # the waiting gauge, live: the capacity search's saturation watch reads it
    try:
        scraper = start_scraper(scenario, base_url, key, tap.write, t0=t0, warn=warn)
    except MetricsUnavailable as e:
        raise ScenarioError(f"{source}: server_metrics: {e}") from None
    if scraper is None:
        return []
    stack.callback(scraper.stop)

    def at_step_edges(event: Event) -> None:
        if isinstance(event, StepStarted | StepFinished):
            scraper.poke()

    return [at_step_edges, tap]


@dataclass(frozen=True)
class _Options:
    """How the caller wants the run driven and shown (execute's keyword arguments)."""

    on_step: Callable[[dict[str, Any]], None]
    grace_s: float
    transport: httpx2.AsyncBaseTransport | None
    warn: Callable[[str], None] | None
    observers: Sequence[Callable[[Event], None]]
    live: Console | None
    report: bool


@dataclass
class _Measured:
    """What the load phase leaves: where, since when, against what, and whether a signal stopped it."""

    run_dir: Path
    started: datetime
    base_url: str
    stopped_by: list[int]
    route: str | None  # the tokenize route that answered (target.tokenizer: server)
    dataset: dict[str, Any] | None = None  # workload.prompt.dataset: the file's sha256, rows kept and dropped
    startup_cpu_s: float | None = None  # one process: its CPU from start to the first request sent


def execute(
    scenario: Scenario,
    source: str,
    out_parent: Path,
    *,
    on_step: Callable[[dict[str, Any]], None],
    grace_s: float = 5.0,
    transport: httpx2.AsyncBaseTransport | None = None,
    warn: Callable[[str], None] | None = None,
    observers: Sequence[Callable[[Event], None]] = (),
    live: Console | None = None,
    report: bool = True,
) -> RunOutcome:
    """Run a scenario into a new run directory under ``out_parent``. ``live``: a terminal console
    to draw live progress on (one process only; with workers the step lines come at the end)."""
    opts = _Options(on_step, grace_s, transport, warn, tuple(observers), live, report)
    key = api_key(scenario, source)  # fail before anything is written when the variable is missing
    scenario = fix_run_nonces(scenario)  # recorded in scenario.yaml; the same for every worker
    _route_through_proxy(scenario, source, warn)
    _check_tokenizers(scenario, source)
    _load_default_trust(scenario, source)
    cluster = _ray_backend(source) if scenario.distributed is not None else None
    measured = _measure(scenario, source, out_parent, key, cluster, opts)
    run, drawn = _write_results(scenario, measured, opts)
    if scenario.workers > 1 or cluster is not None:
        for s in run.summary["steps"]:
            on_step(s)
    if not drawn:
        msg = f"interrupted while drawing the report; results kept (`loadtest report {run.run_dir}` draws it)"
        return RunOutcome(run, _SIGNAL_EXIT[signal.SIGINT], msg)
    return _outcome(scenario, source, run, measured)


def _measure(
    scenario: Scenario, source: str, out_parent: Path, key: str, cluster: ModuleType | None, opts: _Options
) -> _Measured:
    """The load phase: a new run directory, the endpoint (the built-in mock started), the steps sent
    here, by worker processes or by Ray actors."""
    here = scenario.workers == 1 and cluster is None
    by_server = scenario.target.tokenizer == "server"  # counted by the endpoint: built once it is up
    dataset = isinstance(scenario.workload.prompt, DatasetPrompt)  # read here too: summary.json describes it
    build_here = (here or dataset) and not by_server
    prompts, route = _prompts(scenario, "", key, source) if build_here else (CyclePool([]), None)
    dist = scenario.distributed
    # Ray first: a cluster that cannot be reached is a one-line error before anything is written
    session = cluster.connected(dist, source, opts.warn) if cluster and dist else contextlib.nullcontext()
    with session:
        started = datetime.now(timezone.utc)
        run_dir = new_run_dir(out_parent, scenario.name, started)
        write_scenario(run_dir, scenario)
        stopped_by: list[int] = []
        startup_cpu_s = None
        with _endpoint(scenario) as base_url, contextlib.ExitStack() as stack:
            if by_server:  # with workers, each builds its own; this finds the route early, once
                built, route = _prompts(scenario, base_url, key, source)
                prompts = built if here or dataset else prompts
            t0 = time.perf_counter_ns()
            edges = _watch_server(scenario, base_url, key, run_dir, t0, source, opts.warn, stack)
            if here:
                startup_cpu_s = _run_here(scenario, base_url, key, prompts, run_dir, t0, stopped_by, opts, edges)
            else:  # shares of each step: Ray actors or local processes
                run_shares = functools.partial(cluster.run_ray_workers, source=source) if cluster else run_local_workers
                try:
                    stopped_by = run_shares(
                        scenario, base_url, key, RunFiles(run_dir), t0=t0, grace_s=opts.grace_s, warn=opts.warn
                    )
                except KeyboardInterrupt:  # a second Ctrl-C while Ray was still starting the actors
                    stopped_by = [signal.SIGINT]
    return _Measured(run_dir, started, base_url, stopped_by, route, dataset_info(prompts), startup_cpu_s)


def _write_results(scenario: Scenario, m: _Measured, opts: _Options) -> tuple[Run, bool]:
    """Summary, history and report, all recomputed from the records on disk; and whether the report
    was not interrupted (a Ctrl-C while it is drawn: False)."""
    (m.run_dir / "requests.jsonl").touch()  # a run stopped before its first request: no records, still a run
    run = analyze(
        m.run_dir,
        scenario,
        started_at=m.started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        partial=bool(m.stopped_by),
        base_url=shown_base_url(scenario, m.base_url),
        warn=opts.warn,
    )
    if m.route is not None:
        run.summary["tokenizer"]["route"] = m.route
    if m.dataset is not None:
        run.summary["dataset"] = m.dataset
    run.summary["harness"] = {"startup_cpu_s": m.startup_cpu_s}  # known at run time only
    _say_tokenizer(run.summary, opts.warn)
    write_summary(m.run_dir, run.summary)
    append_history(run.summary, m.run_dir)  # before the report: a Ctrl-C while it is drawn keeps the line
    return run, _render_report(run, opts.warn) if opts.report else True


def _outcome(scenario: Scenario, source: str, run: Run, m: _Measured) -> RunOutcome:
    """The exit code: interrupted, the endpoint never reached, or the SLOs' verdict."""
    summary = run.summary
    if m.stopped_by:
        return RunOutcome(run, _SIGNAL_EXIT.get(m.stopped_by[0], 130), "interrupted; partial results")
    sent = sum(s["requests"]["sent"] for s in summary["steps"])
    if sent and all(endpoint_unreachable(s) for s in summary["steps"] if s["requests"]["sent"]):
        msg = (
            f"{source}: target.base_url: endpoint unreachable ({sent} of {sent} "
            f"requests failed to connect to {shown_base_url(scenario, m.base_url)})"
        )
        return RunOutcome(run, EXIT_HARNESS, msg)
    return RunOutcome(run, EXIT_OK if summary["slo"]["passed"] else EXIT_SLO)


def _render_report(run: Run, warn: Callable[[str], None] | None) -> bool:
    """Plots and report.html from the run just analyzed (Pillow charts: ~0.3 s CPU for a sweep); False
    when a Ctrl-C stopped the drawing. A report that cannot be drawn costs a warning, never the run:
    `loadtest report` retries it."""
    from loadtest.output.htmlreport import write_report

    try:
        write_report([run], run.run_dir)
    except KeyboardInterrupt:
        return False
    except Exception as e:  # any drawing failure (the old child process caught all): records and summary are on disk
        if warn is not None:
            warn(f"{run.run_dir}: the report could not be drawn ({first_line(e)}); `loadtest report` retries it")
    return True


def _run_here(
    scenario: Scenario,
    base_url: str,
    key: str,
    prompts: PromptPool,
    run_dir: Path,
    t0: int,
    stopped_by: list[int],
    opts: _Options,
    edges: Sequence[Callable[[Event], None]] = (),
) -> float | None:
    """The whole run on this process's event loop; ``edges``: observers of step starts and ends (the
    server-metrics scraper's). Returns the process's CPU seconds at its first send (None: none sent)."""
    recorder = RunFiles(run_dir).recorder()
    step = LiveStep()  # fed once per event, first; the planner, the step lines and the display read it
    planner = StepPlanner(scenario, step)  # the fixed sweep, or limit discovery choosing as it goes
    live = opts.live
    unit = "conversations" if scenario.workload.sessions is not None else "requests"
    steps = plan_steps(scenario.load)
    progress = LiveProgress(steps, live, lambda: ctx.in_flight, step, unit) if live is not None else None
    watchers = [planner, *opts.observers, *edges] + ([progress] if progress is not None else [])

    def sink(event: Event) -> None:
        recorder(event)
        step(event)
        if isinstance(event, StepFinished) and step.last is not None:
            opts.on_step(step.last)
        for observe in watchers:
            observe(event)

    loop = new_loop()
    tap = next((e for e in edges if isinstance(e, WaitingTap)), None)
    plan = RunPlan(scenario, base_url, key, t0, opts.transport, waiting=tap)
    ctx = RunContext(plan, prompts, Sinks(sink))
    try:
        with progress if progress is not None else contextlib.nullcontext():
            loop.run_until_complete(drive(ctx, planner.steps(), grace_s=opts.grace_s, stopped_by=stopped_by))
    finally:
        loop.close()
        recorder.close()
    return ctx.state.startup_cpu_s
