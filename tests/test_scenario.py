from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.config.loading import api_key, load_scenario, scenario_to_yaml
from loadtest.config.scenario import FilePrompt, ScenarioError, SyntheticPrompt, TextPrompt
from tests.conftest import ROOT, run_cli, write

SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def test_scenarios_directory_is_not_empty() -> None:
    assert {p.name for p in SCENARIOS} >= {"demo.yaml", "cerebras-tokens-per-second.yaml"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.name
    assert sc.load.values or sc.load.search is not None or sc.load.capacity is not None


def test_cerebras_scenario_does_the_tutorial_job() -> None:
    sc = load_scenario(ROOT / "scenarios" / "cerebras-tokens-per-second.yaml")
    assert sc.target.base_url == "https://api.cerebras.ai/v1"
    assert sc.target.model == "llama3.3-70b"
    assert sc.target.api_key_env == "CEREBRAS_API_KEY"
    assert sc.workload.stream is True


def test_defaults_and_prompt_kinds(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path / "x.yaml", "target: {base_url: mock}\n"))
    assert sc.name == "x"
    assert sc.load.concurrency == [1] and sc.load.requests == 100
    assert isinstance(sc.workload.prompt, SyntheticPrompt)
    sc = load_scenario(write(tmp_path / "t.yaml", "workload: {prompt: {text: hi}}\nload: {rate: 5, duration_s: 2}\n"))
    assert isinstance(sc.workload.prompt, TextPrompt)
    assert sc.load.mode == "rate" and sc.load.rate == [5.0] and sc.load.requests is None
    write(tmp_path / "p.jsonl", '{"prompt": "x"}\n')
    sc = load_scenario(write(tmp_path / "f.yaml", "workload: {prompt: {file: p.jsonl}}\n"))
    assert isinstance(sc.workload.prompt, FilePrompt)
    assert Path(sc.workload.prompt.file) == tmp_path / "p.jsonl"  # relative to the scenario file


def test_env_expansion_with_default_and_missing(tmp_path: Path) -> None:
    p = write(tmp_path / "e.yaml", "target:\n  base_url: ${BASE_URL}\n  model: ${MODEL:-m1}\n")
    sc = load_scenario(p, env={"BASE_URL": "http://127.0.0.1:9/v1"})
    assert sc.target.base_url == "http://127.0.0.1:9/v1" and sc.target.model == "m1"
    with pytest.raises(ScenarioError, match=r"e\.yaml: target\.base_url: environment variable BASE_URL is not set"):
        load_scenario(p, env={})


def test_set_overrides(tmp_path: Path) -> None:
    p = write(tmp_path / "o.yaml", "load: {concurrency: [1]}\n")
    sc = load_scenario(p, ["load.concurrency=[1,8]", "workload.max_tokens=7", "target.mock.itl_ms=1.5"])
    assert sc.load.concurrency == [1, 8]
    assert sc.workload.max_tokens == 7 and sc.target.mock.itl_ms == 1.5
    with pytest.raises(ScenarioError, match="--set: expected KEY=VALUE"):
        load_scenario(p, ["load.concurrency"])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("load: [1, 2\n", r"bad\.yaml: malformed YAML at line \d+"),
        ("load: {concurency: [1]}\n", r"bad\.yaml: load\.concurency: unknown key"),
        ("load: {concurrency: [one]}\n", r"bad\.yaml: load\.concurrency\.0: .*integer"),
        ("load: {concurrency: [0]}\n", r"bad\.yaml: load\.concurrency\.0: .*greater than or equal to 1"),
        ("load: {concurrency: [1], rate: [2]}\n", r"bad\.yaml: load: .*not both"),
        ("target: {api: grpc}\n", r"bad\.yaml: target\.api: .*'chat', 'completions', 'responses' or 'embeddings'"),
        ("target: {base_url: localhost}\n", r"bad\.yaml: target\.base_url: .*http"),
        ("workload: {prompt: {text: a, file: b}}\n", r"bad\.yaml: workload\.prompt: expected exactly one of"),
        (
            "workload: {prompt: {synthetic: {input_tokens: -3}}}\n",
            r"bad\.yaml: workload\.prompt\.synthetic\.input_tokens",
        ),
        ("- just\n- a list\n", r"bad\.yaml: expected a mapping"),
        ("target: {api_key_env: sk-abc123}\n", r"bad\.yaml: target\.api_key_env: must be the NAME"),
        ("slo: {ttft_ms: {p95: fast}}\n", r"bad\.yaml: slo\.ttft_ms\.p95"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_field(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ScenarioError, match=pattern) as e:
        load_scenario(write(tmp_path / "bad.yaml", text))
    assert "\n" not in str(e.value)


def test_missing_file() -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: file not found"):
        load_scenario("nope.yaml")


def test_api_key_is_read_from_the_named_variable_and_never_in_the_resolved_yaml(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path / "k.yaml", "target: {base_url: 'http://127.0.0.1:1/v1', api_key_env: MY_KEY}\n"))
    assert api_key(sc, "k.yaml", env={"MY_KEY": "sk-live-1234567890"}) == "sk-live-1234567890"
    assert "sk-live" not in scenario_to_yaml(sc) and "MY_KEY" in scenario_to_yaml(sc)
    with pytest.raises(ScenarioError, match=r"k\.yaml: target\.api_key_env: environment variable MY_KEY is not set"):
        api_key(sc, "k.yaml", env={})


def test_validate_prints_resolved_scenario() -> None:
    r = run_cli("validate", "scenarios/demo.yaml", "--set", "load.concurrency=[2,3]")
    assert r.returncode == 0, r.stderr
    assert "concurrency:\n  - 2\n  - 3" in r.stdout
    assert "timeout_s: 30.0" in r.stdout and "max_concurrency: 1024" in r.stdout  # defaults filled in


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("load: {concurrency: [1, 2\n", "malformed YAML"),
        ("extra_section: 1\n", "extra_section: unknown key"),
        ("load: {requests: lots}\n", "load.requests"),
    ],
)
def test_cli_bad_input_one_line_no_traceback(tmp_path: Path, text: str, needle: str) -> None:
    p = write(tmp_path / "bad.yaml", text)
    for args in (("validate", str(p)), ("run", str(p), "--out", str(tmp_path / "out"))):
        r = run_cli(*args)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr + r.stdout
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and str(p) in lines[0] and needle in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_missing_key_variable(tmp_path: Path) -> None:
    p = write(tmp_path / "k.yaml", "target: {base_url: 'http://127.0.0.1:9/v1', api_key_env: LOADTEST_TEST_NOKEY}\n")
    r = run_cli("run", str(p), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "target.api_key_env: environment variable LOADTEST_TEST_NOKEY is not set" in r.stderr
