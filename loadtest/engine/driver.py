"""Steps, arrival processes, workers, warmup and stop conditions. Emits events; never formats output.

Closed loop (``concurrency``): N workers, each sends its next request when the previous one ends.
Open loop (``rate``): send i is due at ``start + offset_i`` (fixed times, never ``sleep(interval)``),
its due time is recorded, so schedule lag (sent - due) is measured, not hidden. A trace step is an
open-loop step whose offsets come from the trace; a ramp moves the rate (or the users) along a line.
Conversations (``workload.sessions``) run in ``sessions.py``: users and conversations instead of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx2
import numpy as np

from loadtest.analysis.capacity import SaturationWatch
from loadtest.analysis.events import Event, RequestDone, StepFinished, StepStarted
from loadtest.analysis.records import RequestRecord
from loadtest.config.scenario import Scenario
from loadtest.config.steps import StepPlan, plan_steps, step_plan
from loadtest.config.tls import loaded_default_context, ssl_context
from loadtest.engine.retry import retry_delay_s
from loadtest.engine.sessions import run_sessions
from loadtest.engine.signals import STOP_SIGNALS, on_loop
from loadtest.engine.waitingtap import WaitingTap
from loadtest.transport.bodies import request_shape
from loadtest.transport.client import Endpoint, make_endpoint, send
from loadtest.workload.arrivals import arrival_offsets_ns, ramp_starts_s, step_offsets_ns
from loadtest.workload.prompts import PromptItem, PromptPool
from loadtest.workload.tools import ToolCall, follow_up
from loadtest.workload.trace import TracePool

__all__ = [
    "Event",
    "RequestDone",
    "RunContext",
    "RunPlan",
    "RunState",
    "Sinks",
    "StepFinished",
    "StepPlan",
    "StepStarted",
    "Stopper",
    "arrival_offsets_ns",
    "drive",
    "plan_steps",
    "run_steps",
    "step_plan",
]


@dataclass(frozen=True)
class RunPlan:
    """What a run is, fixed before it starts. ``t0`` is the run's perf_counter_ns origin."""

    scenario: Scenario
    base_url: str
    api_key: str
    t0: int
    transport: httpx2.AsyncBaseTransport | None = None  # tests inject httpx2.MockTransport
    worker: int = 0
    workers: int = 1  # request ids are worker, worker + workers, ...: unique across processes
    waiting: WaitingTap | None = None  # the server's waiting gauge, live (capacity search, one process)


@dataclass(frozen=True)
class Sinks:
    """Where the driver's output goes: every event, and a hook before each step (e.g. a barrier)."""

    events: Callable[[Event], None]
    before_step: Callable[[StepPlan], Awaitable[bool]] | None = None  # False stops the run


class RunState:
    """What changes while a run goes: the prompts handed out, request ids, the retry jitter's RNG,
    the attempts under way, and whether the run is stopping."""

    def __init__(self, plan: RunPlan, prompts: PromptPool) -> None:
        self.prompts = prompts  # request i of this process gets prompts[i]
        self.stop = asyncio.Event()
        self.flying: dict[int, RequestRecord] = {}  # attempts under way, by request id
        self._ids = itertools.count(plan.worker, plan.workers)
        self._prompt_i = itertools.count()
        self.conversations = itertools.count()  # this process's conversations (workload.sessions), in order
        self._jitter = np.random.default_rng(plan.scenario.workload.seed * 1009 + plan.worker)
        self.startup_cpu_s: float | None = None  # this process's CPU from its start to its first send


def _note_first_send(state: RunState) -> None:
    """The process's CPU time (all threads, since it started) as it sends its first request: what
    starting up cost (imports, the scenario, the client), summary.json's ``harness.startup_cpu_s``."""
    if state.startup_cpu_s is None:
        state.startup_cpu_s = time.process_time()


