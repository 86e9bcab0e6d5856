"""``make soak``: a long run must not grow. 200,000 requests against the zero-delay mock.

The client runs in a subprocess; this process samples its resident memory (VmRSS) and how many
records it has written, and fits RSS against records completed while requests are being sent
(the summary at the end is a separate phase: its peak is reported, not fitted).
Writes ``results/bench/soak-<timestamp>.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 200_000


def _vm(pid: int, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def main(requests: int = REQUESTS) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "soak.yaml"
        scenario.write_text(
            "name: soak\ntarget: {base_url: mock, timeout_s: 60, mock: {ttft_ms: 0, itl_ms: 0, output_tokens: 64}}\n"
            f"workload: {{max_tokens: 64}}\nload: {{concurrency: [256], requests: {requests}}}\n"
        )
        out = Path(tmp) / "out"
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest", "run", str(scenario), "--out", str(out)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        samples: list[tuple[float, int, float]] = []  # (seconds, records written, RSS MB)
        t0 = time.monotonic()
        jsonl: Path | None = None
        while proc.poll() is None:
            if jsonl is None:
                found = list(out.glob("*/*/requests.jsonl"))
                jsonl = found[0] if found else None
            rss = _vm(proc.pid, "VmRSS")
            n = _lines(jsonl) if jsonl is not None else 0
            if rss is not None:
                samples.append((time.monotonic() - t0, n, rss))
            peak = _vm(proc.pid, "VmHWM") or 0.0
            time.sleep(1.0)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"soak run failed: {err.decode()[-500:]}")
        summary = json.loads(next(out.glob("*/*/summary.json")).read_text())
    sending = [(n, rss) for _, n, rss in samples if 0.1 * requests <= n < requests]  # steady state, not the end
    slope = (
        float(np.polyfit([n for n, _ in sending], [r for _, r in sending], 1)[0]) * 10_000 if len(sending) > 2 else None
    )
    step = summary["steps"][0]
    result: dict[str, object] = {
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "requests": requests,
        "ok": step["requests"]["ok"],
        "req_s": step["request_throughput"],
        "peak_rss_mb": max(peak, max((r for _, _, r in samples), default=0.0)),
        "rss_growth_mb_per_10k_requests": slope,
        "rss_while_sending_mb": {
            "first": sending[0][1] if sending else None,
            "last": sending[-1][1] if sending else None,
        },
        "samples": samples,
    }
    path = ROOT / "results" / "bench" / f"soak-{result['started_at'].replace(':', '').replace('-', '')}.json"  # type: ignore[union-attr]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"soak: {requests:,} requests, {result['req_s']:,.0f} req/s, peak RSS {result['peak_rss_mb']:.0f} MB, "
        f"RSS growth while sending {slope if slope is None else round(slope, 2)} MB per 10,000 requests "
        f"({result['rss_while_sending_mb']}); written: {path.relative_to(ROOT)}"
    )
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else REQUESTS)
