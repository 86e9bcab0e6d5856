"""A run directory: write it while a run goes, read it back, rebuild its summary from the records.

``results/<scenario name>/<UTC timestamp>/``: ``scenario.yaml`` (resolved, no secrets),
``requests.jsonl`` (one record a line, flushed as each request completes), ``summary.json``
(atomic), ``summary.csv`` (one row a step).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from loadtest.analysis.events import Event, event_line
from loadtest.analysis.headline import headline
from loadtest.analysis.limitprobe import ProbeSeries
from loadtest.analysis.records import RequestRecord, record_from_json
from loadtest.analysis.servermetrics import ServerSeries
from loadtest.analysis.steady import Timelines
from loadtest.analysis.summary import Run, accumulate, build_summary
from loadtest.analysis.timeviews import add_time_views, server_status
from loadtest.config.loading import load_scenario, scenario_to_yaml
from loadtest.config.scenario import Scenario, ScenarioError
from loadtest.config.steps import plan_steps
from loadtest.output.servermetrics import read_server_metrics
from loadtest.workload.tokens import tokenizer_info

__all__ = [
    "Recorder",
    "RunFiles",
    "analyze",
    "load_run",
    "merge_worker_files",
    "new_run_dir",
    "read_records",
    "read_run_records",
    "read_step_health",
    "write_atomic",
    "write_scenario",
    "write_summary",
]

_CSV_STATS = ("p50", "p90", "p99")
_CSV_DISTS = ("ttft_ms", "ttfa_ms", "itl_ms", "tpot_ms", "e2e_ms")


def new_run_dir(parent: Path, name: str, started: datetime) -> Path:
    base = parent / name / started.strftime("%Y%m%dT%H%M%SZ")
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    path.mkdir(parents=True)
    return path


def write_atomic(path: Path, text: str) -> None:
    """Temporary file + rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e  # name the caller's file, not our temporary one
    finally:
        tmp.unlink(missing_ok=True)  # after a failure; after the rename it is already gone


def merge_worker_files(run_dir: Path) -> None:
    """Append every ``<name>.w<i>.jsonl`` to ``<name>.jsonl`` and remove it. A worker killed while
    writing leaves a torn last line: it is closed with a newline, so only that line is unreadable."""
    for stem in ("requests", "steps"):
        parts = sorted(run_dir.glob(f"{stem}.w*.jsonl"), key=lambda p: int(p.name.split(".w")[1].split(".")[0]))
        if not parts:
            continue
        with open(run_dir / f"{stem}.jsonl", "ab") as out:
            for part in parts:
                with open(part, "rb") as f:
                    last = b"\n"
                    while chunk := f.read(1 << 20):
                        out.write(chunk)
                        last = chunk[-1:]
                if last != b"\n":
                    out.write(b"\n")
            out.flush()
            os.fsync(out.fileno())
        for part in parts:
            part.unlink()


