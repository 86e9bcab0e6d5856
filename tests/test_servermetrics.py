"""Server metrics, pure: Prometheus text parsed as the servers write it, and a window's figures
hand-computed from made-up scrapes; the mock's /metrics against its own /mock/stats."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from loadtest.analysis.promtext import detect_engine, parse_metrics, prefilter, wanted_names
from loadtest.analysis.servermetrics import ServerSeries, server_window
from loadtest.config.loading import scenario_to_yaml
from loadtest.config.scenario import Scenario
from loadtest.engine.servermetrics import metrics_request
from loadtest.mock import MockProcess
from loadtest.transport.scrape import default_metrics_url
from tests.conftest import mock_stats

S = 1_000_000_000  # ns

# As each server writes it (names, types, _total and _created as their exporters do)
VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 4.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.4
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 5.0
# TYPE vllm:num_preemptions_created gauge
vllm:num_preemptions_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16"} 1.0
"""
TGI = """# TYPE tgi_request_count counter
tgi_request_count 12
# TYPE tgi_queue_size gauge
tgi_queue_size 2
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 5
"""
SGLANG_ROUTER = """# TYPE sglang_num_queue_reqs gauge
sglang_num_queue_reqs{model_name="m",tp_rank="0"} 7
# TYPE sglang_num_running_reqs gauge
sglang_num_running_reqs{model_name="m",tp_rank="0"} 9
"""


def test_families_are_matched_without_total_and_created_is_dropped() -> None:
    fams = {f["name"]: f for f in parse_metrics(prefilter(VLLM, wanted_names()))}
    assert set(fams) == {"vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:num_preemptions"}
    (sample,) = fams["vllm:num_preemptions"]["samples"]
    assert sample == ["vllm:num_preemptions_total", {"engine": "0", "model_name": "m"}, 5.0]
    tgi = {f["name"]: f for f in parse_metrics(TGI)}  # TGI's counter has no _total: the parser renames its sample
    assert tgi["tgi_request_count"]["type"] == "counter" and tgi["tgi_request_count"]["samples"][0][2] == 12
    sglang = {f["name"] for f in parse_metrics(prefilter(SGLANG_ROUTER, wanted_names()))}
    assert sglang == {"sglang:num_queue_reqs", "sglang:num_running_reqs"}  # sglang_ read as sglang:
    assert detect_engine(sglang) == "sglang" and detect_engine({"tgi_queue_size"}) == "tgi"
    with pytest.raises(ValueError):
        parse_metrics('{"error": {"message": "not found"}}\n')


def test_extra_names_are_kept_and_the_rest_filtered() -> None:
    kept = prefilter(VLLM, wanted_names(["vllm:cache_config_info"]))
    assert "vllm:cache_config_info{" in kept and "# HELP" not in kept
    assert "vllm:cache_config_info" not in prefilter(VLLM, wanted_names())


def scrape(t_s: float, **values: float) -> dict:
    """One scrape as server_metrics.jsonl holds it, vLLM names."""
    names = {"running": ("gauge", "vllm:num_requests_running"), "preempt": ("counter", "vllm:num_preemptions")}
    fams = []
    for key, v in values.items():
        kind, name = names[key]
        sample = name + ("_total" if kind == "counter" else "")
        fams.append({"name": name, "type": kind, "samples": [[sample, {"engine": "0"}, v]]})
    return {"t_ns": int(t_s * S), "families": fams}


def test_gauges_are_time_weighted_and_label_sets_summed() -> None:
    series = ServerSeries([scrape(0, running=2), scrape(1, running=4), scrape(3, running=0)])
    w = server_window(series, int(0.5 * S), int(2.5 * S))
    assert w is not None and w["engine"] == "vllm" and w["scrapes"] == 1
    # 2 held over [0.5, 1] and 4 over [1, 2.5]: (2 * 0.5 + 4 * 1.5) / 2 = 3.5
    assert w["running"] == {"mean": pytest.approx(3.5), "max": 4.0}
    both = ServerSeries([{"t_ns": 0, "families": parse_metrics(VLLM)}, {"t_ns": S, "families": parse_metrics(VLLM)}])
    w = server_window(both, 0, S)
    assert w is not None and w["running"]["mean"] == pytest.approx(7.0)  # two engines: 3 + 4 requests
    assert w["kv_cache_usage"]["mean"] == pytest.approx(0.3)  # a usage ratio: the engines' mean
    assert w["waiting"] is None and w["ttft_s"] is None  # not in that text


