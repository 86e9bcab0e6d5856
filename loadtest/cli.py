"""The ``loadtest`` command (typer). Thin: parse, call, print; user errors are one line and exit 2."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadtest.analysis.checks import EXIT_HARNESS
from loadtest.config.faults import FAULTS
from loadtest.config.loading import load_scenario, scenario_to_yaml
from loadtest.config.mock import MockSettings, MockStartError
from loadtest.config.scenario import ScenarioError
from loadtest.output.table import print_step_table, step_line
from loadtest.workload.tokens import TokenizerError, token_source, tokenizer_problem

__all__ = ["app", "main"]

# Commands import the heavy modules (the driver, the plots, numpy statistics) when they run:
# `loadtest mock` and `loadtest validate` start in a third of the time.

# numpy's OpenBLAS starts a thread per core, and each call it splits across them (the dot product of
# a step's ITL gaps) leaves them spinning: 0.1-0.4 s of CPU for a report, and loadtest needs no
# parallel linear algebra. Set before numpy loads (the commands import it); the user's value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Load-test OpenAI-compatible LLM endpoints from YAML scenarios.",
)
# Off a terminal (CI logs, pipes) rich would wrap the step table at 80 columns: give it room.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def error(message: str) -> None:
    """One line on stderr. Text from outside (paths, messages) is escaped: rich would read
    ``[ray]`` in ``loadtest[ray]`` as markup and drop it."""
    err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


SetOpt = Annotated[list[str], typer.Option("--set", help="Override a field: load.concurrency=[1,8]")]


@contextlib.contextmanager
def _imports() -> Iterator[None]:
    """A command's heavy imports (openai's types: ~700 pydantic models; numpy; the plots) with the
    garbage collector off, then every object so far frozen: they live until exit, and collecting
    them cost 0.2-0.3 s of CPU before the first request; collections during the run skip them."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except (ScenarioError, TokenizerError, MockStartError) as e:
        error(str(e))
        raise typer.Exit(EXIT_HARNESS) from None
    except OSError as e:  # an output path that cannot be written (--out, --junit, results/)
        where = f"{e.filename}: " if e.filename else ""
        error(f"{where}{e.strerror or e.__class__.__name__}")
        raise typer.Exit(EXIT_HARNESS) from None


def _run_overrides(scenario: Path, set_: list[str], workers: int | None, ray_address: str | None) -> list[str]:
    """``--workers`` and ``--ray`` as ``--set`` overrides: with Ray (flag or ``distributed:`` in
    the file) the workers are Ray actors (distributed.workers), else processes (load.workers)."""
    extra = []
    if ray_address is not None:
        extra += ["distributed.engine=ray", f"distributed.address={json.dumps(ray_address)}"]
    if workers is not None:
        ray = ray_address is not None or load_scenario(scenario, set_).distributed is not None
        extra.append(f"{'distributed' if ray else 'load'}.workers={workers}")
    return [*set_, *extra]


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file")],
    set_: SetOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    out_dir: Annotated[Path, typer.Option("--out", help="Parent of the run directory")] = Path("results"),
    grace_s: Annotated[float, typer.Option("--grace-s", help="Seconds in-flight requests get after Ctrl-C")] = 5.0,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Processes (or with --ray, Ray actors) sharing each step's load"),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run the workers as Ray actors: local (a new local Ray), auto, HOST:PORT or ray://HOST:10001",
        ),
    ] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write SLO verdicts as JUnit XML")] = None,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip plots and report.html (loadtest report can make them later)")
    ] = False,
) -> None:
    """Run a scenario and write a run directory."""
    with _imports():
        from loadtest.output.junit import slo_junit
        from loadtest.runner import execute

    with _user_errors():
        sc = load_scenario(scenario, _run_overrides(scenario, set_, workers, ray_address))
        if sys.version_info < (3, 12) and sc.target.transport == "aiohttp":
            warn(
                "Python < 3.12 with target.transport: aiohttp: aiohttp delays each request's write by one "
                "event-loop iteration, which adds to measured TTFT under load; use h1 or Python >= 3.12"
            )
        try:
            outcome = execute(
                sc,
                str(scenario),
                out_dir,
                grace_s=grace_s,
                on_step=lambda s: err.print(escape(step_line(s)), highlight=False),
                warn=warn,
                live=err if err.is_terminal else None,
                report=not no_report,
            )
        except KeyboardInterrupt:  # the run handles signals once it sends; this is setup (Ray, the mock)
            error("interrupted before the first request was sent: nothing was measured")
            raise typer.Exit(130) from None
        if junit is not None:
            slo_junit(outcome.summary, junit)
    print_step_table(outcome.summary, out)
    if text := outcome.summary.get("headline"):
        out.print(escape(text), highlight=False)
    if route := outcome.summary["tokenizer"].get("route"):
        out.print(f"tokens counted by the endpoint's {escape(route)}", highlight=False)
    out.print(f"results: {escape(str(outcome.run_dir))}", highlight=False)
    if not no_report and (outcome.run_dir / "report.html").is_file():  # not when drawing failed or was stopped
        out.print(f"report: {escape(str(outcome.run_dir / 'report.html'))}", highlight=False)
    if outcome.message:
        error(outcome.message)
    raise typer.Exit(outcome.exit_code)


