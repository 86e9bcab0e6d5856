"""What loadtest's own process costs before its first request and for a report (README "How the request
path was chosen"): the startup CPU a run records, and the waste the CLI avoids (spinning BLAS threads,
an import it never uses, a template compiled again in every process)."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx2
import jinja2
import pytest
import trustme

from loadtest.config.scenario import Scenario
from loadtest.mock import MockProcess
from loadtest.output.rundir import load_run
from loadtest.runner import execute
from tests.conftest import ROOT


def _cpu_s() -> float:
    """This process's CPU so far, as the kernel's rusage counts it (not the clock the run reads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _small_run(mock_server: Callable[..., MockProcess], name: str, requests: int) -> Scenario:
    """A one-connection run of ``requests`` short answers against a zero-delay mock of its own."""
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=8)
    return Scenario.model_validate(
        {
            "name": name,
            "target": {"base_url": mock.base_url, "timeout_s": 20},
            "workload": {"max_tokens": 8},
            "load": {"concurrency": [1], "requests": requests},
        }
    )


def test_a_run_records_its_cpu_at_its_first_send(mock_server: Callable[..., MockProcess], tmp_path: Path) -> None:
    """harness.startup_cpu_s: the process's CPU when the first request went out, so more than it had
    used before the run began and less than it had used when the run was over; kept by `loadtest report`."""
    sc = _small_run(mock_server, "startup", requests=3)
    before = _cpu_s()
    outcome = execute(sc, "startup.yaml", tmp_path, on_step=lambda s: None, report=False)
    after = _cpu_s()
    startup = outcome.summary["harness"]["startup_cpu_s"]
    assert before < startup < after, (before, startup, after)
    on_disk = json.loads((outcome.run_dir / "summary.json").read_text())
    assert on_disk["harness"] == {"startup_cpu_s": startup}
    assert load_run(outcome.run_dir).summary["harness"] == {"startup_cpu_s": startup}  # known at run time only