def test_counters_increase_across_a_reset_and_are_interpolated_at_the_edges() -> None:
    series = ServerSeries([scrape(0, preempt=10), scrape(1, preempt=15), scrape(2, preempt=3), scrape(3, preempt=8)])
    w = server_window(series, 0, 3 * S)
    assert w is not None and w["preemptions"] == pytest.approx(5 + 3 + 5)  # the drop to 3 was a restart
    w = server_window(series, int(0.5 * S), int(1.5 * S))
    assert w is not None and w["preemptions"] == pytest.approx(4.0)  # 2.5 at 0.5 s, 6.5 at 1.5 s


def test_histogram_quantiles_interpolate_inside_buckets_like_prometheus() -> None:
    def hist(t_s: float, b01: float, b05: float, inf: float, total: float) -> dict:
        name = "vllm:time_to_first_token_seconds"
        samples = [[f"{name}_bucket", {"le": le}, v] for le, v in (("0.1", b01), ("0.5", b05), ("+Inf", inf))]
        samples += [[f"{name}_sum", {}, total], [f"{name}_count", {}, inf]]
        return {"t_ns": int(t_s * S), "families": [{"name": name, "type": "histogram", "samples": samples}]}

    series = ServerSeries([hist(0, 1, 1, 1, 0.05), hist(1, 3, 9, 11, 3.05)])
    w = server_window(series, 0, S)
    assert w is not None
    ttft = w["ttft_s"]
    assert ttft["count"] == 10 and ttft["mean"] == pytest.approx(0.3)
    # rank 5 of 10: 2 below 0.1, 6 in (0.1, 0.5]: 0.1 + 0.4 * 3/6; rank 9.9 falls in +Inf: the top bound
    assert ttft["p50"] == pytest.approx(0.3) and ttft["p99"] == pytest.approx(0.5)
    assert ttft["p90"] == pytest.approx(0.5)  # rank 9: past the 8 counted up to 0.5, so in +Inf as well


def test_the_metrics_url_and_who_gets_the_key() -> None:
    assert default_metrics_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/metrics"
    assert default_metrics_url("https://h.example/openai/v1/?api-version=1") == "https://h.example/openai/metrics"
    sc = Scenario.model_validate(
        {"name": "x", "target": {"base_url": "https://h.example/v1", "api_key_env": "K", "headers": {"x-a": "v"}}}
    )
    url, headers = metrics_request(sc, sc.target.base_url, "sekret")
    assert url == "https://h.example/metrics" and headers == {"authorization": "Bearer sekret", "x-a": "v"}
    other = sc.model_copy(update={"server_metrics": sc.server_metrics.model_copy(update={"url": "http://o:9000/m"})})
    assert metrics_request(other, sc.target.base_url, "sekret") == ("http://o:9000/m", {})  # never to another host


def test_a_metrics_url_with_credentials_is_redacted_in_the_run_scenario() -> None:
    sc = Scenario.model_validate({"name": "x", "server_metrics": {"url": "http://u:pw1234@h:9/metrics?token=tk5678"}})
    text = scenario_to_yaml(sc)
    assert "pw1234" not in text and "tk5678" not in text and "[redacted]@h:9/metrics" in text


def get(url: str) -> tuple[str, str]:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as r:
        return r.headers["content-type"], r.read().decode()


