"""``--workers N``: N processes on this machine, each with its own event loop and client.

Every worker runs the same driver on its share of each step (``shard.py``), on the parent's
clock origin ``t0`` (``perf_counter_ns`` is the system-wide monotonic clock on Linux, so records
of all workers share one clock). All workers wait at a barrier before each step, so a step starts
together everywhere and never overlaps the previous one. Each writes ``requests.w<i>.jsonl``;
the parent merges them into ``requests.jsonl`` when all have ended.

Signals: workers ignore SIGINT (a terminal sends it to the whole process group); the parent turns
Ctrl-C or SIGTERM into one SIGTERM per worker, which stops its sends and starts its grace period.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from loadtest.analysis.events import Event
from loadtest.config.scenario import Scenario
from loadtest.config.steps import StepPlan
from loadtest.engine.driver import RunContext, RunPlan, Sinks, drive
from loadtest.engine.shard import worker_scenario, worker_steps
from loadtest.engine.signals import handled
from loadtest.engine.sinks import RunFiles
from loadtest.transport.loop import new_loop
from loadtest.workload.prompts import run_prompts

__all__ = ["run_local_workers", "share_context"]

_BARRIER_TIMEOUT_S = 3600.0  # a step may be long; a dead worker aborts the barrier sooner


def share_context(
    scenario: Scenario,
    i: int,
    n: int,
    *,
    base_url: str,
    key: str,
    sink: Callable[[Event], None],
    t0: int,
    before_step: Callable[[StepPlan], Awaitable[bool]],
) -> tuple[RunContext, list[StepPlan]]:
    """What worker ``i`` of ``n`` runs, wherever it runs (a process here, a Ray actor): its
    scenario, prompts and context, and its share of every step."""
    mine = worker_scenario(scenario, i)
    prompts, _ = run_prompts(mine, base_url, key)
    ctx = RunContext(
        RunPlan(scenario=mine, base_url=base_url, api_key=key, t0=t0, worker=i, workers=n),
        prompts,
        Sinks(sink, before_step),
    )
    return ctx, worker_steps(mine, n, i)


def _worker_main(
    i: int,
    n: int,
    scenario_json: dict[str, Any],
    base_url: str,
    key: str,
    files: RunFiles,
    t0: int,
    grace_s: float,
    barrier: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    recorder = files.recorder(i)
    loop = new_loop()
    asyncio.set_event_loop(loop)

    async def together(step: StepPlan) -> bool:
        try:
            await loop.run_in_executor(None, barrier.wait, _BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError:
            return False  # the run is stopping, or a worker died
        return True

    scenario = Scenario.model_validate(scenario_json)
    ctx, steps = share_context(
        scenario,
        i,
        n,
        base_url=base_url,
        key=key,
        sink=recorder,
        t0=t0,
        before_step=together,
    )
    try:
        loop.run_until_complete(drive(ctx, steps, grace_s=grace_s, stopped_by=[], signals=(signal.SIGTERM,)))
    finally:
        recorder.close()
        loop.close()


def run_local_workers(
    scenario: Scenario,
    base_url: str,
    key: str,
    files: RunFiles,
    *,
    t0: int,
    grace_s: float,
    warn: Callable[[str], None] | None = None,
) -> list[int]:
    """Run the scenario in ``scenario.load.workers`` processes; returns the signals that stopped it."""
    n = scenario.load.workers
    ctx = mp.get_context("spawn")  # never fork a process that may hold an event loop or threads
    barrier = ctx.Barrier(n)
    args = (scenario.model_dump(mode="json"), base_url, key, files, t0, grace_s, barrier)
    procs = [ctx.Process(target=_worker_main, args=(i, n, *args), name=f"loadtest-worker-{i}") for i in range(n)]
    stopped: list[int] = []

    def on_signal(sig: int, _frame: object) -> None:
        stopped.append(sig)  # a second signal: the workers' second SIGTERM cancels their in-flight requests
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        barrier.abort()

    with handled(on_signal):
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(0.2)
                if p.exitcode not in (None, 0) and not barrier.broken:
                    barrier.abort()  # a dead worker must not leave the others waiting at the next step
    files.merge_workers()
    for p in procs:
        if p.exitcode not in (0, None) and not stopped and warn is not None:
            warn(f"{p.name} exited with code {p.exitcode}; the run kept every request it recorded")
    return stopped[:1]
