"""Load generation on Ray actors (``--ray local``: a Ray instance on 127.0.0.1, stopped after the run)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.engine.raycluster import clock_offset_ns, lost_record, unreachable
from loadtest.mock import MockSettings, start_mock
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

pytestmark = RAY_GROUP  # one worker of `make test`'s parallel pass runs every Ray test, one at a time

# The test cluster's token authentication (Ray's default): the head and the client share the token.
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
RAY_TIMEOUT_S = 240  # Ray's own start and stop take a few seconds of a 2-core machine


def test_clock_offset_uses_the_shortest_round_trip() -> None:
    # (local before, remote, local after): the remote clock runs 5 ms ahead; the slow sample misleads
    samples = [(1_000, 5_000_000 + 1_500, 2_000), (10_000, 5_000_000 + 30_000, 60_000), (3_000, 5_003_200, 3_400)]
    offset, rtt = clock_offset_ns(samples)
    assert rtt == 400 and offset == 5_003_200 - 3_200


def test_lost_record_is_a_failed_attempt_of_its_worker() -> None:
    rec = lost_record((42, 3, False, 2, 1_000, None, 5_000, True), worker=1, end_ns=9_000)
    assert (rec.id, rec.step, rec.attempt, rec.worker) == (42, 3, 2, 1)
    assert rec.status == "error" and rec.error_class == "worker_lost" and rec.final
    assert (rec.sent_ns, rec.end_ns, rec.first_sent_ns) == (5_000, 9_000, 1_000)
    unsent = lost_record((7, 0, False, 1, None, 2_000, 0, True), worker=0, end_ns=1_000)
    assert unsent.sent_ns == 2_000 and unsent.end_ns == 2_000  # not sent yet: due time, never negative


@pytest.mark.timing
def test_ray_workers_share_the_load_and_merge_into_one_run(tmp_path: Path) -> None:
    with start_mock(MockSettings(ttft_ms=20, itl_ms=2, output_tokens=16)) as mock:
        sc = write(
            tmp_path / "ray.yaml",
            f"name: onray\ntarget: {{base_url: '{mock.base_url}'}}\n"
            "load: {concurrency: [6], requests: 60, warmup_requests: 4}\n"
            "distributed: {engine: ray, address: local, workers: 2}\n",
        )
        ray_tmp = Path(tempfile.mkdtemp(prefix="lt-rl-", dir="/tmp"))
        try:
            r = run_cli(
                "run",
                str(sc),
                "--out",
                str(tmp_path / "out"),
                "--no-report",
                env={"RAY_TMPDIR": str(ray_tmp)},
                timeout=RAY_TIMEOUT_S,
            )
            assert r.returncode == 0, r.stderr
            assert not _processes_mentioning(str(ray_tmp))  # the Ray instance the run started has stopped
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
        stats = mock_stats(mock.base_url)
    run = only_run_dir(tmp_path / "out")
    assert sorted(p.name for p in run.iterdir()) == [
        "cluster.json",
        "requests.jsonl",
        "scenario.yaml",
        "server_metrics.jsonl",  # scraped by the driver, beside the actors' load
        "steps.jsonl",
        "summary.csv",
        "summary.json",
    ]
    _, summary = check_shared_by_two_workers(run, stats, started_within_ms=50)
    cluster = json.loads((run / "cluster.json").read_text())
    assert cluster["engine"] == "ray" and [w["worker"] for w in cluster["workers"]] == [0, 1]
    assert all(abs(w["clock_offset_ms"]) < 50 and not w["died"] for w in cluster["workers"])
    # `loadtest report` recomputes the same summary from the merged records
    rep = run_cli("report", str(run))
    assert rep.returncode == 0, rep.stderr
    again = json.loads((run / "summary.json").read_text())
    assert again["steps"] == summary["steps"] and again["slo"] == summary["slo"]


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue  # ended meanwhile
    return pids


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A Ray head on 127.0.0.1 (2 CPUs, no dashboard), as `ray start --head` on a cluster's head
    node; `ray stop` afterwards. Its files in a short directory of its own (Ray's socket paths)."""
    temp = Path(tempfile.mkdtemp(prefix="lt-rh-", dir="/tmp"))
    port = free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    start = [ray_cli, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1"]
    start += ["--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)]
    env = {**os.environ, **RAY_AUTH}
    try:
        r = subprocess.run(start, capture_output=True, text=True, timeout=RAY_TIMEOUT_S, env=env)
        assert r.returncode == 0, r.stderr
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=RAY_TIMEOUT_S, env=env)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.timing  # starts Ray actors: on the parallel pass a busy CPU starves its nodes
def test_a_running_ray_cluster_takes_the_workers(tmp_path: Path, ray_head: str) -> None:
    with start_mock(MockSettings(ttft_ms=10, itl_ms=2, output_tokens=8)) as mock:
        sc = write(
            tmp_path / "c.yaml",
            f"name: oncluster\ntarget: {{base_url: '{mock.base_url}'}}\nload: {{rate: [40], requests: 40}}\n",
        )
        r = run_cli(
            "run",
            str(sc),
            "--ray",
            ray_head,
            "--workers",
            "2",
            "--out",
            str(tmp_path / "out"),
            "--no-report",
            env=RAY_AUTH,
            timeout=RAY_TIMEOUT_S,
        )
        assert r.returncode == 0, r.stderr
        assert mock_stats(mock.base_url)["requests"] == 40
    run = only_run_dir(tmp_path / "out")
    records = list(read_records(run / "requests.jsonl"))
    assert len(records) == 40 and all(x.status == "ok" for x in records)
    (step,) = json.loads((run / "summary.json").read_text())["steps"]
    assert [w["sent"] for w in step["workers"]] == [20, 20]  # open loop: rate 20/s each, half the requests
    assert all(x.scheduled_ns is not None for x in records)  # open-loop due times, on the head's timeline
    pids = {w["pid"] for w in json.loads((run / "cluster.json").read_text())["workers"]}
    assert len(pids) == 2


def test_actors_the_cluster_cannot_place_end_the_run_after_start_timeout_s(tmp_path: Path, ray_head: str) -> None:
    sc = write(tmp_path / "big.yaml", "name: big\ntarget: {base_url: mock}\nload: {requests: 4}\n")
    r = run_cli(
        "run",
        str(sc),
        *("--ray", ray_head, "--workers", "2", "--out", str(tmp_path / "out"), "--no-report"),
        *("--set", "distributed.cpus_per_worker=2", "--set", "distributed.start_timeout_s=2"),
        env=RAY_AUTH,
        timeout=RAY_TIMEOUT_S,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith(("warning:", "error:"))]
    assert "need 4 CPUs and the Ray cluster has 2;" in lines[0] and "waiting up to 2 s" in lines[0], lines
    # "1 of 2" (both, should the previous test's actors still hold the CPUs)
    assert lines[-1].startswith(f"error: {sc}: distributed.workers: "), lines
    assert "of 2 Ray actors were not placed within distributed.start_timeout_s (2 s" in lines[-1]


def test_ctrl_c_while_the_actors_start_keeps_a_readable_run(tmp_path: Path, ray_head: str) -> None:
    sc = write(tmp_path / "wait.yaml", "name: wait\ntarget: {base_url: mock}\nload: {requests: 4}\n")
    cmd = [sys.executable, "-m", "loadtest", "run", str(sc), "--ray", ray_head, "--workers", "2"]
    cmd += ["--out", str(tmp_path / "out"), "--no-report", "--set", "distributed.cpus_per_worker=2"]
    env = os.environ | RAY_AUTH
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + RAY_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None and not list((tmp_path / "out").glob("*/*/cluster.json")):
        time.sleep(0.05)  # one actor is placed, the other waits for CPUs that never come
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=RAY_TIMEOUT_S)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "error: interrupted; partial results" in err
    run = only_run_dir(tmp_path / "out")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["partial"] is True and summary["steps"] == []
    assert json.loads((run / "cluster.json").read_text())["requested"] == 2
    assert (run / "requests.jsonl").read_text() == ""
    assert run_cli("report", str(run)).returncode == 0