@pytest.mark.timing
def test_mock_metrics_match_its_own_stats(mock_server: Callable[..., MockProcess]) -> None:
    mock = mock_server(  # 5 + 9 x 250 = 2,255 ms a request: time to look; 2-token blocks: 4-word prompts can hit
        slots=2, ttft_ms=5, itl_ms=250, output_tokens=10, prefix_cache={"block_tokens": 2, "prefill_ms_per_1k": 0}
    )
    root = mock.base_url.removesuffix("/v1")

    def complete(text: str) -> None:
        body = {"model": "m", "messages": [{"role": "user", "content": text}], "max_tokens": 10, "stream": True}
        req = urllib.request.Request(mock.base_url + "/chat/completions", data=json.dumps(body).encode())
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
            r.read()

    prompts = ["prompt number 0 here", "prompt number 1 here", "prompt number 2 here", "prompt number 0 here"]
    threads = [threading.Thread(target=complete, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while mock_stats(mock.base_url)["waiting"] < 2:  # four sent, two slots: two wait (polled, never slept)
        assert time.monotonic() < deadline
    before = mock_stats(mock.base_url)
    ctype, text = get(root + "/metrics")
    stats = mock_stats(mock.base_url)
    for t in threads:
        t.join()
    assert (before["running"], before["waiting"]) == (stats["running"], stats["waiting"])  # nothing moved meanwhile
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    fams = {f["name"]: f["samples"] for f in parse_metrics(text)}
    assert fams["vllm:num_requests_running"][0][2] == stats["running"] == 2
    assert fams["vllm:num_requests_waiting"][0][2] == stats["waiting"] == 2
    assert fams["vllm:kv_cache_usage_perc"][0][2] == 1.0  # both slots taken
    assert fams["vllm:num_requests_running"][0][1] == {"engine": "0", "model_name": "mock-model"}
    fams = {f["name"]: f["samples"] for f in parse_metrics(get(root + "/metrics")[1])}
    stats = mock_stats(mock.base_url)
    ttft = {s[1].get("le", s[0]): s[2] for s in fams["vllm:time_to_first_token_seconds"]}
    assert ttft["vllm:time_to_first_token_seconds_count"] == stats["requests"] == 4
    assert ttft["0.005"] == 0 and ttft["+Inf"] == 4  # every TTFT is at least the 5 ms the mock waits
    assert (
        ttft["1.0"] == 2 and ttft["2.5"] == 4
    )  # two waited a whole answer (2.26 s) for a slot: TTFT counts from arrival
    assert fams["vllm:prompt_tokens"][0][2] == 4 * 4 and fams["vllm:generation_tokens"][0][2] == 4 * 10
    # 4 prompts of 4 words; the repeated one (admitted once the first had its slot) hits the prefix cache:
    # its full blocks before the last token (vLLM's rule), the hits the cache itself counted
    assert fams["vllm:prefix_cache_queries"][0][2] == 16
    assert fams["vllm:prefix_cache_hits"][0][2] == stats["prefix_cache"]["hits"] > 0
    assert fams["vllm:num_preemptions"][0][2] == 0
    queue = {s[1].get("le", s[0]): s[2] for s in fams["vllm:request_queue_time_seconds"]}
    assert queue["vllm:request_queue_time_seconds_count"] == 4 and queue["2.0"] == 2  # two never waited


def test_mock_without_metrics_answers_404(mock_server: Callable[..., MockProcess]) -> None:
    mock = mock_server(metrics="none")
    with pytest.raises(urllib.error.HTTPError) as e:
        get(mock.base_url.removesuffix("/v1") + "/metrics")
    assert e.value.code == 404


def test_extra_families_named_with_or_without_total() -> None:
    def text(stop: int, length: int) -> str:
        return (
            "# TYPE vllm:request_success_total counter\n"
            f'vllm:request_success_total{{finished_reason="stop"}} {stop}\n'
            f'vllm:request_success_total{{finished_reason="length"}} {length}\n'
        )

    extra = ("vllm:request_success_total",)  # as exposed; matched as family vllm:request_success
    kept = [prefilter(VLLM + text(a, b), wanted_names(extra)) for a, b in ((3, 1), (10, 2))]
    series = ServerSeries([{"t_ns": 0, "text": kept[0]}, {"t_ns": S, "text": kept[1]}], extra)  # as written
    w = server_window(series, 0, S, extra)
    assert w is not None and w["extra"]["vllm:request_success_total"]["increase"] == (10 + 2) - (3 + 1)
    assert w["running"]["mean"] == 7.0  # the known ones beside it