@app.command()
def validate(scenario: Path, set_: SetOpt = []) -> None:  # noqa: B006
    """Validate a scenario and print it resolved, with every default filled in."""
    with _user_errors():
        sc = load_scenario(scenario, set_)
    out.print(scenario_to_yaml(sc), end="", highlight=False, markup=False)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="One run directory, or several to compare")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where a comparison goes (default: results/compare/<UTC time>)")
    ] = None,
) -> None:
    """Recompute summaries, plots and report.html from requests.jsonl; several runs: one comparison report."""
    with _imports():
        from loadtest.output.htmlreport import write_report
        from loadtest.output.rundir import load_run, write_summary

    with _user_errors():
        runs = [load_run(d, warn=warn) for d in run_dirs]
        for run in runs:
            write_summary(run.run_dir, run.summary)
        if len(runs) == 1:
            print_step_table(runs[0].summary, out)
            path = write_report(runs, runs[0].run_dir)
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            target = out_dir or Path("results") / "compare" / stamp
            labels = [f"{r.scenario.name}/{r.run_dir.name}" for r in runs]
            if len(set(labels)) < len(labels):
                labels = [str(r.run_dir) for r in runs]
            path = write_report(runs, target, labels)
    out.print(f"report: {escape(str(path))}", highlight=False)