def test_a_local_ray_without_the_cpus_for_the_actors_is_one_line(tmp_path: Path) -> None:
    sc = write(tmp_path / "s.yaml", "name: s\ntarget: {base_url: mock}\n")
    r = run_cli(
        "run",
        str(sc),
        *("--ray", "local", "--out", str(tmp_path / "out"), "--set", "distributed.cpus_per_worker=1000"),
        timeout=RAY_TIMEOUT_S,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and f"{sc}: distributed.workers: 2 actors x cpus_per_worker 1000 need 2000 CPUs" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.timing  # starts Ray actors: on the parallel pass a busy CPU starves its nodes
def test_a_lost_ray_worker_is_counted_and_the_run_goes_on(tmp_path: Path) -> None:
    with start_mock(MockSettings(ttft_ms=20, itl_ms=5, output_tokens=16)) as mock:
        sc = write(
            tmp_path / "kill.yaml",
            f"name: lose\ntarget: {{base_url: '{mock.base_url}'}}\nload: {{concurrency: [4], requests: 300}}\n",
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadtest",
                "run",
                str(sc),
                "--ray",
                "local",
                "--workers",
                "2",
                "--out",
                str(tmp_path / "out"),
                "--no-report",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        deadline = time.monotonic() + RAY_TIMEOUT_S
        victim = None
        while time.monotonic() < deadline and proc.poll() is None:  # worker 1's records reached the head
            part = list((tmp_path / "out").glob("*/*/requests.w1.jsonl"))
            if part and len(part[0].read_text().splitlines()) >= 10:
                victim = json.loads((part[0].parent / "cluster.json").read_text())["workers"][1]["pid"]
                break
            time.sleep(0.05)
        assert victim is not None, "worker 1 never sent records"
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=RAY_TIMEOUT_S)
        stats = mock_stats(mock.base_url)
    assert proc.returncode == 0, err
    assert "Ray worker 1" in err and "worker_lost" in err
    run = only_run_dir(tmp_path / "out")
    records = list(read_records(run / "requests.jsonl"))
    lost = [x for x in records if x.error_class == "worker_lost"]
    assert 1 <= len(lost) <= 2 and {x.worker for x in lost} == {1}  # its share of the concurrency: 2
    assert sum(1 for x in records if x.worker == 0) == 150  # the other worker finished its share
    assert sum(1 for x in records if x.worker == 1) < 150
    ok = [x for x in records if x.status == "ok"]
    assert len(ok) + len(lost) == len(records)  # every other record is an answer
    # each ok record is a stream the server sent to the end; the lost ones it may or may not have answered
    assert len(ok) <= stats["stream_tokens"] // 16 and len(ok) <= stats["requests"]
    (step,) = json.loads((run / "summary.json").read_text())["steps"]
    assert step["requests"] == {"sent": len(records), "ok": len(ok), "failed": len(lost)}
    assert step["errors"] == {"worker_lost": len(lost)}
    assert any(w.startswith("worker lost") for w in step["warnings"])
    died = {w["worker"]: w["died"] for w in json.loads((run / "cluster.json").read_text())["workers"]}
    assert died == {0: False, 1: True}


def test_without_ray_the_error_says_how_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    write(fake / "__init__.py", "raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
    sc = write(tmp_path / "s.yaml", "name: s\ntarget: {base_url: mock}\n")
    r = run_cli("run", str(sc), "--ray", "local", "--out", str(tmp_path / "out"), env={"PYTHONPATH": str(fake.parent)})
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "pip install 'loadtest[ray]'" in r.stderr and str(sc) in r.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_an_unreachable_ray_address_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    sc = write(tmp_path / "s.yaml", "name: s\ntarget: {base_url: mock}\n")
    r = run_cli("run", str(sc), "--ray", "127.0.0.1:1", "--out", str(tmp_path / "out"), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{sc}: distributed.address: cannot connect to Ray at '127.0.0.1:1' (Connection refused)" in r.stderr
    assert not (tmp_path / "out").exists()


def test_unreachable_reads_host_and_port_forms() -> None:
    assert unreachable("127.0.0.1:1") == "Connection refused"
    assert unreachable("ray://127.0.0.1:1") == "Connection refused"
    assert unreachable("local") is None and unreachable("auto") is None  # Ray resolves these itself


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("load: {workers: 2}\ndistributed: {workers: 2}\n", "distributed: give the number of workers here"),
        ("load: {search: {}}\ndistributed: {}\n", "distributed: load.search and load.stop run in one process"),
        ("distributed: {engine: dask}\n", "distributed.engine"),
    ],
)
def test_distributed_settings_are_checked(tmp_path: Path, extra: str, message: str) -> None:
    sc = write(tmp_path / "d.yaml", "name: d\n" + extra)
    r = run_cli("validate", str(sc))
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_cli_workers_with_ray_are_ray_actors(tmp_path: Path) -> None:
    from loadtest.cli import _run_overrides

    plain = write(tmp_path / "p.yaml", "name: p\n")
    dist = write(tmp_path / "d.yaml", "name: d\ndistributed: {address: auto}\n")
    assert _run_overrides(plain, [], 3, None) == ["load.workers=3"]
    assert _run_overrides(plain, [], 3, "local") == [
        "distributed.engine=ray",
        'distributed.address="local"',
        "distributed.workers=3",
    ]
    assert _run_overrides(dist, [], 4, None) == ["distributed.workers=4"]
