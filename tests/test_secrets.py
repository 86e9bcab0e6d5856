"""The API key never reaches a results file, a log, or an error message."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loadtest.config.loading import load_scenario
from loadtest.config.scenario import ScenarioError
from loadtest.mock import MockSettings, start_mock
from tests.conftest import RAY_GROUP, mock_stats, only_run_dir, run_cli, write

CANARY = "sk-loadtest-CANARY-7f3a9c1e5b2d4680"


def _deny(handler: BaseHTTPRequestHandler, message: str) -> None:
    """Answer 401 with an OpenAI-style error whose message is ``message`` (what the caller sent)."""
    body = json.dumps({"error": {"message": message}}).encode()
    handler.send_response(401)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Leaky(BaseHTTPRequestHandler):
    """A server that puts the caller's Authorization header into its 401 error body."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _deny(self, f"bad credentials: {self.headers.get('authorization')}")

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
    with start_mock(MockSettings(ttft_ms=1, itl_ms=0, output_tokens=4)) as mock:
        ok = write(
            tmp_path / "ok.yaml",
            f"target: {{base_url: '{mock.base_url}', api_key_env: LOADTEST_CANARY_KEY}}\n"
            "load: {concurrency: [2], requests: 6}\n",
        )
        r1 = run_cli("run", str(ok), "--out", str(tmp_path / "out"), "--no-report", env=env)
        assert r1.returncode == 0, r1.stderr
    leak = write(
        tmp_path / "leak.yaml",
        f"target: {{base_url: '{leaky_server}', api_key_env: LOADTEST_CANARY_KEY}}\n"
        "load: {concurrency: [2], requests: 6}\n",
    )
    r2 = run_cli("run", str(leak), "--out", str(tmp_path / "out"), "--no-report", env=env)
    assert r2.returncode == 0, r2.stderr  # the run completed; every request is an http_4xx record
    down = write(
        tmp_path / "down.yaml",
        "target: {base_url: 'http://127.0.0.1:9/v1', api_key_env: LOADTEST_CANARY_KEY,"
        " connect_timeout_s: 1}\nload: {requests: 2}\n",
    )
    r3 = run_cli("run", str(down), "--out", str(tmp_path / "out"), env=env)
    r4 = run_cli("validate", str(leak), env=env)
    report_dir = next(p for p in (tmp_path / "out" / "leak").iterdir() if p.is_dir())
    r5 = run_cli("report", str(report_dir), env=env)  # the report (plots, report.html) of the run with the key
    assert r5.returncode == 0 and (report_dir / "report.html").is_file(), r5.stderr
    outputs = [x for r in (r1, r2, r3, r4, r5) for x in (r.stdout, r.stderr)]
    assert assert_no_canary(tmp_path / "out", *outputs) >= 12
    records = (report_dir / "requests.jsonl").read_text()
    assert records.count('"error_class":"http_4xx"') == 6 and "[redacted]" in records


@RAY_GROUP
@pytest.mark.timing  # starts a local Ray: on the parallel pass a busy CPU starved its GCS (a fresh clone, 11-26)
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


# --- ${VAR} in target only; header values, variables' values and URL credentials redacted ---

AZ_KEY = "az-CANARY-0d9e8f7a6b5c4d3e2f1a"  # what Azure OpenAI takes in its api-key header


def leaks(secrets: list[str], out_dir: Path, *texts: str) -> list[str]:
    """Where any of ``secrets`` shows: the files under ``out_dir`` (by path) and the texts (by index)."""
    found = [str(p) for p in out_dir.rglob("*") if p.is_file() for s in secrets if s in p.read_text("utf-8", "replace")]
    return found + [f"text {i}" for i, t in enumerate(texts) for s in secrets if s in t]


def outputs(*results: subprocess.CompletedProcess[str]) -> list[str]:
    return [x for r in results for x in (r.stdout, r.stderr)]


