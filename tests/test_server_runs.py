"""Server metrics through whole runs against the mock: scraped, written on the run's timeline, summed up
per step, recomputed by `loadtest report`, drawn in the report; a server without /metrics costs one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from loadtest.analysis.promtext import parse_metrics
from loadtest.config.loading import load_scenario
from loadtest.config.scenario import Scenario, ScenarioError
from loadtest.mock import MockProcess
from loadtest.output.plots import Series, timeline
from loadtest.output.rundir import load_run, read_records
from loadtest.runner import execute
from tests.conftest import mock_stats, write


def value(scrape: dict, name: str, sample: str | None = None) -> float | None:
    for f in parse_metrics(scrape["text"]):
        if f["name"] == name:
            return sum(s[2] for s in f["samples"] if sample is None or s[0] == sample)
    return None


@pytest.mark.timing  # the steady queue's mean needs a client that resends at once: 4.92 of 5-6 at load 7
def test_scraped_queue_matches_the_mock_and_the_report_shows_it(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    mock = mock_server(slots=4, ttft_ms=20, itl_ms=5, output_tokens=16)
    sc = Scenario.model_validate(
        {
            "name": "srv",
            "target": {"base_url": mock.base_url},
            "workload": {"max_tokens": 16},
            "load": {"concurrency": [10], "requests": 60, "warmup_requests": 4},
            "server_metrics": {"interval_s": 0.1},
        }
    )
    warnings: list[str] = []
    outcome = execute(sc, "srv.yaml", tmp_path, on_step=lambda s: None, warn=warnings.append)
    stats = mock_stats(mock.base_url)
    run = outcome.run_dir
    lines = [json.loads(x) for x in (run / "server_metrics.jsonl").read_text().splitlines()]
    assert lines[0]["status"] == "ok" and lines[0]["url"] == mock.base_url.removesuffix("/v1") + "/metrics"
    scrapes = [x for x in lines[1:] if "text" in x]
    assert len(scrapes) >= 10 and all(x["t_ns"] >= 0 for x in scrapes)
    running = [value(x, "vllm:num_requests_running") for x in scrapes]
    waiting = [value(x, "vllm:num_requests_waiting") for x in scrapes]
    # the mock's own counts: never more than its 4 slots running, its peak queue is 10 - 4 = 6
    assert max(running) == 4 and stats["waiting_max"] == 6 and max(waiting) == stats["waiting_max"]
    count = "vllm:time_to_first_token_seconds_count"
    ttft = [value(x, "vllm:time_to_first_token_seconds", count) for x in scrapes]
    assert ttft[0] == 0 and ttft[-1] == stats["requests"] == 64  # first before the load, last after it
    records = list(read_records(run / "requests.jsonl"))
    gen = [value(x, "vllm:generation_tokens") for x in scrapes]
    assert gen[-1] - gen[0] == sum(r.output_tokens or 0 for r in records) == stats["stream_tokens"]

    (step,) = outcome.summary["steps"]
    server = step["server"]
    assert server["engine"] == "vllm" and server["running"]["max"] == 4 and server["waiting"]["max"] == 6
    assert 5.0 <= step["steady"]["server"]["waiting"]["mean"] <= 6.0  # a closed loop of 10 on 4 slots
    assert outcome.summary["server_metrics"]["status"] == "ok" and not warnings

    (run / "summary.json").unlink()  # `loadtest report`: everything again from the files alone
    again = load_run(run)
    assert again.summary["steps"][0]["server"] == server and again.summary["server_metrics"]["scrapes"] == len(scrapes)

    page = (run / "report.html").read_text()
    assert f"vllm, {len(scrapes)} scrapes of" in page
    cell = f'data-key="server.waiting.max" data-value="{json.dumps(server["waiting"]["max"])}"'
    assert cell in page
    chart = timeline([Series("srv", again)])  # the timeline's bottom panel: the server's series as scraped
    drawn = {ln.label: ln.ys for ln in chart.panels[3].lines if "server" in (ln.label or "")}
    assert np.array_equal(drawn["srv server waiting"], np.asarray(waiting))
    assert np.array_equal(drawn["srv server running"], np.asarray(running))


def test_a_target_without_metrics_runs_clean_with_one_line(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    mock = mock_server(metrics="none", ttft_ms=1, itl_ms=0, output_tokens=4)
    tree = {"name": "bare", "target": {"base_url": mock.base_url}, "load": {"concurrency": [2], "requests": 6}}
    warnings: list[str] = []
    outcome = execute(Scenario.model_validate(tree), "bare.yaml", tmp_path, on_step=lambda s: None,
                      warn=warnings.append, report=False)  # fmt: skip
    url = mock.base_url.removesuffix("/v1") + "/metrics"
    assert outcome.exit_code == 0 and outcome.summary["steps"][0]["requests"] == {"sent": 6, "ok": 6, "failed": 0}
    assert [w for w in warnings if "metrics" in w] == warnings  # nothing else to say about this run...
    assert len(warnings) == 1 and warnings[0].startswith(f"server metrics: {url}: HTTP 404;")  # ...but this, once
    assert outcome.summary["server_metrics"] == {
        "status": "unavailable", "url": url, "reason": "HTTP 404", "engine": None, "scrapes": 0,
    }  # fmt: skip
    assert outcome.summary["steps"][0]["server"] is None and outcome.summary["steps"][0]["steady"] is not None
    (line,) = (outcome.run_dir / "server_metrics.jsonl").read_text().splitlines()
    assert json.loads(line)["status"] == "unavailable"

    tree["server_metrics"] = {"enabled": True}  # asked for: an error before any load, naming the field
    with pytest.raises(ScenarioError, match=r"^bare.yaml: server_metrics: http://127.0.0.1:\d+/metrics: HTTP 404$"):
        execute(Scenario.model_validate(tree), "bare.yaml", tmp_path, on_step=lambda s: None, report=False)
    assert mock_stats(mock.base_url)["requests"] == 6  # the second run sent nothing

    tree["server_metrics"] = {"enabled": False}
    outcome = execute(Scenario.model_validate(tree), "bare.yaml", tmp_path, on_step=lambda s: None, report=False)
    assert not (outcome.run_dir / "server_metrics.jsonl").exists()
    assert outcome.summary["server_metrics"]["status"] == "off"


def test_a_model_name_from_a_variable_is_kept_out_of_the_scrapes(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    """vLLM labels every metric with the served model's name: when the scenario's model came from a
    variable (a secret like any other), it is [redacted] in server_metrics.jsonl too."""
    mock = mock_server(ttft_ms=1, itl_ms=0, output_tokens=4)
    path = write(
        tmp_path / "m.yaml",
        f"name: m\ntarget: {{base_url: '{mock.base_url}', model: '${{LT_SM_MODEL}}'}}\nload: {{requests: 3}}\n",
    )
    sc = load_scenario(path, env={"LT_SM_MODEL": "mock-model"})  # the mock's metrics carry model_name="mock-model"
    outcome = execute(sc, str(path), tmp_path / "out", on_step=lambda s: None, report=False)
    text = (outcome.run_dir / "server_metrics.jsonl").read_text()
    assert "mock-model" not in text and 'model_name=\\"[redacted]\\"' in text
    assert outcome.summary["steps"][0]["server"]["running"] is not None  # still read as vLLM's
