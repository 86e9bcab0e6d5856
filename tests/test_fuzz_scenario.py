"""Random and mutated scenario documents: the loader either succeeds or raises a one-line ScenarioError."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtest.config.loading import load_scenario
from loadtest.config.scenario import Scenario, ScenarioError
from tests.conftest import ROOT

KEYS = [
    "name",
    "target",
    "workload",
    "load",
    "slo",
    "base_url",
    "api_key_env",
    "model",
    "api",
    "timeout_s",
    "mock",
    "ttft_ms",
    "itl_ms",
    "prompt",
    "synthetic",
    "text",
    "file",
    "input_tokens",
    "stddev",
    "max_tokens",
    "stream",
    "extra_body",
    "seed",
    "concurrency",
    "rate",
    "arrival",
    "requests",
    "duration_s",
    "warmup_requests",
    "workers",
    "p50",
    "p95",
    "p99",
    "max",
    "min",
    "error_rate",
    "per_request",
    "bogus",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["mock", "chat", "poisson", "${NOPE}", "${X:-1}", "[1,2"]),
)
trees = st.recursive(
    scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(KEYS), kids, max_size=5)),
    max_leaves=25,
)
VALID = [p.read_text() for p in sorted((ROOT / "scenarios").glob("*.yaml"))]
DIR = Path(tempfile.mkdtemp(prefix="loadtest-fuzz-"))


def check(text: str, overrides: list[str] = ()) -> None:  # type: ignore[assignment]
    path = DIR / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        sc = load_scenario(path, overrides, env={"X": "1"})
    except ScenarioError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        assert msg.startswith((str(path), "--set")), msg
        return
    assert isinstance(sc, Scenario)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(st.sampled_from(KEYS), trees, max_size=6))
def test_random_documents(tree: dict[str, Any]) -> None:
    check(yaml.safe_dump(tree, allow_unicode=True))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.sampled_from(VALID), data=st.data())
def test_mutated_valid_scenarios(doc: str, data: st.DataObject) -> None:
    chars = list(doc)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, max(len(chars) - 1, 0)))
        op = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        ch = data.draw(st.sampled_from([*":-[]{}#'\" \n\t0x9,$&*!|>%@`", "é", "\x00"]))
        if op == "delete" and chars:
            del chars[i]
        elif op == "insert":
            chars.insert(i, ch)
        elif chars:
            chars[i] = ch
    check("".join(chars))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join) | st.text(max_size=10),
    value=st.text(max_size=12),
)
def test_random_overrides(key: str, value: str) -> None:
    check(VALID[0], [f"{key}={value}"])