def test_azure_style_header_key_reaches_the_mock_and_no_file_or_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """headers: {api-key: ${AZ_KEY}} against a mock that wants that key: every request is accepted,
    and the key is in no file of the run (nor the report, history, compare, JUnit) and no output."""
    monkeypatch.setenv("AZ_KEY", AZ_KEY)  # the mock process reads the key it expects from the same variable
    cfg = MockSettings(ttft_ms=1, itl_ms=0, output_tokens=4, api_key_header="api-key", api_key_env="AZ_KEY")
    out = tmp_path / "out"
    with start_mock(cfg) as mock:
        sc = write(
            tmp_path / "azure.yaml",
            "name: azure\ntarget:\n  base_url: ${LT_AZ_BASE}\n  model: ${LT_AZ_DEPLOYMENT}\n"
            "  headers: {api-key: '${AZ_KEY}'}\nload: {concurrency: [2], requests: 6}\n",
        )
        env = {"AZ_KEY": AZ_KEY, "LT_AZ_BASE": mock.base_url, "LT_AZ_DEPLOYMENT": "gpt-4o-prod-deployment"}
        r_run = run_cli(
            "run", str(sc), "--out", str(out / "runs"), "--junit", str(out / "junit.xml"), "--no-report", env=env
        )
        assert r_run.returncode == 0, r_run.stderr
        stats = mock_stats(mock.base_url)
    assert stats["requests"] == 6 and stats["unauthorized"] == 0  # the key reached the server, every time
    run = only_run_dir(out / "runs")
    r_validate = run_cli("validate", str(sc), env=env)
    assert r_validate.returncode == 0, r_validate.stderr
    r_report = run_cli("report", str(run))  # reads the run's own scenario.yaml back: no variable needed
    r_compare = run_cli("compare", str(run), str(run), "--junit", str(out / "compare.xml"))
    assert r_report.returncode == 0 and r_compare.returncode == 0, r_report.stderr + r_compare.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"][0]["requests"] == {"sent": 6, "ok": 6, "failed": 0}
    # values from variables show as the reference the file wrote, never as the value
    assert summary["target"]["base_url"] == "${LT_AZ_BASE}" and summary["target"]["model"] == "${LT_AZ_DEPLOYMENT}"
    assert "api-key: ${AZ_KEY}" in (run / "scenario.yaml").read_text() and "api-key: ${AZ_KEY}" in r_validate.stdout
    files = {p.name for p in out.rglob("*") if p.is_file()}
    assert {"scenario.yaml", "summary.json", "summary.csv", "report.html", "requests.jsonl", "history.jsonl"} <= files
    assert {"compare.json", "compare.md", "junit.xml", "compare.xml"} <= files
    secrets = [AZ_KEY, AZ_KEY[-12:], mock.base_url.removesuffix("/v1"), "gpt-4o-prod-deployment"]
    assert leaks(secrets, out, *outputs(r_run, r_validate, r_report, r_compare)) == []


