"""``make bench``: how close loadtest's client comes to the floor, on this machine.

Each measurement runs in a fresh subprocess (``python -m bench.run one ...``) so that its CPU time
and peak RSS are the client's alone; the mock server runs in its own process.

- A: concurrency 64, mock TTFT 20 ms / ITL 2 ms, 64 output tokens, 4,000 streamed chat requests:
  throughput against the ideal 64 / (TTFT + 63 x ITL), client CPU per 1,000 requests and per
  100,000 tokens, TTFT/ITL p50/p99 minus what the mock measured it sent.
- B: concurrency 256, zero delays, 20,000 requests: the most one process does, its CPU share,
  its peak RSS (and at 100,000 requests: memory must not grow with the run).
- C: concurrency 256 at 20/2 ms: the share of the ideal rate one process delivers, and its TTFT error.
- D: long contexts: 32 concurrent 100,000-token prompts with 4,000-token answers: client CPU, TTFT
  error, and whether loadtest saw itself as the bottleneck (loop-lag warnings).
- A's marginal CPU: A at 2,000 and 6,000 requests, both clients: CPU per extra request (the issue's
  "client CPU per streamed request") and the fixed cost of a process (imports, tokenizer, summary).
- The same A, B and C with a bare asyncio client (bench/bare_client.py): the floor.
- W: B with ``--workers 2``: delivered req/s against one process (the mock shares the 2 cores).
- R: ``loadtest report`` of a 4,000-request, 8-step sweep, in a fresh process: CPU seconds.
- S: startup: ``loadtest validate``, a one-request ``loadtest run`` (no report), CPU seconds; the run's CPU
  up to its first request (summary.json ``harness.startup_cpu_s``) minus ``import openai``'s alone.
- The request-path alternatives inside AsyncOpenAI (bench/transports.py), behind README's choice.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# As the CLI does (cli.py): numpy's OpenBLAS threads, left spinning after each call they split, would
# count in the client's CPU. Set before numpy loads (``one`` imports loadtest when it runs).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
CASES: dict[str, dict[str, Any]] = {
    "A": {"ttft_ms": 20.0, "itl_ms": 2.0, "tokens": 64, "concurrency": 64, "requests": 4000},
    "B": {"ttft_ms": 0.0, "itl_ms": 0.0, "tokens": 64, "concurrency": 256, "requests": 20000},
    "C": {"ttft_ms": 20.0, "itl_ms": 2.0, "tokens": 64, "concurrency": 256, "requests": 12000},
    "W": {"ttft_ms": 0.0, "itl_ms": 0.0, "tokens": 64, "concurrency": 256, "requests": 20000, "workers": 2},
    "D": {"ttft_ms": 20.0, "itl_ms": 5.0, "tokens": 4000, "concurrency": 32, "requests": 32, "input_tokens": 100_000},
}
GOALS = {
    "A_cpu_s_per_1k": 1.0,
    "A_cpu_vs_bare": 1.6,
    "A_marginal_cpu_vs_bare": 1.0,
    "A_throughput_of_ideal": 0.95,
    "A_ttft_p50_err_ms": 1.5,
    "A_ttft_p99_err_ms": 5.0,
    "B_req_s": 2500.0,
    "B_peak_rss_mb": 200.0,
    "B_vs_bare_req_s": 1.0,
    "C_throughput_of_ideal": 0.9,
    "C_ttft_p50_err_ms": 3.0,
    "D_bottleneck_warnings": 0,
    "R_report_cpu_s": 1.0,
    "S_startup_minus_openai_s": 0.3,
}
_AT_LEAST = ("A_throughput_of_ideal", "B_req_s", "B_vs_bare_req_s", "C_throughput_of_ideal")


def _cpu() -> float:
    """This process's CPU and its finished children's (``--workers`` processes)."""
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_loadtest(base_url: str, case: dict[str, Any], out: Path) -> dict[str, Any]:
    from loadtest.config.scenario import Scenario
    from loadtest.runner import execute

    sc = Scenario.model_validate(
        {
            "name": "bench",
            "target": {"base_url": base_url, "timeout_s": 120},
            "workload": {
                "prompt": {"synthetic": {"input_tokens": case.get("input_tokens", 32)}},
                "max_tokens": case["tokens"],
            },
            "load": {
                "concurrency": [case["concurrency"]],
                "requests": case["requests"],
                "workers": case.get("workers", 1),
            },
        }
    )
    cpu0, t = _cpu(), time.perf_counter()
    outcome = execute(sc, "bench", out, on_step=lambda s: None, report=False)  # R measures the report
    wall, cpu = time.perf_counter() - t, _cpu() - cpu0
    (s,) = outcome.summary["steps"]
    return {
        "req_s": s["request_throughput"],
        "tok_s": s["output_token_throughput"],
        "cpu_s": cpu,
        "wall_s": wall,
        "ok": s["requests"]["ok"],
        "tokens": s["output_token_throughput"] * s["duration_s"],
        "ttft_p50": s["ttft_ms"]["p50"],
        "ttft_p99": s["ttft_ms"]["p99"],
        "itl_p50": s["itl_ms"]["p50"],
        "itl_p99": s["itl_ms"]["p99"],
        "loop_lag_p99": s["loop_lag_ms"]["p99"],
        "bottleneck_warnings": sum(w.startswith("client bottleneck") for w in s["warnings"]),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _one_bare(base_url: str, case: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import uvloop

    from bench.bare_client import run_bare

    cpu0 = _cpu()
    r = uvloop.run(run_bare(base_url, case["concurrency"], case["requests"], case["tokens"]))
    cpu = _cpu() - cpu0
    pct = lambda v, q: float(np.percentile(v, q)) if v else None  # noqa: E731
    return {
        "req_s": r.requests / r.wall_s,
        "tok_s": r.tokens / r.wall_s,
        "cpu_s": cpu,
        "wall_s": r.wall_s,
        "ok": r.requests,
        "tokens": r.tokens,
        "ttft_p50": pct(r.ttft_ms, 50),
        "ttft_p99": pct(r.ttft_ms, 99),
        "itl_p50": pct(r.itl_ms, 50),
        "itl_p99": pct(r.itl_ms, 99),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _mock_get(base_url: str, path: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(
        base_url.removesuffix("/v1") + path, method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _mock_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime in clock ticks (USER_HZ = 100)


def measure(client: str, case_name: str, requests: int | None = None) -> dict[str, Any]:
    """One client run against a fresh mock, in a subprocess; adds what the mock measured it sent."""
    from loadtest.mock import MockSettings, start_mock

    case = {**CASES[case_name], **({"requests": requests} if requests else {})}
    cfg = MockSettings(ttft_ms=case["ttft_ms"], itl_ms=case["itl_ms"], output_tokens=case["tokens"])
    with start_mock(cfg) as mock:
        cmd = [sys.executable, "-m", "bench.run", "one", client, case_name, mock.base_url, str(case["requests"])]
        mock_cpu0 = _mock_cpu_s(mock.proc.pid)
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench: {client} {case_name} failed: {done.stderr.strip().splitlines()[-1:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        stats = _mock_get(mock.base_url, "/mock/stats")
        result["mock_cpu_s"] = _mock_cpu_s(mock.proc.pid) - mock_cpu0
    result.update(
        mock_ttft_p50=stats["ttft_ms"]["p50"],
        mock_ttft_p99=stats["ttft_ms"]["p99"],
        mock_itl_p50=stats["itl_ms"]["p50"],
        mock_itl_p99=stats["itl_ms"]["p99"],
    )
    for k in ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99"):
        if result.get(k) is not None and result.get(f"mock_{k}") is not None:
            result[f"{k}_err_ms"] = result[k] - result[f"mock_{k}"]
    result["cpu_s_per_1k"] = result["cpu_s"] / result["ok"] * 1000
    result["cpu_s_per_100k_tok"] = result["cpu_s"] / result["tokens"] * 100_000 if result["tokens"] else None
    result["cpu_share"] = result["cpu_s"] / result["wall_s"]
    result["mock_cpu_share"] = result["mock_cpu_s"] / result["wall_s"]
    return result


def _child_cpu(cmd: list[str]) -> float:
    """CPU seconds (user + system) of one child process run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[2:4])} failed: {done.stderr.strip().splitlines()[-1:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


_OPENAI_IMPORT = "import time; t = time.process_time(); import openai; print(time.process_time() - t)"


def _openai_import_cpu(gc_off: bool) -> float:
    """CPU of ``import openai`` alone in a fresh interpreter: the part of startup that cannot go while
    the stack uses AsyncOpenAI. ``gc_off``: with the collector off, as loadtest imports it (``cli._imports``)."""
    code = ("import gc; gc.disable(); " if gc_off else "") + _OPENAI_IMPORT
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def _startup_cpu(cmd: list[str], out: Path) -> float:
    """``harness.startup_cpu_s`` of a one-request run: the process's CPU from its start to its first send."""
    _child_cpu([*cmd, "--out", str(out)])  # a new ``out`` each time: one run directory in it
    (summary,) = out.glob("*/*/summary.json")
    return json.loads(summary.read_text())["harness"]["startup_cpu_s"]


def measure_report_and_startup(reps: int) -> dict[str, Any]:
    """R: ``loadtest report`` of a 4,000-request sweep of 8 steps. S: ``loadtest validate``; a one-request
    run without a report (its whole CPU, and its CPU up to the first request sent, from summary.json);
    ``import openai`` alone; startup minus that. S's scenario needs no tokenizer: a text prompt, counted by
    the endpoint (``target.tokenizer: server``). loadtest's bytecode is compiled first, as an installed
    package's is: PYTHONDONTWRITEBYTECODE (set on these VMs) and an editable install would otherwise
    make every process compile ~150 modules (~0.4 s), which is not loadtest's work."""
    import tempfile

    from loadtest.mock import MockSettings, start_mock

    subprocess.run([sys.executable, "-m", "compileall", "-q", "loadtest"], cwd=ROOT, check=False)  # best effort
    loadtest = [sys.executable, "-m", "loadtest"]
    with tempfile.TemporaryDirectory() as tmp, start_mock(MockSettings(ttft_ms=0, itl_ms=0, output_tokens=64)) as mock:
        sweep, one = Path(tmp) / "sweep.yaml", Path(tmp) / "one.yaml"
        sweep.write_text(
            f"name: sweep\ntarget: {{base_url: '{mock.base_url}'}}\nworkload: {{max_tokens: 64}}\n"
            "load: {concurrency: [1, 2, 4, 8, 16, 32, 64, 128], requests: 500}\n"
        )
        one.write_text(
            f"name: one\ntarget: {{base_url: '{mock.base_url}', tokenizer: server}}\n"
            "workload: {max_tokens: 64, prompt: {text: 'Say hello.'}}\nload: {concurrency: [1], requests: 1}\n"
        )
        subprocess.run(
            [*loadtest, "run", str(sweep), "--out", tmp, "--no-report"], cwd=ROOT, check=True, capture_output=True
        )
        (run_dir,) = [d for d in Path(tmp, "sweep").iterdir() if d.is_dir()]
        report = [_child_cpu([*loadtest, "report", str(run_dir)]) for _ in range(reps)]
        validate = [_child_cpu([*loadtest, "validate", str(sweep)]) for _ in range(reps)]
        run = [_child_cpu([*loadtest, "run", str(one), "--no-report", "--out", tmp]) for _ in range(reps)]
        startup = [_startup_cpu([*loadtest, "run", str(one), "--no-report"], Path(tmp, f"s{i}")) for i in range(reps)]
        openai = [_openai_import_cpu(gc_off=True) for _ in range(reps)]
        plain = [_openai_import_cpu(gc_off=False) for _ in range(reps)]
    return {
        "R_report_cpu_s": statistics.median(report),
        "S_validate_cpu_s": statistics.median(validate),
        "S_run_cpu_s": statistics.median(run),
        "S_startup_cpu_s": statistics.median(startup),
        "S_openai_import_cpu_s": statistics.median(openai),
        "S_openai_plain_import_cpu_s": statistics.median(plain),  # the collector on: what a bare import costs
        "S_startup_minus_openai_s": statistics.median(startup) - statistics.median(openai),
    }


def measure_marginal(reps: int, short: int = 2000, long: int = 6000) -> dict[str, Any]:
    """A's client CPU per request with the process's fixed cost taken out: runs of ``short`` and
    ``long`` requests, both clients interleaved; (CPU(long) - CPU(short)) / (long - short) is what one
    more streamed request costs, and CPU(short) minus ``short`` of those is the fixed cost (imports,
    the tokenizer, the summary). Medians over ``reps``."""
    rows: dict[str, list[tuple[float, float]]] = {"loadtest": [], "bare": []}
    for _ in range(reps):
        for client in rows:
            a, b = measure(client, "A", short)["cpu_s"], measure(client, "A", long)["cpu_s"]
            per = (b - a) / (long - short)
            rows[client].append((per * 1e3, a - short * per))
    out = {}
    for client, pairs in rows.items():
        out[f"A_{client}_cpu_ms_per_req"] = statistics.median(p for p, _ in pairs)
        out[f"A_{client}_fixed_cpu_s"] = statistics.median(f for _, f in pairs)
    out["A_marginal_cpu_vs_bare"] = out["A_loadtest_cpu_ms_per_req"] / out["A_bare_cpu_ms_per_req"]
    return out


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in runs[0] if all(isinstance(r.get(k), int | float) for r in runs)]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def main_all(reps: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from bench.transports import compare_transports

    console = Console(width=140)
    machine = {
        "cpus": __import__("os").cpu_count(),
        "python": sys.version.split()[0],
        "platform": __import__("platform").platform(),
    }
    out: dict[str, Any] = {
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine,
        "repetitions": reps,
        "runs": {},
        "medians": {},
    }
    for case in ("A", "B", "C", "D", "W"):
        for client in ("loadtest", "bare") if case in ("A", "B", "C") else ("loadtest",):
            runs = []
            for rep in range(reps):
                console.print(f"[dim]{case} {client} repetition {rep + 1}/{reps}...[/]")
                runs.append(measure(client, case))
            out["runs"][f"{case}_{client}"] = runs
            out["medians"][f"{case}_{client}"] = _median(runs)
    console.print("[dim]B loadtest at 100,000 requests (memory)...[/]")
    out["B_loadtest_100k"] = measure("loadtest", "B", requests=100_000)
    console.print("[dim]A's CPU per request, fixed cost taken out (2,000 and 6,000 requests)...[/]")
    out["marginal"] = measure_marginal(reps)
    console.print("[dim]report of a 4,000-request sweep, and startup...[/]")
    out["report_and_startup"] = measure_report_and_startup(reps)
    console.print("[dim]request paths inside AsyncOpenAI...[/]")
    out["transports"] = compare_transports()

    m = out["medians"]
    a, ab, b, bb = m["A_loadtest"], m["A_bare"], m["B_loadtest"], m["B_bare"]
    c, cb, d = m["C_loadtest"], m["C_bare"], m["D_loadtest"]
    ideal = CASES["A"]["concurrency"] / ((CASES["A"]["ttft_ms"] + 63 * CASES["A"]["itl_ms"]) / 1000)
    ideal_c = CASES["C"]["concurrency"] / ((CASES["C"]["ttft_ms"] + 63 * CASES["C"]["itl_ms"]) / 1000)
    figures = {
        "A_ideal_req_s": ideal,
        "A_throughput_of_ideal": a["req_s"] / ideal,
        "A_cpu_s_per_1k": a["cpu_s_per_1k"],
        "A_cpu_s_per_100k_tok": a["cpu_s_per_100k_tok"],
        "A_cpu_vs_bare": a["cpu_s_per_1k"] / ab["cpu_s_per_1k"],
        "A_ttft_p50_err_ms": a["ttft_p50_err_ms"],
        "A_ttft_p99_err_ms": a["ttft_p99_err_ms"],
        "A_itl_p50_err_ms": a["itl_p50_err_ms"],
        "A_itl_p99_err_ms": a["itl_p99_err_ms"],
        "A_bare_ttft_p50_err_ms": ab["ttft_p50_err_ms"],
        "A_bare_ttft_p99_err_ms": ab["ttft_p99_err_ms"],
        "B_req_s": b["req_s"],
        "B_tok_s": b["tok_s"],
        "B_cpu_share": b["cpu_share"],
        "B_mock_cpu_share": b["mock_cpu_share"],
        "B_vs_bare_req_s": b["req_s"] / bb["req_s"],
        "B_bare_req_s": bb["req_s"],
        "B_peak_rss_mb": b["peak_rss_mb"],
        "B_100k_peak_rss_mb": out["B_loadtest_100k"]["peak_rss_mb"],
        "B_100k_req_s": out["B_loadtest_100k"]["req_s"],
        "C_ideal_req_s": ideal_c,
        "C_throughput_of_ideal": c["req_s"] / ideal_c,
        "C_bare_throughput_of_ideal": cb["req_s"] / ideal_c,
        "C_ttft_p50_err_ms": c["ttft_p50_err_ms"],
        "C_bare_ttft_p50_err_ms": cb["ttft_p50_err_ms"],
        "C_cpu_vs_bare": c["cpu_s_per_1k"] / cb["cpu_s_per_1k"],
        "W_workers_2_vs_1_req_s": m["W_loadtest"]["req_s"] / b["req_s"],
        # CPU a request costs across the 2 workers (children included) against one process: at 1.0,
        # N workers on N free cores deliver N times one process's rate (README: --workers)
        "W_cpu_per_req_vs_one": m["W_loadtest"]["cpu_s_per_1k"] / b["cpu_s_per_1k"],
        "D_cpu_s_per_request": d["cpu_s"] / d["ok"],
        "D_ttft_p50_err_ms": d["ttft_p50_err_ms"],
        "D_itl_p50_err_ms": d["itl_p50_err_ms"],
        "D_bottleneck_warnings": d["bottleneck_warnings"],
        "D_loop_lag_p99_ms": d["loop_lag_p99"],
        **out["marginal"],
        **out["report_and_startup"],
    }
    out["figures"] = figures
    out["goals"] = {
        k: {
            "goal": g,
            "value": figures[k],
            "met": figures[k] >= g if k in _AT_LEAST else figures[k] <= g,
        }
        for k, g in GOALS.items()
    }
    path = ROOT / "results" / "bench" / f"{out['started_at'].replace(':', '').replace('-', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")

    t = Table(
        title=f"loadtest bench, medians of {reps} ({machine['cpus']} CPUs, Python {machine['python']})",
        title_justify="left",
    )
    for col in ("figure", "value", "goal", "met"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for k, v in figures.items():
        goal = out["goals"].get(k)
        t.add_row(
            k,
            f"{v:,.3f}" if isinstance(v, float) else str(v),
            "" if goal is None else f"{goal['goal']:g}",
            "" if goal is None else ("yes" if goal["met"] else "[red]no[/]"),
        )
    console.print(t)
    tt = Table(title="request paths inside AsyncOpenAI (zero-delay mock, concurrency 64)", title_justify="left")
    for col in ("path", "req/s", "client CPU ms/request"):
        tt.add_column(col, justify="left" if col == "path" else "right")
    for row in out["transports"]:
        tt.add_row(row["path"], f"{row['req_s']:,.0f}", f"{row['cpu_ms_per_req']:.3f}")
    console.print(tt)
    console.print(f"written: {path.relative_to(ROOT)}")


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.run")
    sub = p.add_subparsers(dest="cmd")
    one = sub.add_parser("one")
    one.add_argument("client", choices=["loadtest", "bare"])
    one.add_argument("case", choices=list(CASES))
    one.add_argument("base_url")
    one.add_argument("requests", type=int)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    if args.cmd == "one":
        case = {**CASES[args.case], "requests": args.requests}
        if args.client == "loadtest":
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                result = _one_loadtest(args.base_url, case, Path(tmp))
        else:
            result = _one_bare(args.base_url, case)
        print(json.dumps(result))
        return
    main_all(args.reps)


if __name__ == "__main__":
    main()
