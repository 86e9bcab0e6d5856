"""``server_metrics.jsonl``: the server's metrics as scraped through a run, one JSON object a line.

The first line says whether they could be read: ``{"status": "ok" | "unavailable", "url", "reason",
"interval_s"}`` (the URL without credentials). Then one line per scrape: ``{"t_ns", "took_ms",
"text"}`` with ``t_ns`` on the run's timeline (ns since the run's t0, like the request records: the
middle of the scrape) and ``text`` the lines of the answer that belong to the metric families loadtest
keeps (Prometheus text, parsed when the run is read), or ``{"t_ns", "took_ms", "error"}`` for a scrape
that failed.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = ["FILE_NAME", "ServerMetricsFile", "read_server_metrics"]

FILE_NAME = "server_metrics.jsonl"


class ServerMetricsFile:
    """Appends lines, each flushed as it is written (a killed run keeps what it scraped)."""

    def __init__(self, run_dir: Path) -> None:
        self._file: IO[bytes] = open(run_dir / FILE_NAME, "ab")  # noqa: SIM115 - closed by close()

    def __call__(self, line: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(line) + b"\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_server_metrics(run_dir: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the status line, the scrapes) of a run; (None, []) when it has no such file. A torn line is skipped."""
    path = run_dir / FILE_NAME
    if not path.is_file():
        return None, []
    header, scrapes = None, []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            d = json.loads(line)
            if isinstance(d, dict) and "status" in d:
                header = d
            elif isinstance(d, dict) and isinstance(d.get("t_ns"), int):
                scrapes.append(d)
    return header, scrapes