class RunContext:
    """A run as the driver sees it: its plan, its state and its sinks, and the few operations on them."""

    def __init__(self, plan: RunPlan, prompts: PromptPool, sinks: Sinks) -> None:
        self.plan, self.sinks = plan, sinks
        self.state = RunState(plan, prompts)
        self.shape = request_shape(plan.scenario.workload)  # tools, image detail, embeddings format

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet done (for a progress display)."""
        return len(self.state.flying)

    def emit(self, event: Event) -> None:
        self.sinks.events(event)

    def jitter(self) -> float:
        """A uniform [0, 1) number for retry jitter (seeded: a run is reproducible)."""
        return float(self.state._jitter.random())

    def now(self) -> int:
        return time.perf_counter_ns() - self.plan.t0

    def new_record(self, step: int, warmup: bool, scheduled_ns: int | None = None) -> RequestRecord:
        return RequestRecord(
            id=next(self.state._ids), step=step, warmup=warmup, worker=self.plan.worker, scheduled_ns=scheduled_ns
        )

    async def wait(self, seconds: float) -> bool:
        """Wait ``seconds`` (never less: uvloop may wake a sleep early) unless the run stops first.
        True when the time passed, False when the run is stopping."""
        stop = self.state.stop
        due = self.now() + int(seconds * 1e9)
        while (left := due - self.now()) > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), left / 1e9)
        return not stop.is_set()

    def next_prompt(self) -> PromptItem:
        return self.state.prompts[next(self.state._prompt_i)]


async def _send(
    ctx: RunContext,
    ep: Endpoint,
    rec: RequestRecord,
    prompt: PromptItem | None = None,
    headers: dict[str, str] | None = None,
    answer: list[str] | None = None,
    done: Callable[[RequestRecord], None] | None = None,
    calls: list[ToolCall] | None = None,
) -> RequestRecord:
    """One request: its attempts, each a record, with the retry policy's waits between them; then the
    turn answering its tool calls, when ``workload.tool_result`` says to. Returns the last attempt's
    record. ``prompt``: the next of the pool unless given (a conversation's turn); ``headers`` and
    ``answer``: see ``transport.client.send``; ``done``: sees the last attempt's record before it is out
    (a conversation marks the turn that ends it); ``calls``: gets the tool calls, which the caller then
    answers (a conversation's next turn) instead of this request."""
    prompt = prompt if prompt is not None else ctx.next_prompt()
    answered_here, calls = calls is None, calls if calls is not None else []
    while True:
        ctx.state.flying[rec.id] = rec  # until its record is out: a watcher sees it in flight or done, never neither
        calls.clear()
        try:
            await _attempt(ctx, ep, rec, prompt, headers, answer, calls)
            rec.first_sent_ns = rec.first_sent_ns if rec.first_sent_ns is not None else rec.sent_ns
            delay = None if ctx.state.stop.is_set() else retry_delay_s(ctx.plan.scenario.retry, rec, ctx.jitter())
            rec.final = delay is None
            if rec.final and done is not None:
                done(rec)
            ctx.emit(RequestDone(rec))
        finally:
            del ctx.state.flying[rec.id]
        if delay is None:
            if answered_here:
                await _answer_calls(ctx, ep, rec, prompt, calls)
            return rec
        if not await ctx.wait(delay):
            return rec  # stopping: the request ends with its last attempt (counted failed: no final answer)
        rec = RequestRecord(
            id=rec.id,
            step=rec.step,
            warmup=rec.warmup,
            attempt=rec.attempt + 1,
            worker=rec.worker,
            first_sent_ns=rec.first_sent_ns,
            session=rec.session,
            turn=rec.turn,
            session_turns=rec.session_turns,
            context_tokens=rec.context_tokens,
            tool_round=rec.tool_round,
        )


async def _answer_calls(
    ctx: RunContext, ep: Endpoint, rec: RequestRecord, prompt: PromptItem, calls: list[ToolCall]
) -> None:
    """One more turn (its own record, ``tool_round`` 1) answering each of the model's calls with
    ``workload.tool_result``; a turn that was itself an answer is not answered again."""
    result = ctx.plan.scenario.workload.tool_result
    if result is None or not calls or rec.status != "ok" or rec.tool_round or ctx.state.stop.is_set():
        return
    turn = follow_up(prompt, ctx.plan.scenario.target.api, calls, result)
    nxt = ctx.new_record(rec.step, rec.warmup)
    nxt.tool_round = 1
    await _send(ctx, ep, nxt, turn)


async def _attempt(
    ctx: RunContext,
    ep: Endpoint,
    rec: RequestRecord,
    prompt: PromptItem,
    headers: dict[str, str] | None = None,
    answer: list[str] | None = None,
    calls: list[ToolCall] | None = None,
) -> None:
    t, w = ctx.plan.scenario.target, ctx.plan.scenario.workload
    rec.group = prompt.group
    _note_first_send(ctx.state)
    try:
        await send(
            ep,
            rec,
            prompt,
            model=t.model,
            api=t.api,
            stream=w.stream,
            extra_body=w.extra_body or None,
            t0=ctx.plan.t0,
            timeout_s=t.timeout_s,
            encoding=t.tokenizer,
            headers=headers,
            answer=answer,
            shape=ctx.shape,
            calls=calls,
        )
    except asyncio.CancelledError:
        rec.status, rec.error_class, rec.error = "error", "cancelled", "cancelled by the harness"
        rec.end_ns = ctx.now()
        rec.first_sent_ns = rec.first_sent_ns if rec.first_sent_ns is not None else rec.sent_ns
        ctx.emit(RequestDone(rec))
        raise


async def _closed_loop(ctx: RunContext, ep: Endpoint, step: StepPlan) -> None:
    sends = itertools.count()
    total = step.warmup + step.requests if step.requests is not None else None
    duration_ns = int(step.duration_s * 1e9) if step.duration_s is not None else None
    measured_from: list[int] = []  # first measured send, for a timed step
    n = int(step.value)
    # load.ramp of concurrency: users join one by one along the line; else all at once
    starts = ramp_starts_s(int(step.ramp_from), n, step.ramp_s) if step.ramp_s is not None else [0.0] * n

    async def sender(start_s: float) -> None:  # one of the step's concurrent senders: the next request when one ends
        if start_s > 0 and not await ctx.wait(start_s):
            return
        while not ctx.state.stop.is_set():
            i = next(sends)
            if total is not None and i >= total:
                return
            warm = i < step.warmup
            if duration_ns is not None and not warm:
                now = ctx.now()
                if not measured_from:
                    measured_from.append(now)
                elif now - measured_from[0] >= duration_ns:
                    return
            await _send(ctx, ep, ctx.new_record(step.index, warm))

    await asyncio.gather(*(sender(s) for s in starts))


def _offsets_ns(ctx: RunContext, step: StepPlan) -> list[int]:
    """Due times of an open-loop step's sends: warmup at a constant rate, then the arrival process
    (its ramp, if any); a trace step's come from the trace (its value is the speedup)."""
    if step.mode == "trace":
        if not isinstance(ctx.state.prompts, TracePool):
            raise TypeError("a trace step needs the trace's prompts (build_prompts with trace=)")
        return ctx.state.prompts.offsets_ns(step.value, step.requests, step.duration_s)
    return step_offsets_ns(step, ctx.plan.scenario.workload.seed + step.index)


async def _open_loop(ctx: RunContext, ep: Endpoint, step: StepPlan) -> str | None:
    """An open-loop step; why it ended early when its saturation watch fired (else None)."""
    offsets = _offsets_ns(ctx, step)
    gate = asyncio.Semaphore(step.max_concurrency)
    tasks: set[asyncio.Task[None]] = set()
    start = ctx.now()
    tap = ctx.plan.waiting
    watch = None
    if step.watch_saturation:
        watch = SaturationWatch(step.value, (lambda: tap.since(start)) if tap is not None else None)

    async def one(rec: RequestRecord) -> None:
        async with gate:  # waiting here shows up as schedule lag: the client, not the server, limited
            if watch is not None and not rec.warmup:
                watch.send((ctx.now() - start) / 1e9)
            await _send(ctx, ep, rec)
            if watch is not None and not rec.warmup:
                watch.done((ctx.now() - start) / 1e9)

    for i, off in enumerate(offsets):
        due = start + off
        # uvloop rounds a delay to the nearest ms and may wake up to 0.5 ms early: sleep again until due.
        while (delay := due - ctx.now()) > 0:
            await asyncio.sleep(delay / 1e9)
        if ctx.state.stop.is_set() or (watch is not None and watch.check((ctx.now() - start) / 1e9)):
            break
        task = asyncio.get_running_loop().create_task(one(ctx.new_record(step.index, i < step.warmup, due)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks and watch is not None and watch.reason is not None:
        await _cut(tasks)  # past capacity: the queue would take long to drain, and its answers are known
    elif tasks:
        await asyncio.gather(*tasks)
    return watch.reason if watch is not None else None


async def _cut(tasks: set[asyncio.Task[None]]) -> None:
    """An over-saturated step ends now: its in-flight requests get SATURATION_GRACE_S, then are cancelled."""
    pending = set(tasks)
    _, late = await asyncio.wait(pending, timeout=SATURATION_GRACE_S)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)


LOOP_LAG_INTERVAL_S = 0.01
SATURATION_GRACE_S = 1.0


async def _sample_loop_lag(samples: list[float]) -> None:
    """Sleep 10 ms again and again; how late each wake-up comes is the event loop's lag: time the
    client spent on other work while a token or a send was due."""
    interval = LOOP_LAG_INTERVAL_S
    while True:
        t = time.perf_counter()
        await asyncio.sleep(interval)
        samples.append(max(0.0, (time.perf_counter() - t - interval) * 1e3))


async def run_steps(ctx: RunContext, steps: Iterable[StepPlan]) -> None:
    """Run every step in order; each gets a fresh client sized to its concurrency."""
    t = ctx.plan.scenario.target
    tls = ssl_context(**t.tls.model_dump())
    if tls is None and t.transport == "h1" and ctx.plan.base_url.startswith("https://"):
        # the default trust loaded here, once a process (the one the metrics and tokenize clients share):
        # left to each step's transport, it loaded the CAs (~0.1 s of CPU) at the step's first connection,
        # with the step's first requests in flight
        tls = loaded_default_context()
    for step in steps:
        before = ctx.sinks.before_step
        if ctx.state.stop.is_set() or (before is not None and not await before(step)):
            break
        if step.pause_s > 0 and not await ctx.wait(step.pause_s):
            break
        ep = make_endpoint(
            ctx.plan.base_url,
            ctx.plan.api_key,
            max_connections=step.connections,
            timeout_s=t.timeout_s,
            connect_timeout_s=t.connect_timeout_s,
            idle_timeout_s=t.idle_timeout_s,
            headers=t.headers,
            transport=ctx.plan.transport,
            stack=t.transport,
            ssl_context=tls,
            trust_env=t.base_url != "mock",  # the built-in mock is on 127.0.0.1: never through a proxy
        )
        started = ctx.now()
        ctx.emit(StepStarted(step, started))
        lag: list[float] = []
        saturation: str | None = None
        sampler = asyncio.get_running_loop().create_task(_sample_loop_lag(lag))
        try:
            match step.mode:
                case _ if ctx.plan.scenario.workload.sessions is not None:
                    await run_sessions(ctx, ep, step, _send)  # conversations: engine/sessions.py
                case "concurrency":
                    await _closed_loop(ctx, ep, step)
                case "rate" | "trace":
                    saturation = await _open_loop(ctx, ep, step)
        finally:
            sampler.cancel()
            await ep.close()
        ctx.emit(StepFinished(step, ctx.now(), started, tuple(lag), ctx.plan.worker, saturation))


class Stopper:
    """Stops a run the way Ctrl-C does: the first call stops new sends and gives in-flight requests
    ``grace_s``, a second one cancels them (they are recorded as ``cancelled``). Call it on the
    loop's thread (``loop.call_soon_threadsafe`` from elsewhere). ``stopped_by`` gets the first signal."""

    def __init__(self, ctx: RunContext, grace_s: float, stopped_by: list[int]) -> None:
        self.ctx, self.grace_s, self.stopped_by = ctx, grace_s, stopped_by
        self.task: asyncio.Task[None] | None = None

    def __call__(self, sig: int) -> None:
        if self.stopped_by:
            if self.task is not None:
                self.task.cancel()
            return
        self.stopped_by.append(sig)
        self.ctx.state.stop.set()
        if self.task is not None:
            asyncio.get_running_loop().call_later(self.grace_s, self.task.cancel)


async def drive(
    ctx: RunContext,
    steps: Iterable[StepPlan],
    *,
    grace_s: float,
    stopped_by: list[int],
    signals: tuple[int, ...] = STOP_SIGNALS,
    stopper: Stopper | None = None,
) -> None:
    """Run the steps; each of ``signals`` (or a call of ``stopper``) stops the run as ``Stopper`` says."""
    loop = asyncio.get_running_loop()
    stopper = stopper if stopper is not None else Stopper(ctx, grace_s, stopped_by)
    task = loop.create_task(run_steps(ctx, steps))
    stopper.task = task
    if stopper.stopped_by:  # stopped before the task existed
        loop.call_later(stopper.grace_s, task.cancel)
    with on_loop(loop, stopper, signals):
        try:
            await task
        except asyncio.CancelledError:
            if not stopper.stopped_by:
                raise