def _tolerance(text: str) -> float:
    value = text.strip()
    try:
        t = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ScenarioError(f"--tolerance: expected a share like 5% or 0.05, got {text!r}") from None
    if not 0 <= t < 10:
        raise ScenarioError(f"--tolerance: expected a share like 5% or 0.05, got {text!r}")
    return t


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="The baseline run directory")],
    candidate: Annotated[Path, typer.Argument(help="The candidate run directory")],
    tolerance: Annotated[str, typer.Option(help="A change within it is noise: 5% or 0.05")] = "5%",
    junit: Annotated[Path | None, typer.Option("--junit", help="Write one test case per step and metric")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where compare.json/.md go (default: candidate)")
    ] = None,
    seed: int = 0,
) -> None:
    """Did the candidate regress against the baseline, beyond noise? Exit 1 when it did."""
    from loadtest.analysis.compare import compare_runs
    from loadtest.output.junit import compare_junit, compare_markdown
    from loadtest.output.rundir import load_run, write_atomic

    with _user_errors():
        tol = _tolerance(tolerance)
        base, cand = load_run(baseline), load_run(candidate)
        result = compare_runs(base, cand, tolerance=tol, seed=seed)
        target = out_dir or cand.run_dir
        target.mkdir(parents=True, exist_ok=True)
        write_atomic(target / "compare.json", json.dumps(result, indent=2) + "\n")
        write_atomic(target / "compare.md", compare_markdown(result))
        if junit is not None:
            compare_junit(result, junit)
    t = Table(title=f"compare (tolerance {100 * tol:.0f}%, 95% bootstrap CI)", title_justify="left")
    for col in ("load", "metric", "baseline", "candidate", "change", "95% CI", "verdict"):
        t.add_column(col, justify="left" if col in ("load", "metric", "verdict") else "right")
    for r in result["rows"]:
        style = {"regressed": "red", "improved": "green"}.get(r["verdict"], "")
        t.add_row(
            f"{r['mode']}={r['value']}",
            r["label"],
            f"{r['baseline']:.4g}",
            f"{r['candidate']:.4g}",
            f"{100 * r['change']:+.1f}%",
            f"{100 * r['ci95'][0]:+.1f}% .. {100 * r['ci95'][1]:+.1f}%",
            f"[{style}]{r['verdict']}[/]" if style else r["verdict"],
        )
    out.print(t)
    out.print(f"compare: {escape(str(target / 'compare.json'))}", highlight=False)
    if not result["rows"]:
        error("no step of the candidate matches a step of the baseline (mode and load)")
        raise typer.Exit(EXIT_HARNESS)
    raise typer.Exit(0 if result["passed"] else 1)


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="A scenario name (results/<name>/history.jsonl)")],
    results: Annotated[Path, typer.Option("--results", help="The results directory")] = Path("results"),
) -> None:
    """The trend of a scenario's runs: a table, and a plot per key metric."""
    from loadtest.output.history import plot_history, read_history

    path = results / name / "history.jsonl"
    if not path.is_file():
        error(f"{path}: no history (runs of scenario {name!r} append to it)")
        raise typer.Exit(EXIT_HARNESS)
    runs = read_history(path)
    t = Table(title=f"{name}: {len(runs)} runs", title_justify="left")
    for col in ("started", "SLOs", "load", "out tok/s", "req/s", "TTFT p50", "TPOT p50", "E2E p99", "errors"):
        t.add_column(col, justify="left" if col in ("started", "SLOs", "load") else "right")
    for h in runs:
        for s in h["steps"]:
            f = lambda v, d=1: "-" if v is None else f"{v:,.{d}f}"  # noqa: E731
            t.add_row(
                h["started_at"],
                "ok" if h["slo_passed"] else "[red]failed[/]",
                f"{s['mode']}={s['value']}",
                f(s["output_token_throughput"]),
                f(s["request_throughput"], 2),
                f(s["ttft_ms.p50"]),
                f(s["tpot_ms.p50"], 2),
                f(s["e2e_ms.p99"]),
                f(s["error_rate"], 3),
            )
    out.print(t)
    for h in runs:  # a capacity search's answer, one line a run
        if (c := h.get("capacity")) and c.get("value") is not None:
            top = "open" if c["hi"] is None else f"{c['hi']:g}"
            out.print(f"{h['started_at']}  capacity {c['value']:g} {c['unit']} (interval {c['lo']:g}..{top})")
    plots = plot_history(runs, results / name / "history")
    out.print(f"trend plots: {escape(str(plots[0].parent))}", highlight=False)