def test_the_mock_answers_401_without_the_right_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like OpenAI and Azure: 401 with a JSON error (that does not echo what was sent) when the key is
    missing or wrong; authorization takes it as a Bearer token."""
    monkeypatch.setenv("LT_MOCK_KEY", AZ_KEY)

    def post(base: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        req = urllib.request.Request(f"{base}/chat/completions", body.encode(), {**headers, "content-type": "json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    azure = MockSettings(ttft_ms=0, itl_ms=0, output_tokens=2, api_key_header="api-key", api_key_env="LT_MOCK_KEY")
    openai = MockSettings(
        ttft_ms=0, itl_ms=0, output_tokens=2, api_key_header="authorization", api_key_env="LT_MOCK_KEY"
    )
    with start_mock(azure) as a, start_mock(openai) as o:
        missing = post(a.base_url, {})
        wrong = post(a.base_url, {"api-key": "not-the-key"})
        bearer_elsewhere = post(a.base_url, {"authorization": f"Bearer {AZ_KEY}"})
        right = post(a.base_url, {"api-key": AZ_KEY})
        bearer = post(o.base_url, {"authorization": f"Bearer {AZ_KEY}"})
        bare = post(o.base_url, {"authorization": AZ_KEY})
        stats_a, stats_o = mock_stats(a.base_url), mock_stats(o.base_url)
    for status, body in (missing, wrong, bearer_elsewhere, bare):
        assert status == 401 and body["error"]["code"] == "invalid_api_key", body
        assert "not-the-key" not in json.dumps(body) and AZ_KEY not in json.dumps(body)
    assert right[0] == 200 and right[1]["usage"]["completion_tokens"] == 2
    assert bearer[0] == 200
    assert (stats_a["unauthorized"], stats_a["requests"]) == (3, 1)
    assert (stats_o["unauthorized"], stats_o["requests"]) == (1, 1)


def test_a_run_with_the_wrong_key_gets_401s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LT_MOCK_KEY", AZ_KEY)
    cfg = MockSettings(ttft_ms=0, itl_ms=0, output_tokens=2, api_key_header="api-key", api_key_env="LT_MOCK_KEY")
    with start_mock(cfg) as mock:
        sc = write(
            tmp_path / "wrong.yaml",
            f"target: {{base_url: '{mock.base_url}', headers: {{api-key: wrong-key-123}}}}\nload: {{requests: 3}}\n",
        )
        r = run_cli("run", str(sc), "--out", str(tmp_path / "out"), "--no-report")
        stats = mock_stats(mock.base_url)
    assert r.returncode == 0, r.stderr
    assert (stats["unauthorized"], stats["requests"]) == (3, 0)
    records = [json.loads(x) for x in (only_run_dir(tmp_path / "out") / "requests.jsonl").read_text().splitlines()]
    assert [(x["http_status"], x["error_class"]) for x in records] == [(401, "http_4xx")] * 3
    assert leaks(["wrong-key-123"], tmp_path / "out", r.stdout, r.stderr) == []  # a literal header value too


@dataclass
class Seen:
    """What the echo server received."""

    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def echo_server() -> Iterator[tuple[int, Seen]]:
    """Records each request and answers 401 with everything it got in the message, as a careless
    gateway might: the harness must keep that out of its records."""
    seen = Seen()

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.paths.append(self.path)
            seen.headers.append(dict(self.headers))
            seen.bodies.append(json.loads(raw))
            _deny(self, f"denied {self.path} {dict(self.headers)}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()


def test_credentials_in_base_url_are_redacted_everywhere(tmp_path: Path, echo_server: tuple[int, Seen]) -> None:
    port, seen = echo_server
    password, query_key, header = "pa55-URL-CANARY-91c4", "QUERY-CANARY-5e27b", "HEADER-CANARY-3f0a"
    url = f"http://tester:{password}@127.0.0.1:{port}/v1?key={query_key}"
    basic = base64.b64encode(f"tester:{password}".encode()).decode()
    sc = write(
        tmp_path / "url.yaml",
        f"name: url\ntarget: {{base_url: '{url}', headers: {{x-api-key: {header}}}}}\nload: {{requests: 3}}\n",
    )
    down = write(
        tmp_path / "down.yaml",
        f"name: down\ntarget: {{base_url: 'http://tester:{password}@127.0.0.1:9/v1?key={query_key}',"
        " connect_timeout_s: 1}\nload: {requests: 2}\n",
    )
    out = tmp_path / "out"
    r_run = run_cli("run", str(sc), "--out", str(out))
    r_down = run_cli("run", str(down), "--out", str(out), "--no-report")
    r_validate = run_cli("validate", str(sc))
    assert r_run.returncode == 0 and r_validate.returncode == 0, r_run.stderr + r_validate.stderr
    # the credentials did reach the server (the echo server put them in every error body) ...
    assert len(seen.paths) == 3 and all(query_key in p for p in seen.paths)
    assert all(h.get("Authorization") == f"Basic {basic}" and h.get("x-api-key") == header for h in seen.headers)
    # ... and reached nothing the harness wrote or printed
    secrets = [password, query_key, basic, header]
    assert leaks(secrets, out, *outputs(r_run, r_down, r_validate)) == []
    shown = f"http://[redacted]@127.0.0.1:{port}/v1?key=[redacted]"
    assert f"base_url: {shown}" in r_validate.stdout
    run = out / "url" / next(p.name for p in (out / "url").iterdir() if p.is_dir())
    assert json.loads((run / "summary.json").read_text())["target"]["base_url"] == shown
    assert r_down.returncode == 2 and "connect to http://[redacted]@127.0.0.1:9/v1?key=[redacted]" in r_down.stderr


def test_prompt_and_body_text_is_sent_as_written(
    tmp_path: Path, echo_server: tuple[int, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside target nothing is expanded: "explain ${HOME}" goes out as "explain ${HOME}", and a
    variable that is not set is no error there."""
    monkeypatch.setenv("HOME", "/home/someone")
    port, seen = echo_server
    sc = write(
        tmp_path / "p.yaml",
        f"target: {{base_url: 'http://127.0.0.1:{port}/v1'}}\n"
        "workload:\n  prompt: {text: 'explain ${HOME} and $${X}'}\n  system_prompt: 'as ${LT_NEVER_SET}'\n"
        "  stream: false\n  extra_body: {user: '${HOME}'}\nload: {requests: 1}\n",
    )
    r = run_cli("run", str(sc), "--out", str(tmp_path / "out"), "--no-report")
    assert r.returncode == 0, r.stderr
    (body,) = seen.bodies
    assert body["messages"] == [
        {"role": "system", "content": "as ${LT_NEVER_SET}"},
        {"role": "user", "content": "explain ${HOME} and $${X}"},
    ]
    assert body["user"] == "${HOME}"


