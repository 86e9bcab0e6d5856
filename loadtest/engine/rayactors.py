"""The Ray actors of a ``--ray`` run (raycluster.py drives them from the head): the per-step barrier
(``Coordinator``) and the workers (``Worker``), each running the same driver as a ``--workers``
process on its own thread, event loop and client; and the clock arithmetic that places their
records on the head's timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections import deque
from typing import Any

import ray

from loadtest.analysis.events import Event, RequestDone, event_line
from loadtest.analysis.records import RequestRecord
from loadtest.config.scenario import Scenario
from loadtest.config.steps import StepPlan
from loadtest.engine.driver import Stopper, drive
from loadtest.engine.processes import share_context
from loadtest.transport.loop import new_loop

__all__ = ["DRAIN_TIMEOUT_S", "POLL_S", "Coordinator", "Flying", "Worker", "clock_offset_ns", "lost_record"]

POLL_S = 0.2  # how often the head collects records
START_LEAD_NS = 200_000_000  # a step starts this long after the last worker reached the barrier
DRAIN_TIMEOUT_S = 60.0  # a worker that does not answer for this long is counted lost

# (id, step, warmup, attempt, first_sent_ns, scheduled_ns, sent_ns, stream): an attempt in flight
Flying = tuple[int, int, bool, int, int | None, int | None, int, bool]


def clock_offset_ns(samples: list[tuple[int, int, int]]) -> tuple[int, int]:
    """The remote clock's offset (remote - local) and its round trip, from ``(local_before,
    remote, local_after)`` readings: the one with the shortest round trip, assuming the remote
    read its clock halfway (the error is at most half that round trip)."""
    before, remote, after = min(samples, key=lambda s: s[2] - s[0])
    return remote - (before + after) // 2, after - before


def lost_record(f: Flying, worker: int, end_ns: int) -> RequestRecord:
    """The record of an attempt that was in flight on a worker that died."""
    rid, step, warmup, attempt, first_sent, scheduled, sent, stream = f
    sent = sent or scheduled or end_ns
    return RequestRecord(
        id=rid,
        step=step,
        warmup=warmup,
        attempt=attempt,
        first_sent_ns=first_sent if first_sent is not None else sent,
        worker=worker,
        stream=stream,
        scheduled_ns=scheduled,
        sent_ns=sent,
        end_ns=max(end_ns, sent),
        status="error",
        error_class="worker_lost",
        error="the Ray worker sending this request died",
    )


@ray.remote(num_cpus=0)
class Coordinator:
    """The per-step barrier. Start times are on the head's run timeline: this actor's wall clock
    minus its offset against the head, minus the head's wall-clock time at the run's origin."""

    def __init__(self, parties: int, head_wall0_ns: int) -> None:
        self.parties, self.wall0, self.offset = parties, head_wall0_ns, 0
        self.arrived: dict[int, set[int]] = {}
        self.released: dict[int, asyncio.Event] = {}
        self.starts: dict[int, int] = {}
        self.lost: set[int] = set()
        self.aborted = False

    async def clock(self) -> int:
        return time.time_ns()

    async def set_offset(self, offset_ns: int) -> None:
        self.offset = offset_ns

    async def arrive(self, step: int, worker: int) -> int | None:
        """Wait until every live worker has arrived at ``step``; its start time, or None: stop."""
        if self.aborted:
            return None
        self.arrived.setdefault(step, set()).add(worker)
        event = self.released.setdefault(step, asyncio.Event())
        self._release_ready()
        await event.wait()
        return None if self.aborted else self.starts[step]

    async def lose(self, worker: int) -> None:
        self.lost.add(worker)
        self._release_ready()

    async def abort(self) -> None:
        self.aborted = True
        for event in self.released.values():
            event.set()

    def _release_ready(self) -> None:
        live = self.parties - len(self.lost)
        for step, event in self.released.items():
            if not event.is_set() and len(self.arrived[step] - self.lost) >= live:
                self.starts[step] = time.time_ns() - self.offset - self.wall0 + START_LEAD_NS
                event.set()


@ray.remote(max_concurrency=4)
class Worker:
    """One share of the load: the driver on a thread of its own, with its own uvloop loop.
    The head drains its record lines (and a snapshot of what is in flight) as it goes."""

    def __init__(self) -> None:
        self.out: deque[tuple[str, str, tuple[int, int] | None]] = deque()
        self.finished = False
        self.error: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopper: Stopper | None = None
        self.flying: dict[int, RequestRecord] = {}

    def clock(self) -> int:
        return time.time_ns()

    def where(self) -> dict[str, Any]:
        return {"node": ray.util.get_node_ip_address(), "host": socket.gethostname(), "pid": os.getpid()}

    def start(
        self,
        i: int,
        n: int,
        scenario_json: dict[str, Any],
        base_url: str,
        key: str,
        head_wall0_ns: int,
        offset_ns: int,
        grace_s: float,
        coordinator: Any,
    ) -> None:
        # t0 on this host's monotonic clock such that now - t0 reads as the head's run timeline
        perf, wall = time.perf_counter_ns(), time.time_ns()
        t0 = perf - ((wall - offset_ns) - head_wall0_ns)
        scenario = Scenario.model_validate(scenario_json)
        ready = threading.Event()
        args = (scenario, i, n, base_url, key, t0, grace_s, coordinator, ready)
        threading.Thread(target=self._run, args=args, name=f"loadtest-ray-worker-{i}", daemon=True).start()
        ready.wait()

    def _sink(self, event: Event) -> None:
        if (out := event_line(event)) is not None:
            key = (event.record.id, event.record.attempt) if isinstance(event, RequestDone) else None
            self.out.append((*out, key))

    def _run(
        self,
        scenario: Scenario,
        i: int,
        n: int,
        base_url: str,
        key: str,
        t0: int,
        grace_s: float,
        coordinator: Any,
        ready: threading.Event,
    ) -> None:
        loop = new_loop()
        asyncio.set_event_loop(loop)

        async def together(step: StepPlan) -> bool:
            start = await loop.run_in_executor(None, ray.get, coordinator.arrive.remote(step.index, i))
            return start is not None and await ctx.wait((start - ctx.now()) / 1e9)

        try:
            ctx, steps = share_context(
                scenario,
                i,
                n,
                base_url=base_url,
                key=key,
                sink=self._sink,
                t0=t0,
                before_step=together,
            )
            self.flying, self.loop = ctx.state.flying, loop
            self.stopper = Stopper(ctx, grace_s, [])
            ready.set()
            loop.run_until_complete(drive(ctx, steps, grace_s=grace_s, stopped_by=[], signals=(), stopper=self.stopper))
        except BaseException as e:  # reported to the head, which warns; the records so far are kept
            self.error = f"{type(e).__name__}: {e}"
        finally:
            ready.set()
            loop.close()
            self.finished = True

    def drain(self) -> dict[str, Any]:
        """New lines since the last drain, the attempts still in flight after them, and whether the
        worker is done. In flight is read before the lines: an attempt is in one or the other."""
        finished = self.finished
        flying = [
            (r.id, r.step, r.warmup, r.attempt, r.first_sent_ns, r.scheduled_ns, r.sent_ns, r.stream)
            for r in list(self.flying.values())
        ]
        lines: dict[str, list[str]] = {"requests": [], "steps": []}
        done: set[tuple[int, int]] = set()
        for _ in range(len(self.out)):
            stem, line, key = self.out.popleft()
            lines[stem].append(line)
            if key is not None:
                done.add(key)
        return {
            "lines": lines,
            "flying": [f for f in flying if (f[0], f[3]) not in done],
            "done": finished,
            "error": self.error,
        }

    def stop(self) -> None:
        """As a first, then a second Ctrl-C: stop sending and give in-flight requests the grace
        period, then cancel them."""
        if self.loop is not None and self.stopper is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self.stopper, signal.SIGTERM)
