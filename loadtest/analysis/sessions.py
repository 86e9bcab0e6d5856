"""Conversations' metrics (``workload.sessions``): per turn index and per conversation. Pure.

Per turn (1, 2, ...): requests, ok, TTFT, E2E and context tokens over that turn of every
conversation (TTFT at turn 1 against turn 5 shows what a growing context costs). Per conversation:
how it ended (``completed``: every planned turn answered; ``completed_by_context``: its next prompt
would have exceeded ``sessions.max_context_tokens``, so it ended there; ``failed``: a turn failed,
which ends the conversation; ``cut``: the step ended or the run stopped before its last turn), the
turns answered, and the duration of a completed conversation, by context too (its first turn's send
to its last answer's end, think times included). Warmup records never reach here; a retried turn
counts once, by its last attempt.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from loadtest.analysis.records import RequestRecord
from loadtest.analysis.stats import distribution

__all__ = ["SessionStats"]

_MS = 1e6


@dataclass
class _Turn:
    requests: int = 0
    ok: int = 0
    ttft_ms: array = field(default_factory=lambda: array("d"))
    e2e_ms: array = field(default_factory=lambda: array("d"))
    context_tokens: array = field(default_factory=lambda: array("d"))
    input_tokens: array = field(default_factory=lambda: array("d"))


@dataclass
class _Session:
    planned: int
    first_sent_ns: int
    last_end_ns: int
    answered: int = 0
    failed: bool = False
    by_context: bool = False  # its last turn's record says the next prompt would exceed max_context_tokens


class SessionStats:
    """The final attempts of one step's conversation turns, reduced as they stream past."""

    def __init__(self) -> None:
        self.turns: dict[int, _Turn] = {}
        self.sessions: dict[int, _Session] = {}

    def add(self, r: RequestRecord) -> None:
        """A measured record; the ones of no conversation and the attempts a retry followed are skipped."""
        if r.session is None or r.turn is None or not r.final:
            return
        t = self.turns.setdefault(r.turn, _Turn())
        t.requests += 1
        if r.context_tokens is not None:
            t.context_tokens.append(r.context_tokens)
        first = r.first_sent_ns if r.first_sent_ns is not None else r.sent_ns
        s = self.sessions.get(r.session)
        if s is None:
            s = self.sessions[r.session] = _Session(r.session_turns or 0, first, r.end_ns)
        s.first_sent_ns, s.last_end_ns = min(s.first_sent_ns, first), max(s.last_end_ns, r.end_ns)
        if r.status != "ok":
            s.failed = True
            return
        t.ok += 1
        s.answered += 1
        s.by_context = s.by_context or r.session_end == "context"
        if r.first_token_ns is not None:
            t.ttft_ms.append((r.first_token_ns - r.sent_ns) / _MS)
        t.e2e_ms.append((r.end_ns - r.sent_ns) / _MS)
        if r.input_tokens is not None:
            t.input_tokens.append(r.input_tokens)

    def summary(self) -> dict[str, Any] | None:
        """The step summary's ``sessions``: how conversations ended, and ``by_turn``; None without conversations."""
        if not self.sessions:
            return None
        by_turn = [
            {
                "turn": n,
                "requests": t.requests,
                "ok": t.ok,
                "ttft_ms": distribution(t.ttft_ms),
                "e2e_ms": distribution(t.e2e_ms),
                "context_tokens": distribution(t.context_tokens),
                "input_tokens": distribution(t.input_tokens),
            }
            for n, t in sorted(self.turns.items())
        ]
        completed = [s for s in self.sessions.values() if not s.failed and s.answered >= s.planned]
        by_context = [s for s in self.sessions.values() if not s.failed and s.by_context and s.answered < s.planned]
        failed = sum(s.failed for s in self.sessions.values())
        return {
            "started": len(self.sessions),
            "completed": len(completed),
            "completed_by_context": len(by_context),
            "failed": failed,
            "cut": len(self.sessions) - len(completed) - len(by_context) - failed,
            "turns_answered": distribution([s.answered for s in self.sessions.values()]),
            "duration_s": distribution([(s.last_end_ns - s.first_sent_ns) / 1e9 for s in completed + by_context]),
            "by_turn": by_turn,
        }
