"""The command line as users run it: runs, bad endpoints, the mock command, report, interrupts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest.mock import MockSettings, start_mock
from loadtest.output.plots import PLOTS
from loadtest.output.rundir import read_records
from tests.conftest import (
    RAY_GROUP,
    ROOT,
    check_shared_by_two_workers,
    free_port,
    mock_stats,
    only_run_dir,
    run_cli,
    write,
)


def test_demo_sweep_writes_one_step_per_concurrency_value(tmp_path: Path) -> None:
    r = run_cli(
        "run",
        "scenarios/demo.yaml",
        "--set",
        "load.requests=6",
        "--set",
        "load.warmup_requests=1",
        "--out",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    run = only_run_dir(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert [s["value"] for s in summary["steps"]] == [1, 2, 4, 8, 16, 32]
    assert all(s["requests"] == {"sent": 6, "ok": 6, "failed": 0} for s in summary["steps"])
    assert summary["partial"] is False and summary["tool_version"] == "0.1.0" and summary["scenario"] == "demo"
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "input_tokens", "output_tokens"):
        assert set(summary["steps"][0][key]) == {"mean", "stddev", "p50", "p90", "p95", "p99", "max"}
    assert len((run / "requests.jsonl").read_text().splitlines()) == 6 * 7
    csv_lines = (run / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 7 and csv_lines[0].startswith("index,mode,value")
    assert "base_url: mock" in (run / "scenario.yaml").read_text()
    assert "ok/sent" in r.stdout and "step 5 concurrency=32" in r.stderr  # the table, the step lines


def test_unreachable_endpoint_records_every_request_as_connect_and_stops_the_sweep(tmp_path: Path) -> None:
    sc = write(
        tmp_path / "down.yaml",
        f"target: {{base_url: 'http://127.0.0.1:{free_port()}/v1', connect_timeout_s: 2}}\n"
        "load: {concurrency: [2, 4, 8], requests: 5}\n",
    )
    r = run_cli("run", str(sc), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "down.yaml: target.base_url: endpoint unreachable (5 of 5" in err[0]
    run = only_run_dir(tmp_path / "out")
    records = list(read_records(run / "requests.jsonl"))
    assert len(records) == 5 and all(x.status == "error" and x.error_class == "connect" for x in records)
    summary = json.loads((run / "summary.json").read_text())  # the steps after it would measure nothing
    assert [s["index"] for s in summary["steps"]] == [0] and summary["skipped_steps"] == [1, 2]
    assert summary["stopped_early"].startswith("the endpoint was unreachable in step 0")
    assert "stopped early: the endpoint was unreachable in step 0" in r.stdout


def test_mock_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("mock", "--port", str(port), timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: port {port} on 127.0.0.1 is already in use"


def test_report_rebuilds_the_same_summary_from_records(tmp_path: Path) -> None:
    r = run_cli(
        "run",
        "scenarios/demo.yaml",
        "--set",
        "load.concurrency=[1,4]",
        "--set",
        "load.requests=5",
        "--out",
        str(tmp_path),
        "--no-report",  # `report` below makes the plots and the page
    )
    assert r.returncode == 0, r.stderr
    run = only_run_dir(tmp_path)
    before = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()
    r = run_cli("report", str(run))
    assert r.returncode == 0, r.stderr
    after = json.loads((run / "summary.json").read_text())
    assert after["steps"] == before["steps"] and after["slo"] == before["slo"]
    assert (run / "report.html").is_file() and len(list((run / "plots").glob("*.png"))) == len(PLOTS)
    r = run_cli("report", str(tmp_path))
    assert r.returncode == 2 and "not a run directory" in r.stderr


def test_slo_failure_exits_1(tmp_path: Path) -> None:
    r = run_cli(
        "run",
        "scenarios/demo.yaml",
        "--set",
        "load.concurrency=[2]",
        "--set",
        "load.requests=4",
        "--set",
        "slo.ttft_ms.p50=1",
        "--out",
        str(tmp_path),
        "--no-report",
    )
    assert r.returncode == 1
    assert "SLO failed" in r.stdout and "ttft_ms p50" in r.stdout
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["slo"]["passed"] is False
    assert not (only_run_dir(tmp_path) / "report.html").exists()  # --no-report


@pytest.mark.parametrize(
    ("workers", "sig", "code"), [(1, signal.SIGINT, 130), (1, signal.SIGTERM, 143), (2, signal.SIGINT, 130)]
)
def test_interrupt_keeps_what_was_measured(tmp_path: Path, workers: int, sig: signal.Signals, code: int) -> None:
    with start_mock(MockSettings(ttft_ms=5, itl_ms=2, output_tokens=16)) as mock:
        sc = write(
            tmp_path / "long.yaml",
            f"target: {{base_url: '{mock.base_url}'}}\nload: {{concurrency: [4], duration_s: 60}}\n",
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadtest",
                "run",
                str(sc),
                "--out",
                str(tmp_path / "out"),
                "--grace-s",
                "5",
                "--workers",
                str(workers),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        deadline = time.monotonic() + 60
        jsonl = None
        while time.monotonic() < deadline:  # wait for evidence that requests completed, not for a time
            files = list((tmp_path / "out").glob("*/*/requests*.jsonl"))
            if len(files) == workers and all(len(f.read_text().splitlines()) >= 10 for f in files):
                jsonl = files[0].parent / "requests.jsonl"
                break
            time.sleep(0.05)
        assert jsonl is not None, "run never wrote records"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        stats = mock_stats(mock.base_url)
    assert proc.returncode == code, err
    summary = json.loads((jsonl.parent / "summary.json").read_text())
    records = list(read_records(jsonl))
    ok, failed = (sum(1 for x in records if x.status == s) for s in ("ok", "error"))
    (step,) = summary["steps"]
    assert summary["partial"] is True
    # every request the server received is a line of requests.jsonl, and each of those is ok or an error
    assert stats["requests"] == len(records) == ok + failed
    assert stats["stream_tokens"] == 16 * ok  # the ok ones are the streams the server sent to the end
    assert step["requests"] == {"sent": len(records), "ok": ok, "failed": failed}


@pytest.mark.timing
def test_workers_share_the_load_and_merge_into_one_run(tmp_path: Path) -> None:
    with start_mock(MockSettings(ttft_ms=20, itl_ms=2, output_tokens=16)) as mock:
        sc = write(
            tmp_path / "w.yaml",
            f"target: {{base_url: '{mock.base_url}'}}\nload: {{concurrency: [6], requests: 60, warmup_requests: 4}}\n",
        )
        r = run_cli("run", str(sc), "--workers", "2", "--out", str(tmp_path / "out"))
        assert r.returncode == 0, r.stderr
        stats = mock_stats(mock.base_url)
    run = only_run_dir(tmp_path / "out")
    assert sorted(p.name for p in run.iterdir()) == [
        "plots",
        "report.html",
        "requests.jsonl",
        "scenario.yaml",
        "server_metrics.jsonl",  # the mock's /metrics, read by the run's main process
        "steps.jsonl",
        "summary.csv",
        "summary.json",
    ]
    check_shared_by_two_workers(run, stats, started_within_ms=100)


def test_sigkill_then_report_rebuilds_a_partial_summary(tmp_path: Path) -> None:
    with start_mock(MockSettings(ttft_ms=5, itl_ms=2, output_tokens=16)) as mock:
        sc = write(
            tmp_path / "k.yaml",
            f"target: {{base_url: '{mock.base_url}'}}\nload: {{concurrency: [4], duration_s: 60}}\n",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest", "run", str(sc), "--out", str(tmp_path / "out")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        jsonl = None
        while time.monotonic() < deadline:  # wait for completed requests on disk
            found = list((tmp_path / "out").glob("*/*/requests.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 20:
                jsonl = found[0]
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
    assert jsonl is not None and not (jsonl.parent / "summary.json").exists()
    with open(jsonl, "a") as f:
        f.write('{"id": 999999, "step": 0, "sent_ns": 12')  # the line being written when the kill came
    complete = len(jsonl.read_text().splitlines()) - 1
    r = run_cli("report", str(jsonl.parent))
    assert r.returncode == 0, r.stderr
    assert "skipped an incomplete record" in r.stderr and "Traceback" not in r.stderr
    summary = json.loads((jsonl.parent / "summary.json").read_text())
    (step,) = summary["steps"]
    assert summary["partial"] is True and step["requests"]["sent"] == complete


def test_grace_period_expires_and_in_flight_requests_are_cancelled(tmp_path: Path) -> None:
    with start_mock(MockSettings(ttft_ms=30_000, itl_ms=0, output_tokens=4)) as mock:  # every request hangs
        sc = write(
            tmp_path / "hang.yaml",
            f"target: {{base_url: '{mock.base_url}'}}\nload: {{concurrency: [3], requests: 9}}\n",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest", "run", str(sc), "--out", str(tmp_path / "out"), "--grace-s", "0.5"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the server holds all three requests
            if mock_stats(mock.base_url)["in_flight"] == 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run = only_run_dir(tmp_path / "out")
    records = list(read_records(run / "requests.jsonl"))
    assert len(records) == 3 and all(x.error_class == "cancelled" for x in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["partial"] is True and summary["steps"][0]["errors"] == {"cancelled": 3}


@pytest.mark.parametrize(
    "how", [[], ["--workers", "2"], pytest.param(["--ray", "local", "--workers", "2"], marks=RAY_GROUP)]
)
def test_ctrl_c_at_a_terminal_lets_the_built_in_mock_finish_what_is_in_flight(tmp_path: Path, how: list[str]) -> None:
    """A terminal sends SIGINT to the whole process group: the mock the run started must keep
    serving through the grace period, so the requests in flight end ok, not broken."""
    sc = write(
        tmp_path / "c.yaml",
        "name: ctrlc\ntarget: {base_url: mock, mock: {ttft_ms: 100, itl_ms: 20, output_tokens: 16}}\n"
        "load: {concurrency: [4], duration_s: 120}\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "run", str(sc), "--out", str(tmp_path / "out"), "--no-report", *how],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
    )
    deadline = time.monotonic() + 200
    seen = False
    while time.monotonic() < deadline and proc.poll() is None and not seen:  # records on disk
        seen = any(len(f.read_text().splitlines()) >= 4 for f in (tmp_path / "out").glob("*/*/requests*.jsonl"))
        time.sleep(0.05)
    assert seen, "run never wrote records"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=200)
    assert proc.returncode == 130, err
    run = only_run_dir(tmp_path / "out")
    (step,) = json.loads((run / "summary.json").read_text())["steps"]
    records = list(read_records(run / "requests.jsonl"))
    assert len(records) >= 4 and [x.error_class for x in records if x.status != "ok"] == []  # none broken
    assert step["errors"] == {} and step["requests"] == {"sent": len(records), "ok": len(records), "failed": 0}