def test_escaped_reference_in_target_is_literal(tmp_path: Path) -> None:
    p = write(tmp_path / "e.yaml", "target: {model: 'm-$${X}', headers: {x-tag: '$${X}:${X}'}}\n")
    sc = load_scenario(p, env={"X": "v"})
    assert sc.target.model == "m-${X}" and sc.target.headers == {"x-tag": "${X}:v"}


def test_unset_variable_outside_target_is_not_an_error(tmp_path: Path) -> None:
    p = write(
        tmp_path / "u.yaml", "description: 'needs ${LT_NEVER_SET}'\nworkload: {prompt: {text: '${LT_NEVER_SET}'}}\n"
    )
    sc = load_scenario(p, env={})
    assert sc.description == "needs ${LT_NEVER_SET}" and sc.workload.prompt.text == "${LT_NEVER_SET}"  # type: ignore[union-attr]
    r = run_cli("validate", str(p))
    assert r.returncode == 0 and "text: ${LT_NEVER_SET}" in r.stdout, r.stderr
    with pytest.raises(ScenarioError, match=r"u2\.yaml: target\.model: environment variable LT_NEVER_SET is not set"):
        load_scenario(write(tmp_path / "u2.yaml", "target: {model: '${LT_NEVER_SET}'}\n"), env={})


def test_mock_key_settings_come_together(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"k\.yaml: target\.mock: .*api_key_header and api_key_env"):
        load_scenario(write(tmp_path / "k.yaml", "target: {mock: {api_key_header: api-key}}\n"))
    r = run_cli("mock", "--port", "0", "--api-key-header", "api-key", "--api-key-env", "LT_NEVER_SET")
    assert r.returncode == 2 and "environment variable LT_NEVER_SET is not set" in r.stderr


def test_a_bad_target_value_is_not_echoed_in_the_error(tmp_path: Path) -> None:
    p = write(tmp_path / "b.yaml", "target: {base_url: '${LT_BAD_URL}', headers: {api-key: 12345678901}}\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(p, env={"LT_BAD_URL": "api.example.com/v1?key=URL-CANARY-77"})
    assert "target.base_url: expected 'mock' or an http(s):// URL" in str(e.value)
    assert "URL-CANARY-77" not in str(e.value) and "12345678901" not in str(e.value)