def test_what_a_run_starts_with_is_frozen_out_of_the_collector(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    """The objects alive when a run begins (imports, the scenario, the tokenizer) are out of the
    collector's walks by the time a request is answered: gc.get_objects() (what the collector walks)
    no longer holds a list kept alive through the run, and the freeze count has grown by at least
    that list's 50,001 objects."""
    sc = _small_run(mock_server, "frozen", requests=2)
    ballast = [[i] for i in range(50_000)]  # tracked objects alive through the run, as openai's models are
    frozen_before = gc.get_freeze_count()
    walked: list[tuple[bool, int]] = []

    def at_first_event(_: object) -> None:
        if not walked:
            walked.append((any(o is ballast for o in gc.get_objects()), gc.get_freeze_count()))

    execute(sc, "frozen.yaml", tmp_path, on_step=lambda s: None, report=False, observers=[at_first_event])
    (still_walked, frozen), *_ = walked
    assert not still_walked
    assert frozen - frozen_before >= len(ballast) + 1, (frozen_before, frozen)


def _after_cli(code: str) -> str:
    """What ``code`` prints in a fresh interpreter once ``loadtest validate`` has run through the CLI's main."""
    script = (
        "import os, sys\n"
        "from loadtest.cli import main\n"
        "sys.argv = ['loadtest', 'validate', 'scenarios/demo.yaml']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n" + code
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_cli_process_runs_numpy_on_one_thread() -> None:
    """OpenBLAS would start a thread per core, left spinning after each call it splits: the process
    stays on one thread (the kernel's count of its tasks) once numpy is loaded."""
    assert _after_cli("import numpy\nprint(len(os.listdir('/proc/self/task')))") == "1"


def test_the_cli_process_loads_httpcore_without_trio() -> None:
    """httpcore2 imports trio when it is installed (the dev extras' selenium brings it); the CLI's never does."""
    assert _after_cli("import httpcore2._synchronization as sync\nprint(sync.trio is None)") == "True"


def test_the_report_template_compiles_once_for_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new environment (a new process's) loads the template jinja compiled before, without compiling it."""
    from loadtest.output.htmlreport import _environment

    _environment().get_template("report.html.j2")  # compiled here, or by an earlier process
    compiled: list[str] = []
    compile_ = jinja2.Environment.compile

    def counting(self: jinja2.Environment, *args: object, **kwargs: object) -> object:
        compiled.append(self.__class__.__name__)
        return compile_(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    template = _environment().get_template("report.html.j2")
    assert compiled == []
    assert "<!doctype html>" in template.render(
        title="t", tool_version="0", columns=[], notes=[], runs=[], plots=[]
    )  # the cached code renders the page


def test_the_clients_beside_the_load_load_the_cas_at_their_first_https_handshake(
    mock_server: Callable[..., MockProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca_loads: list[str]
) -> None:
    """The metrics and tokenize clients share one default context a process. Its CAs (~0.1 s of CPU,
    before the first request) load at the first https handshake: never for a plain http:// URL, once
    for any number of https clients, and verification stays on (a server of another CA fails)."""
    from loadtest.config.tls import _default, default_context
    from loadtest.transport.scrape import MetricsClient
    from loadtest.workload.servertok import ServerCounter

    ca, stranger = trustme.CA(), trustme.CA()
    for name, authority in (("ca.pem", ca), ("stranger.pem", stranger)):
        authority.cert_pem.write_to_path(tmp_path / name)
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    plain = mock_server(ttft_ms=0, itl_ms=0, output_tokens=4)
    https = mock_server(ttft_ms=0, itl_ms=0, output_tokens=4, tls_cert=str(tmp_path / "server.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))  # httpx2's default trust, with trust_env
    assert default_context() is default_context(True) is default_context(trust_env=True)  # one cache key

    plain_metrics = plain.base_url.removesuffix("/v1") + "/metrics"
    for _ in range(3):
        client = MetricsClient(plain_metrics, headers={}, timeout_s=5.0)
        assert client.get().status == 200
        client.close()
    assert ServerCounter(plain.base_url, "mock-model", {}, 5.0).probe is not None  # the mock's /tokenize
    assert ca_loads == []

    https_metrics = https.base_url.removesuffix("/v1") + "/metrics"
    for _ in range(2):
        client = MetricsClient(https_metrics, headers={}, timeout_s=5.0)
        assert client.get().status == 200
        client.close()
    assert ca_loads == ["load CAs"]

    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "stranger.pem"))
    _default.cache_clear()
    client = MetricsClient(https_metrics, headers={}, timeout_s=5.0)
    with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get()
    client.close()


_MID_RUN = """
import sys
from pathlib import Path
from loadtest.analysis.events import RequestDone, StepFinished
from loadtest.config.scenario import Scenario
from loadtest.runner import execute
seen = {}
def watch(event):
    if isinstance(event, RequestDone) and "first" not in seen:
        seen["first"] = set(sys.modules)
    elif isinstance(event, StepFinished):
        seen["last"] = set(sys.modules)
scenario = Scenario.model_validate({"name": "m", "target": {"base_url": sys.argv[1]}, "workload": {"max_tokens": 8},
                                    "load": {"concurrency": [1, 2], "requests": 20}})
execute(scenario, "m.yaml", Path(sys.argv[2]), on_step=lambda s: None, observers=[watch], report=False)
print(" ".join(sorted(seen["last"] - seen["first"])))
"""


def test_no_module_is_imported_between_the_first_answer_and_the_last_step_end(
    mock_server: Callable[..., MockProcess], tmp_path: Path
) -> None:
    """An import inside the run holds the event loop while requests are in flight (README: a module the
    run needs is imported before its first request). A fresh interpreter, so that no other test's
    imports hide one; numpy 2 imports numpy.ma on np.percentile's first call (a step's loop-lag line)."""
    mock = mock_server(ttft_ms=0, itl_ms=0, output_tokens=8)
    done = subprocess.run(
        [sys.executable, "-c", _MID_RUN, mock.base_url, str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [], done.stdout
