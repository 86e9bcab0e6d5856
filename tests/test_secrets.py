"""The API key never reaches a results file, a log, or an error message."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loadtest.mock import MockConfig, start_mock

from .conftest import run_cli, write

CANARY = "sk-loadtest-CANARY-7f3a9c1e5b2d4680"


class _Leaky(BaseHTTPRequestHandler):
    """A server that puts the caller's Authorization header into its 401 error body."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"error": {"message": f"bad credentials: {self.headers.get('authorization')}"}}).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def leaky_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Leaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def assert_no_canary(out_dir: Path, *texts: str) -> int:
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    for p in files:
        assert CANARY not in p.read_bytes().decode("utf-8", "replace"), p
        assert CANARY[-12:] not in p.read_bytes().decode("utf-8", "replace"), p
    for t in texts:
        assert CANARY not in t and CANARY[-12:] not in t
    return len(files)


def test_key_never_written_or_printed(tmp_path: Path, leaky_server: str) -> None:
    env = {"LOADTEST_CANARY_KEY": CANARY}
    with start_mock(MockConfig(ttft_ms=1, itl_ms=0, output_tokens=4)) as mock:
        ok = write(
            tmp_path / "ok.yaml",
            f"target: {{base_url: '{mock.base_url}', api_key_env: LOADTEST_CANARY_KEY}}\n"
            "load: {concurrency: [2], requests: 6}\n",
        )
        r1 = run_cli("run", str(ok), "--out", str(tmp_path / "out"), env=env)
        assert r1.returncode == 0, r1.stderr
    leak = write(
        tmp_path / "leak.yaml",
        f"target: {{base_url: '{leaky_server}', api_key_env: LOADTEST_CANARY_KEY}}\n"
        "load: {concurrency: [2], requests: 6}\n",
    )
    r2 = run_cli("run", str(leak), "--out", str(tmp_path / "out"), env=env)
    assert r2.returncode == 0, r2.stderr  # the run completed; every request is an http_4xx record
    down = write(
        tmp_path / "down.yaml",
        "target: {base_url: 'http://127.0.0.1:9/v1', api_key_env: LOADTEST_CANARY_KEY,"
        " connect_timeout_s: 1}\nload: {requests: 2}\n",
    )
    r3 = run_cli("run", str(down), "--out", str(tmp_path / "out"), env=env)
    r4 = run_cli("validate", str(leak), env=env)
    report_dir = next(p for p in (tmp_path / "out" / "leak").iterdir() if p.is_dir())
    r5 = run_cli("report", str(report_dir), env=env)
    outputs = [x for r in (r1, r2, r3, r4, r5) for x in (r.stdout, r.stderr)]
    assert assert_no_canary(tmp_path / "out", *outputs) >= 12
    records = (report_dir / "requests.jsonl").read_text()
    assert records.count('"error_class":"http_4xx"') == 6 and "[redacted]" in records


def test_key_stays_out_of_a_ray_run_and_rays_logs(tmp_path: Path, leaky_server: str) -> None:
    """The key travels to the Ray actors as a call argument: not into the run directory, the
    terminal, or the logs of the Ray session the run started."""
    leak = write(
        tmp_path / "leak.yaml",
        f"target: {{base_url: '{leaky_server}', api_key_env: LOADTEST_CANARY_KEY}}\n"
        "load: {concurrency: [2], requests: 6}\n",
    )
    ray_tmp = Path(tempfile.mkdtemp(prefix="lt-ray-", dir="/tmp"))  # its logs; short: Ray's socket paths
    try:
        r = run_cli(
            "run",
            str(leak),
            "--ray",
            "local",
            "--out",
            str(tmp_path / "out"),
            env={"LOADTEST_CANARY_KEY": CANARY, "RAY_TMPDIR": str(ray_tmp)},
            timeout=240,
        )
        assert r.returncode == 0, r.stderr
        assert assert_no_canary(tmp_path / "out", r.stdout, r.stderr) >= 5
        logs = [p for p in ray_tmp.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err", ".txt")]
        assert logs, "the Ray session wrote no logs where expected"
        for p in logs:
            assert CANARY[-12:] not in p.read_bytes().decode("utf-8", "replace"), p
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
