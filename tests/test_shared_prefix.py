"""Shared-prefix prompts (``workload.prompt.shared_prefix``): groups, nonces, Zipf, per-group TTFT against
the mock's prefix cache, and ``loadtest dataset build`` replayed byte for byte."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadtest.analysis.groups import GroupStats, first_sends
from loadtest.analysis.metrics import StepAccumulator
from loadtest.analysis.records import RequestRecord
from loadtest.config.loading import load_scenario
from loadtest.config.scenario import Scenario, ScenarioError, SharedPrefixSpec
from loadtest.engine.shard import worker_scenario
from loadtest.mock import MockProcess
from loadtest.output.rundir import load_run, read_records
from loadtest.runner import execute
from loadtest.workload.prompts import build_prompts, fix_run_nonces
from loadtest.workload.tokens import count_tokens
from tests.conftest import run_cli, write

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def mock_log(base_url: str) -> list[dict[str, Any]]:
    with _DIRECT.open(base_url.removesuffix("/v1") + "/mock/requests", timeout=5) as resp:
        return json.loads(resp.read())


def common_words(a: str, b: str) -> int:
    """How many leading words two texts share."""
    x, y = a.split(), b.split()
    return next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))


def pool_for(**spec: Any) -> Any:
    sc = Scenario.model_validate({"name": "sp", "workload": {"prompt": {"shared_prefix": spec}}})
    return build_prompts(sc.workload, "completions")


def test_groups_share_exactly_their_prefix_and_lengths_are_exact() -> None:
    pool = pool_for(groups=3, prefix_tokens=200, suffix_tokens=40, run_nonce="ab12")
    items = [pool[i] for i in range(60)]
    assert {it.group for it in items} == {0, 1, 2}
    for it in items[:10]:  # exactly prefix + suffix tokens, counted by the tokenizer itself
        assert it.input_tokens == 240 == count_tokens(it.prompt, "o200k_base")
    for a in items[:20]:
        for b in items[:20]:
            if a is b:
                continue
            shared = common_words(a.prompt, b.prompt)
            if a.group == b.group:
                assert shared == 200  # the prefix, then each request's own suffix
            else:
                assert 4 <= shared < 200  # the run's nonce heads every prefix, the rest differs


def test_nonce_run_differs_between_runs_none_repeats_request_shares_nothing() -> None:
    a = pool_for(groups=2, prefix_tokens=64, suffix_tokens=8, run_nonce="1")
    b = pool_for(groups=2, prefix_tokens=64, suffix_tokens=8, run_nonce="2")
    same_group = [(a[i], b[i]) for i in range(20) if a[i].group == b[i].group]
    assert same_group and all(common_words(x.prompt, y.prompt) < 4 for x, y in same_group)  # a cold cache
    n1, n2 = (pool_for(groups=2, prefix_tokens=64, suffix_tokens=8, nonce="none") for _ in range(2))
    assert [n1[i].prompt for i in range(20)] == [n2[i].prompt for i in range(20)]
    r = pool_for(groups=1, prefix_tokens=64, suffix_tokens=8, nonce="request", run_nonce="1")
    prompts = [r[i].prompt for i in range(20)]
    assert max(common_words(x, y) for x in prompts for y in prompts if x is not y) < 4
    assert all(len(p.split()) == 72 for p in prompts)


@pytest.mark.parametrize("choice", ["uniform", "zipf"])
def test_group_choice_follows_its_distribution(choice: str) -> None:
    pool = pool_for(groups=5, prefix_tokens=8, suffix_tokens=1, choice=choice, zipf_alpha=1.2, run_nonce="9")
    n = 20_000
    counts = Counter(pool.group(i) for i in range(n))
    if choice == "uniform":
        want = np.full(5, 0.2)
    else:  # p(k) = (k+1)^-1.2 / sum, by hand
        w = np.array([1.0, 2**-1.2, 3**-1.2, 4**-1.2, 5**-1.2])
        want = w / w.sum()
    got = np.array([counts[g] / n for g in range(5)])
    assert np.all(np.abs(got - want) < 0.015), got
    again = pool_for(groups=5, prefix_tokens=8, suffix_tokens=1, choice=choice, zipf_alpha=1.2, run_nonce="a")
    assert [again.group(i) for i in range(200)] == [pool.group(i) for i in range(200)]  # the seed's, every run


def test_every_worker_of_a_run_builds_the_same_prefixes() -> None:
    sc = Scenario.model_validate({"name": "sp", "workload": {"prompt": {"shared_prefix": {"groups": 2}}}})
    run = fix_run_nonces(sc)
    spec = run.workload.prompt.shared_prefix  # type: ignore[union-attr]
    assert spec.seed == 42 and spec.run_nonce is not None and fix_run_nonces(sc).workload.prompt != spec
    w0, w1 = (build_prompts(worker_scenario(run, i).workload, "completions") for i in (0, 1))
    a = next(w0[i] for i in range(50) if w0[i].group == 0)
    b = next(w1[i] for i in range(50) if w1[i].group == 0)
    assert common_words(a.prompt, b.prompt) == 1024 and a.prompt != b.prompt  # one prefix, own suffixes


def test_bad_shared_prefix_settings_are_one_line_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.yaml", "name: s\nworkload:\n  prompt:\n    shared_prefix: {prefix_tokens: 4, groups: 2}\n"
    )
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    assert str(e.value).startswith(f"{path}: workload.prompt.shared_prefix") and "nonce" in str(e.value)
    path = write(tmp_path / "t.yaml", "name: t\nworkload:\n  prompt:\n    shared_prefix: {choice: pareto}\n")
    with pytest.raises(ScenarioError, match=r"shared_prefix\.choice"):
        load_scenario(path)
    assert SharedPrefixSpec(prefix_tokens=4, nonce="none").prefix_tokens == 4


def _record(i: int, group: int, sent_ms: int, ttft_ms: float, *, step: int = 0, **kw: Any) -> RequestRecord:
    sent = sent_ms * 1_000_000
    return RequestRecord(
        id=i, step=step, group=group, sent_ns=sent, first_token_ns=sent + int(ttft_ms * 1e6), end_ns=sent + 10**8, **kw
    )


def test_cold_is_the_first_send_of_its_group_across_the_run() -> None:
    acc0, step1 = StepAccumulator(), GroupStats()  # step 0 through the step's accumulator, as a run reads it
    step0 = acc0.groups
    for r in (
        _record(0, 0, 5, 30.0, warmup=True),  # group 0's first send: a warmup request, so no measured cold for 0
        _record(1, 1, 20, 32.0, input_tokens=100, cached_tokens=0),  # group 1 cold
        _record(2, 1, 10_000, 11.0, input_tokens=100, cached_tokens=80),  # finished first, sent later: warm
        _record(3, 0, 40, 12.0, input_tokens=100, cached_tokens=90),
    ):
        acc0.add(r)
    step1.add(_record(4, 1, 90_000, 10.0, step=1))  # a later step: group 1 is warm already
    step1.add(_record(5, 2, 90_001, 40.0, step=1))  # group 2 appears: cold
    first = first_sends([step1, step0])
    assert first == {0: 5_000_000, 1: 20_000_000, 2: 90_001_000_000}
    s0 = step0.summary(first)
    assert s0 is not None and s0["groups"] == 2
    assert s0["cold"]["requests"] == 1 and s0["cold"]["ttft_ms"]["p50"] == pytest.approx(32.0)
    assert s0["warm"]["requests"] == 2 and s0["warm"]["ttft_ms"]["p50"] == pytest.approx(11.5)
    assert s0["cold"]["cached_share"] == 0.0 and s0["warm"]["cached_share"] == pytest.approx(170 / 200)
    by = {g["group"]: g for g in s0["by_group"]}
    assert by[0]["requests"] == 1 and by[1]["requests"] == 2 and by[1]["cached_share"] == pytest.approx(0.4)
    s1 = step1.summary(first)
    assert s1 is not None and s1["cold"]["requests"] == 1 and s1["cold"]["ttft_ms"]["p50"] == pytest.approx(40.0)
    assert s1["warm"]["cached_share"] is None  # the server did not say
    assert GroupStats().summary(first) is None


@pytest.mark.timing
def test_warm_groups_ttft_is_lower_by_the_prefill_of_the_prefix(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    mock = mock_server(ttft_ms=5, itl_ms=0, output_tokens=2, prefix_cache={"prefill_ms_per_1k": 20})
    sc = Scenario.model_validate(
        {
            "name": "sp",
            "target": {"base_url": mock.base_url},
            "workload": {
                # 64 groups for 128 requests: first requests of groups come all through the step, beside warm ones
                "prompt": {"shared_prefix": {"groups": 64, "prefix_tokens": 800, "suffix_tokens": 32}},
                "max_tokens": 2,
            },
            "load": {"concurrency": [1], "requests": 128},
        }
    )
    outcome = execute(sc, "sp.yaml", tmp_path, on_step=lambda s: None, report=False)
    (step,) = outcome.summary["steps"]
    groups = step["prefix_groups"]
    records = sorted(read_records(outcome.run_dir / "requests.jsonl"), key=lambda r: r.sent_ns)
    first = {}
    for r in records:
        first.setdefault(r.group, r.id)
    assert groups["groups"] == groups["cold"]["requests"] == len(first) and len(first) > 40
    assert groups["warm"]["requests"] == 128 - len(first)
    # the mock's prefill: 20 ms per 1,000 uncached tokens. Cold: all 832 tokens; warm: the 800-token prefix
    # (50 full blocks) cached. So warm is faster by 20 * 800 / 1000 = 16 ms (a whole number of ms: the mock's
    # sleeps, rounded up to whole ms, add the same to both)
    gap = groups["cold"]["ttft_ms"]["p50"] - groups["warm"]["ttft_ms"]["p50"]
    assert abs(gap - 16.0) <= 2.0, groups
    assert all(r.group is not None and r.input_tokens == 832 for r in records)
    assert all(r.cached_tokens == (0 if first[r.group] == r.id else 800) for r in records)  # the server agrees
    assert groups["cold"]["cached_share"] == 0.0 and groups["warm"]["cached_share"] == pytest.approx(800 / 832)
    assert load_run(outcome.run_dir).summary["steps"][0]["prefix_groups"] == groups  # `loadtest report` agrees


def test_dataset_build_replays_byte_for_byte(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=1, request_log=100)

    def scenario_file(name: str, prompt: str) -> Path:
        return write(
            tmp_path / f"{name}.yaml",
            f"name: {name}\ntarget: {{base_url: {json.dumps(mock.base_url)}}}\n"
            f"workload:\n  prompt: {prompt}\n  system_prompt: Answer briefly.\n  max_tokens: 3\n"
            "  extra_body: {temperature: 0}\nload: {concurrency: 1, requests: 12, warmup_requests: 2}\n",
        )

    gen = scenario_file("gen", "{shared_prefix: {groups: 3, prefix_tokens: 40, suffix_tokens: 9}}")
    built = run_cli("dataset", "build", str(gen), "--out", str(tmp_path / "p.jsonl"))
    assert built.returncode == 0, built.stderr
    nonce = built.stdout.split("run nonce ")[1].split(")")[0]
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 14 and {r["group"] for r in rows} <= {0, 1, 2} and all(r["max_tokens"] == 3 for r in rows)

    def bodies(path: Path, *overrides: str) -> list[dict[str, Any]]:
        before = len(mock_log(mock.base_url))
        outcome = execute(load_scenario(path, overrides), str(path), tmp_path / "runs", on_step=print, report=False)
        assert outcome.exit_code == 0
        return [e["body"] for e in mock_log(mock.base_url)[before:]]

    generated = bodies(gen, f"workload.prompt.shared_prefix.run_nonce={nonce}")
    replayed = bodies(scenario_file("replay", "{file: p.jsonl}"))
    assert len(generated) == 14 and [json.dumps(b) for b in replayed] == [json.dumps(b) for b in generated]
    assert generated[0]["messages"][0] == {"role": "system", "content": "Answer briefly."}
    fresh = bodies(gen)  # a new run nonce: other prefixes (a cold server cache)
    assert all(a["messages"][1] != b["messages"][1] for a, b in zip(fresh, generated, strict=True))
