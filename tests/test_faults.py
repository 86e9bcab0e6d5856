"""Each fault the mock can inject, at 20%: the exact split of ok and failed records, the right class."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.config.scenario import Scenario
from loadtest.mock.faults import EXPECTED_CLASS, FAULTS, FaultPlan
from loadtest.output.rundir import read_records
from loadtest.runner import execute


def plan(rates: dict[str, float], n: int) -> list[str | None]:
    p = FaultPlan(rates)
    return [p.next() for _ in range(n)]


def test_fault_plan_is_exact_and_evenly_spread() -> None:
    assert [k for k, f in enumerate(plan({"drop": 0.2}, 100), 1) if f] == list(range(5, 101, 5))
    mixed = plan({"reset": 0.1, "stall": 0.1}, 100)
    assert mixed.count("reset") == 10 and mixed.count("stall") == 10
    assert [k for k, m in enumerate(mixed, 1) if m] == list(range(5, 101, 5))  # spread, never bunched
    three = plan({"http_500": 0.05, "drop": 0.1, "stall": 0.05}, 200)
    assert (three.count("http_500"), three.count("drop"), three.count("stall")) == (10, 20, 10)
    assert plan({}, 5) == [None] * 5 and plan({"drop": 0.0}, 5) == [None] * 5


# A non-streamed response has no [DONE] to leave out: no_done exists for streams only.
CASES = [(kind, True) for kind in FAULTS] + [(kind, False) for kind in FAULTS if kind != "no_done"]


@pytest.mark.parametrize(("kind", "stream"), CASES, ids=[f"{k}-{'stream' if s else 'whole'}" for k, s in CASES])
def test_fault_split_and_class(tmp_path: Path, kind: str, stream: bool) -> None:
    mock = {
        "ttft_ms": 2,
        "itl_ms": 1,
        "output_tokens": 16,
        "faults": {kind: 0.2},
        "stall_s": 1.5,
        "slow_first_byte_s": 1.5,
    }
    sc = Scenario.model_validate(
        {
            "name": "fault",
            "target": {"base_url": "mock", "timeout_s": 1.0, "idle_timeout_s": 0.4, "mock": mock},
            "workload": {"max_tokens": 16, "stream": stream},
            "load": {"concurrency": [5], "requests": 50},
        }
    )
    outcome = execute(sc, "fault.yaml", tmp_path, on_step=lambda s: None, report=False)
    (s,) = outcome.summary["steps"]
    records = list(read_records(outcome.run_dir / "requests.jsonl"))
    assert s["requests"] == {"sent": 50, "ok": 40, "failed": 10}, s["errors"]
    assert s["errors"] == {EXPECTED_CLASS[kind]: 10}
    assert len(records) == 50 and len({r.id for r in records}) == 50  # nothing lost, nothing counted twice
    failed = [r for r in records if r.status == "error"]
    assert all(r.error and r.end_ns >= r.sent_ns for r in failed)
    if stream and kind in ("drop", "malformed", "stall"):  # broken mid-stream: the partial timing is kept
        assert all(r.first_token_ns is not None and r.first_token_ns > r.sent_ns for r in failed)
    assert all(r.output_tokens == 16 for r in records if r.status == "ok")
