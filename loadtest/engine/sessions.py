"""Conversations on the driver (``workload.sessions``): users instead of single requests.

Closed loop (``concurrency``): each unit of concurrency is a user who runs one conversation after
another: send a turn, wait for the whole answer, think, send the next turn with the answer in its
history (under a concurrency ramp, users join along its line). Open loop (``rate``): conversations
start at the step's arrival times, the very ones single requests would get (``step_offsets_ns``:
gamma burstiness, ramps); each turn after the first follows its own answer and think time, and
``max_concurrency`` caps the turns in flight.
A step's ``requests`` and ``warmup_requests`` count conversations. A failed turn ends its
conversation (its record says why); the user then starts the next one. A timed step sends no
turn after its end (a conversation cut there is counted as cut, not failed). Think time runs from
the answer's last byte (a fixed due time, never a sleep after the bookkeeping).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from loadtest.analysis.records import RequestRecord
from loadtest.config.steps import StepPlan
from loadtest.transport.client import Endpoint
from loadtest.workload.arrivals import ramp_starts_s, step_offsets_ns, warmup_lead_ns
from loadtest.workload.datasets import DatasetTurn
from loadtest.workload.prompts import PromptItem
from loadtest.workload.sessions import History, SessionPool, session_id

if TYPE_CHECKING:
    from loadtest.engine.driver import RunContext

__all__ = ["run_sessions"]

# driver._send: one request with its retries; returns the last attempt's record
Send = Callable[
    [
        "RunContext",
        Endpoint,
        RequestRecord,
        PromptItem,
        dict[str, str],
        list[str],
        Callable[[RequestRecord], None],
    ],
    Awaitable[RequestRecord],
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
        started = itertools.count()
        total = step.warmup + step.requests if step.requests is not None else None

        async def user(start_s: float) -> None:  # one simulated user: a conversation, then the next
            if start_s > 0 and not await ctx.wait(start_s):
                return
            while not self._over():
                i = next(started)
                if total is not None and i >= total:
                    return
                warm = i < step.warmup
                if step.duration_s is not None and not warm and self.deadline is None:
                    self.deadline = ctx.now() + int(step.duration_s * 1e9)  # from the first measured start
                await self.converse(warm, None)

        n = int(step.value)
        # load.ramp of concurrency: users join one by one along the line (as single-request senders do)
        joins = ramp_starts_s(int(step.ramp_from), n, step.ramp_s) if step.ramp_s is not None else [0.0] * n
        await asyncio.gather(*(user(s) for s in joins))

    async def arrivals(self) -> None:
        ctx, step = self.ctx, self.step
        # the same due times as single requests: warmup, then the arrival process with its burstiness and ramp
        offsets = step_offsets_ns(step, ctx.plan.scenario.workload.seed + step.index)
        lead = warmup_lead_ns(step)
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
            following = plan.turns[t] if t < len(plan.turns) else None
            done = functools.partial(self._answered, history, turn, following, answer)
            if self.gate is None:
                last = await self.send(ctx, self.ep, rec, item, headers, answer, done)
            else:
                async with self.gate:  # waiting here shows as the first turn's schedule lag
                    last = await self.send(ctx, self.ep, rec, item, headers, answer, done)
            if last.status != "ok" or not answer or last.session_end is not None:
                return  # a failed turn ends its conversation, and so does a full context
            ended = last.end_ns

    def _answered(
        self, history: History, turn: DatasetTurn, following: DatasetTurn | None, answer: list[str], last: RequestRecord
    ) -> None:
        """A turn's last attempt, before its record is out: its answer joins the history, and the record
        says the conversation ends here when the next prompt would exceed ``max_context_tokens``."""
        if last.status != "ok" or not answer:
            return
        reported = (last.output_tokens or 0) - (last.reasoning_tokens or 0)  # the answer, reasoning left out
        history.answered(turn, *self.pool.history_answer(turn, answer[-1], reported))
        if self.pool.ends_by_context(history, following):
            last.session_end = "context"