dataset_app = typer.Typer(no_args_is_help=True, help="Prompt datasets: write a scenario's prompts to a file.")
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("build")
def dataset_build(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file")],
    out_file: Annotated[Path, typer.Option("--out", help="The JSONL file to write")],
    count: Annotated[int | None, typer.Option(min=1, help="Prompts to write (default: what a run sends)")] = None,
    set_: SetOpt = [],  # noqa: B006
) -> None:
    """Write the prompts a run of SCENARIO sends, for `workload.prompt.file` to replay byte for byte."""
    from loadtest.workload.export import write_dataset

    with _user_errors():
        sc = load_scenario(scenario, set_)
        n, used = write_dataset(sc, out_file, count, str(scenario))
    nonces = [x.run_nonce for x in (getattr(used.workload.prompt, "shared_prefix", None), used.load.trace) if x]
    note = f" (run nonce {nonces[0]})" if nonces else ""
    out.print(f"{n} prompts{note} written to {escape(str(out_file))}", highlight=False)


@app.command()
def mock(
    host: str = "127.0.0.1",
    port: int = 8000,
    ttft_ms: float = 20.0,
    itl_ms: float = 5.0,
    jitter_ms: float = 0.0,
    output_tokens: int = 64,
    capacity_tok_s: Annotated[float | None, typer.Option(help="Shared token rate across streams")] = None,
    usage: Annotated[bool, typer.Option(help="Send usage when stream_options.include_usage asks")] = True,
    seed: int = 0,
    fault: Annotated[
        list[str], typer.Option("--fault", help=f"KIND=RATE, repeatable; kinds: {', '.join(FAULTS)}")
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    stall_s: Annotated[float, typer.Option(help="Length of a 'stall' fault")] = 2.0,
    slow_first_byte_s: Annotated[float, typer.Option(help="Delay of a 'slow_first_byte' fault")] = 2.0,
    rpm: Annotated[float | None, typer.Option(help="Rate limit: requests per minute (429 beyond)")] = None,
    tpm: Annotated[float | None, typer.Option(help="Rate limit: tokens per minute (prompt + max_tokens)")] = None,
    rpd: Annotated[float | None, typer.Option(help="Rate limit: requests per day")] = None,
    tpd: Annotated[float | None, typer.Option(help="Rate limit: tokens per day")] = None,
    burst_s: Annotated[
        float | None, typer.Option(help="Seconds of its rate a bucket holds (default: the whole period)")
    ] = None,
    ratelimit_headers: Annotated[str, typer.Option(help="Header dialect: openai | cerebras | none")] = "openai",
    ratelimit_minute_s: Annotated[
        float, typer.Option(help="How long the limiter's minute lasts (tests compress time)")
    ] = 60.0,
    tls_cert: Annotated[str | None, typer.Option(help="PEM certificate (and key): serve https")] = None,
    tls_key: Annotated[str | None, typer.Option(help="PEM key of --tls-cert, when not in the same file")] = None,
    tls_client_ca: Annotated[str | None, typer.Option(help="Require client certificates from this CA")] = None,
    api_key_header: Annotated[
        str | None, typer.Option(help="Require the key in this header (api-key, x-api-key, authorization); else 401")
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="NAME of the variable holding the key --api-key-header must carry")
    ] = None,
    reasoning_tokens: Annotated[int, typer.Option(help="Chat: reasoning tokens streamed before the answer")] = 0,
    tokens_per_chunk: Annotated[int, typer.Option(help="Tokens in one streamed chunk")] = 1,
    reasoning_field: Annotated[
        str, typer.Option(help="Delta field of the reasoning: reasoning_content | reasoning (vLLM >= 0.11)")
    ] = "reasoning_content",
    tokenizer: Annotated[
        str | None, typer.Option(help="A tokenizer.json (or cached model id) to count prompts and generate with")
    ] = None,
    tokenize: Annotated[
        str, typer.Option(help="Tokenize routes served: all | vllm | llama-server | llama-cpp-python | none")
    ] = "all",
    slots: Annotated[
        int | None, typer.Option(help="At most this many requests generate at once; the rest wait in line")
    ] = None,
    request_log: Annotated[int, typer.Option(help="Requests GET /mock/requests keeps (bodies, headers, times)")] = 0,
    metrics: Annotated[str, typer.Option(help="GET /metrics: vllm (vLLM's names) | none (404)")] = "vllm",
    prefix_cache: Annotated[
        str | None,
        typer.Option(help="A prefix cache: on, or block_tokens=16,capacity_tokens=262144,prefill_ms_per_1k=20"),
    ] = None,
    responses_reasoning: Annotated[
        str, typer.Option(help="/v1/responses reasoning events: summary | text | hidden")
    ] = "summary",
    embed_ms_per_1k_tokens: Annotated[
        float, typer.Option(help="/v1/embeddings: time per 1,000 input tokens, on top of --ttft-ms")
    ] = 0.0,
) -> None:
    """Serve the OpenAI-compatible mock (Ctrl-C to stop)."""
    # (Long only in its signature: one typer option per MockSettings field; the body is short.)
    options = {k: v for k, v in locals().items() if k not in ("host", "port", "fault", "prefix_cache")}
    with _user_errors():
        if port < 0 or port > 65535:
            raise MockStartError(f"--port: expected 0..65535, got {port}")
        options["prefix_cache"] = _key_values("--prefix-cache", prefix_cache)
        settings = _mock_settings(options, fault)
        if (unset := settings.unset_key_env()) is not None:  # its value is never printed
            raise MockStartError(f"--api-key-env: environment variable {unset} is not set")
        if tokenizer is not None and (token_source(tokenizer) != "hf" or tokenizer_problem(tokenizer)):
            raise MockStartError(f"--tokenizer: {tokenizer_problem(tokenizer) or 'expected a tokenizer.json'}")
        from loadtest.mock import run_mock  # here: every other command starts without the server's modules

        run_mock(settings, host, port)