class Recorder:
    """Consumes driver events: each completed request is appended and flushed to requests.jsonl,
    each finished step's harness health (event-loop lag) to steps.jsonl."""

    def __init__(self, run_dir: Path, suffix: str = "") -> None:
        self.path = run_dir / f"requests{suffix}.jsonl"
        self.steps_path = run_dir / f"steps{suffix}.jsonl"
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.count = 0

    def __call__(self, event: Event) -> None:
        if (out := event_line(event)) is not None:
            self.write(*out)

    def write(self, stem: str, line: str) -> None:
        if stem == "requests":
            self._file.write(line + "\n")
            self._file.flush()
            self.count += 1
        else:
            with open(self.steps_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class RunFiles:
    """A run directory as the engine writes it (``engine/sinks.py``): a path, so it pickles to workers."""

    run_dir: Path

    def recorder(self, worker: int | None = None) -> Recorder:
        return Recorder(self.run_dir, suffix="" if worker is None else f".w{worker}")

    def write(self, name: str, text: str) -> None:
        write_atomic(self.run_dir / name, text)

    def merge_workers(self) -> None:
        merge_worker_files(self.run_dir)


def read_step_health(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of steps.jsonl (one per step and worker); a torn line is skipped."""
    out = []
    for path in sorted(run_dir.glob("steps*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def read_records(path: Path, warn: Any = None) -> Iterator[RequestRecord]:
    """Records of a requests.jsonl; a torn or corrupt line (a killed run) is skipped with a warning."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield record_from_json(line)
            except (ValueError, TypeError):
                if warn is not None:
                    warn(f"{path}: line {n}: skipped an incomplete record")


def read_run_records(run_dir: Path, warn: Any = None) -> Iterator[RequestRecord]:
    """Every record of a run: requests.jsonl, and the per-worker files a killed multi-worker run left."""
    parts = sorted(run_dir.glob("requests.w*.jsonl"))
    for path in [run_dir / "requests.jsonl", *parts]:
        if path.exists():
            yield from read_records(path, warn)


def _environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv0": Path(sys.argv[0]).name,
    }


def _csv(summary: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    head = [
        "index",
        "mode",
        "value",
        "duration_s",
        "sent",
        "ok",
        "failed",
        "error_rate",
        "request_throughput",
        "output_token_throughput",
        "total_token_throughput",
        "goodput",
    ]
    head += [f"{d}_{s}" for d in _CSV_DISTS for s in _CSV_STATS]
    w.writerow(head)
    for s in summary["steps"]:
        row = [
            s["index"],
            s["mode"],
            s["value"],
            s["duration_s"],
            s["requests"]["sent"],
            s["requests"]["ok"],
            s["requests"]["failed"],
            s["error_rate"],
            s["request_throughput"],
            s["output_token_throughput"],
            s["total_token_throughput"],
            s["goodput"],
        ]
        row += [s[d][st] for d in _CSV_DISTS for st in _CSV_STATS]
        w.writerow(["" if v is None else v for v in row])
    return out.getvalue()


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(run_dir / "summary.csv", _csv(summary))


def write_scenario(run_dir: Path, scenario: Scenario) -> None:
    write_atomic(run_dir / "scenario.yaml", scenario_to_yaml(scenario))


def analyze(
    run_dir: Path, scenario: Scenario, *, started_at: str, partial: bool, base_url: str, warn: Any = None
) -> Run:
    """Everything a report needs, from the records on disk (the source of truth), in one pass."""
    health = read_step_health(run_dir)
    probe = ProbeSeries(scenario.workload.max_tokens) if scenario.load.search is not None else None
    timelines = Timelines()  # each step over time: steady window, time slices
    records = timelines.tee(read_run_records(run_dir, warn))
    steps = accumulate(scenario, probe.tee(records) if probe is not None else records)
    tokenizer = tokenizer_info(
        scenario.target.tokenizer,
        scenario.target.model,
        mock_words=scenario.target.base_url == "mock" and scenario.target.mock.tokenizer is None,
    )
    summary = build_summary(
        scenario,
        steps,
        started_at=started_at,
        partial=partial,
        base_url=base_url,
        step_health=health,
        probe=probe,
        tokenizer=tokenizer,
        environment=_environment(),
    )
    header, scrapes = read_server_metrics(run_dir)
    extra = tuple(scenario.server_metrics.metrics)
    series = ServerSeries(scrapes, extra) if scrapes else None
    summary["server_metrics"] = server_status(header, series)
    add_time_views(summary, timelines, series, window_s=scenario.load.window_s, extra=extra)
    summary["headline"] = headline(summary, scenario.slo)  # last: it reads the server's aggregates too
    return Run(run_dir, scenario, summary, steps, health, probe, server=series)


def load_run(run_dir: Path, warn: Any = None) -> Run:
    """Recompute a run from requests.jsonl and the resolved scenario.yaml alone."""
    if not (run_dir / "scenario.yaml").is_file() or not (
        (run_dir / "requests.jsonl").is_file() or any(run_dir.glob("requests.w*.jsonl"))
    ):
        raise ScenarioError(f"{run_dir}: not a run directory (scenario.yaml or requests.jsonl missing)")
    scenario = load_scenario(run_dir / "scenario.yaml", expand=False)  # its secrets stay [redacted] or ${VAR}
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):  # no summary (deleted, or a killed run): rebuild from scratch
        old = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    started = old.get("started_at") or datetime.fromtimestamp(
        (run_dir / "scenario.yaml").stat().st_mtime, tz=timezone.utc
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    base_url = (old.get("target") or {}).get("base_url", scenario.target.base_url)
    if "partial" in old:
        partial = bool(old["partial"])
    else:  # no summary to say so (a killed run): partial unless every step was seen to finish
        finished = {h.get("step") for h in read_step_health(run_dir)}
        partial = any(p.index not in finished for p in plan_steps(scenario.load))
    run = analyze(run_dir, scenario, started_at=started, partial=partial, base_url=base_url, warn=warn)
    if route := (old.get("tokenizer") or {}).get("route"):  # which tokenize route answered: known at run time only
        run.summary["tokenizer"]["route"] = route
    if "dataset" in old:  # the dataset file as it was read at run time (its sha256, rows kept and dropped)
        run.summary["dataset"] = old["dataset"]
    if "harness" in old:  # the run's own costs (its startup CPU): known at run time only
        run.summary["harness"] = old["harness"]
    return run
