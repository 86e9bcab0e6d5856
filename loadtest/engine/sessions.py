"""Conversations on the driver (``workload.sessions``): users instead of single requests.

Closed loop (``concurrency``): each unit of concurrency is a user who runs one conversation after
another: send a turn, wait for the whole answer, think, send the next turn with the answer in its
history. Open loop (``rate``): conversations start at the step's arrival times (each turn after
the first follows its own answer and think time), and ``max_concurrency`` caps the turns in flight.
A step's ``requests`` and ``warmup_requests`` count conversations. A failed turn ends its
conversation (its record says why); the user then starts the next one. A timed step sends no
turn after its end (a conversation cut there is counted as cut, not failed). Think time runs from
the answer's last byte (a fixed due time, never a sleep after the bookkeeping).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import numpy as np

from loadtest.analysis.records import RequestRecord
from loadtest.config.steps import StepPlan
from loadtest.transport.client import Endpoint
from loadtest.workload.arrivals import arrival_offsets_ns
from loadtest.workload.prompts import PromptItem
from loadtest.workload.sessions import History, SessionPool, session_id

if TYPE_CHECKING:
    from loadtest.engine.driver import RunContext

__all__ = ["run_sessions"]

# driver._send: one request with its retries; returns the last attempt's record
Send = Callable[
    ["RunContext", Endpoint, RequestRecord, PromptItem, dict[str, str], list[str]], Awaitable[RequestRecord]
]


async def run_sessions(ctx: RunContext, ep: Endpoint, step: StepPlan, send: Send) -> None:
    """Run one step of conversations: users (closed loop) or conversation starts at the rate (open loop)."""
    runner = _Conversations(ctx, ep, step, send)
    if step.mode == "concurrency":
        await runner.users()
    else:
        await runner.arrivals()


class _Conversations:
    """One step's conversations: who sends, until when, and each conversation's turns."""

    def __init__(self, ctx: RunContext, ep: Endpoint, step: StepPlan, send: Send) -> None:
        pool = ctx.state.prompts
        if not isinstance(pool, SessionPool):
            raise TypeError("workload.sessions needs the conversations' pool (build_prompts with sessions)")
        spec = ctx.plan.scenario.workload.sessions
        assert spec is not None
        self.ctx, self.ep, self.step, self.send, self.pool = ctx, ep, step, send, pool
        self.headers = tuple(spec.header)
        self.deadline: int | None = None  # a timed step's end: no turn is sent after it
        self.gate: asyncio.Semaphore | None = None  # open loop: turns in flight at most max_concurrency

    async def users(self) -> None:
        ctx, step = self.ctx, self.step
        starts = itertools.count()
        total = step.warmup + step.requests if step.requests is not None else None

        async def user() -> None:  # one simulated user: a conversation, then the next
            while not self._over():
                i = next(starts)
                if total is not None and i >= total:
                    return
                warm = i < step.warmup
                if step.duration_s is not None and not warm and self.deadline is None:
                    self.deadline = ctx.now() + int(step.duration_s * 1e9)  # from the first measured start
                await self.converse(warm, None)

        await asyncio.gather(*(user() for _ in range(int(step.value))))

    async def arrivals(self) -> None:
        ctx, step = self.ctx, self.step
        seed = ctx.plan.scenario.workload.seed + step.index
        warm = arrival_offsets_ns(step.value, "constant", count=step.warmup) if step.warmup else np.empty(0, np.int64)
        measured = arrival_offsets_ns(
            step.value, step.arrival, count=step.requests, duration_s=step.duration_s, seed=seed
        )
        lead = int(warm[-1] + 1e9 / step.value) if len(warm) else 0
        offsets = np.concatenate((warm, measured + lead)).tolist()
        self.gate = asyncio.Semaphore(step.max_concurrency)
        tasks: set[asyncio.Task[None]] = set()
        start = ctx.now()
        if step.duration_s is not None:
            self.deadline = start + lead + int(step.duration_s * 1e9)
        for i, off in enumerate(offsets):
            due = start + off
            while (delay := due - ctx.now()) > 0:  # uvloop may wake up early: sleep again until due
                await asyncio.sleep(delay / 1e9)
            if ctx.state.stop.is_set():
                break
            task = asyncio.get_running_loop().create_task(self.converse(i < step.warmup, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    def _over(self) -> bool:
        """The run is stopping, or the timed step has ended."""
        return self.ctx.state.stop.is_set() or (self.deadline is not None and self.ctx.now() >= self.deadline)

    async def _think(self, until_ns: int) -> bool:
        """Wait until ``until_ns`` (the answer's end + the think time); False when no turn may follow."""
        if self.deadline is not None:
            until_ns = min(until_ns, self.deadline)
        left = until_ns - self.ctx.now()
        if left > 0 and not await self.ctx.wait(left / 1e9):
            return False
        return not self._over()

    async def converse(self, warm: bool, due: int | None) -> None:
        """One conversation, turn by turn, until its last turn, a failed turn, or the step's end."""
        ctx = self.ctx
        k = next(ctx.state.conversations)
        number = k * ctx.plan.workers + ctx.plan.worker  # unique across worker processes
        plan = self.pool.session(k)
        history = History(plan, self.pool.api)
        sid = session_id(ctx.plan.t0, number)
        headers = {name: sid for name in self.headers}
        ended = 0
        for t, turn in enumerate(plan.turns, 1):
            if t > 1 and not await self._think(ended + int(plan.think_s[t - 2] * 1e9)):
                return
            if self._over():
                return
            item = history.ask(turn)
            rec = ctx.new_record(self.step.index, warm, due if t == 1 else None)
            rec.session, rec.turn, rec.session_turns, rec.context_tokens = number, t, len(plan.turns), item.input_tokens
            answer: list[str] = []
            if self.gate is None:
                last = await self.send(ctx, self.ep, rec, item, headers, answer)
            else:
                async with self.gate:  # waiting here shows as the first turn's schedule lag
                    last = await self.send(ctx, self.ep, rec, item, headers, answer)
            if last.status != "ok" or not answer:
                return  # a failed turn ends its conversation
            reported = (last.output_tokens or 0) - (last.reasoning_tokens or 0)  # the answer, reasoning left out
            history.answered(turn, answer[-1], self.pool.answer_tokens(answer[-1], reported))
            ended = last.end_ns