def _mock_settings(options: dict[str, object], fault: list[str]) -> MockSettings:
    """The options checked by the one model the scenario's ``target.mock`` uses; errors name the flag."""
    faults: dict[str, object] = {}
    for f in fault:
        kind, sep, rate = f.partition("=")
        if not sep:
            raise MockStartError(f"--fault: expected KIND=RATE, got {f!r}")
        faults[kind] = rate
    try:
        return MockSettings.model_validate({**options, "faults": faults})
    except ValidationError as err:
        e = err.errors()[0]
        field = str(e["loc"][0]) if e["loc"] else ""
        flag = "--fault" if field == "faults" else "--" + field.replace("_", "-")
        detail = f" (kinds: {', '.join(FAULTS)})" if field == "faults" else ""
        key = f"{e['loc'][1]}: " if field == "prefix_cache" and len(e["loc"]) > 1 else ""
        raise MockStartError(f"{flag}: {key}{e['msg']}{detail}") from None


def _key_values(flag: str, text: str | None) -> dict[str, str] | None:
    """``on`` (every default) or ``KEY=VALUE,KEY=VALUE``; None when the option is not given."""
    if text is None:
        return None
    if text.strip() == "on":
        return {}
    pairs = [p.partition("=") for p in text.split(",") if p.strip()]
    if any(not sep or not k.strip() for k, sep, _ in pairs):
        raise MockStartError(f"{flag}: expected on or KEY=VALUE,KEY=VALUE, got {text!r}")
    return {k.strip(): v.strip() for k, _, v in pairs}


def main() -> None:
    # httpcore2 (under the clients of httpx2's own transport: the metrics scraper's, the tokenize
    # route's) imports trio whenever it is installed (selenium brings it to dev installs) only to ask,
    # later, whether it runs under trio. loadtest never does; the import cost 0.1-0.2 s of CPU.
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]  # `import trio` fails: httpcore2 goes without
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command (typer turns one inside into exit 130)
        sys.exit(130)
    finally:
        # On the way out the interpreter's last garbage collections walk every object left (numpy's,
        # pydantic's, the modules'): ~0.2 s of CPU. Frozen objects are skipped; nothing is lost, since
        # exit frees them all anyway.
        gc.freeze()
