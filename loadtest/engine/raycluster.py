"""``--ray ADDRESS``: each step's load split across N Ray actors, records gathered on the head.

Every actor runs the same driver as a ``--workers`` process (``processes.share_context``: the same
split of each step, ``shard.py``) on its own thread, event loop and client. The head:

- measures each actor's wall-clock offset against its own (the round trip with the shortest
  time, NTP-style) and gives each actor a run origin ``t0`` on its own monotonic clock such that
  its record times read as the head's run timeline. Latencies are differences of one worker's
  monotonic clock, so the offset only places them on the timeline;
- holds a barrier per step (a coordinator actor): when every live worker has arrived it names a
  start time a little in the future, on the head's timeline, and every worker waits for it;
- drains each actor every ``POLL_S``: new record lines go to ``requests.w<i>.jsonl`` on the head,
  and merge into ``requests.jsonl`` at the end as a local run's do (``RunFiles.merge_workers``);
- on a worker's death counts what it had in flight at its last drain as ``worker_lost`` and goes
  on with the rest (a record it finished after that drain is lost with it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from loadtest.analysis.records import record_to_json
from loadtest.config.scenario import Distributed, Scenario, ScenarioError
from loadtest.config.secrets import redact_url
from loadtest.engine.rayactors import DRAIN_TIMEOUT_S, POLL_S, Coordinator, Flying, Worker, clock_offset_ns, lost_record
from loadtest.engine.signals import handled
from loadtest.engine.sinks import EventSink, RunFiles
from loadtest.transport.errors import first_line

__all__ = ["POLL_S", "clock_offset_ns", "connected", "lost_record", "run_ray_workers", "unreachable"]

_CLOCK_SAMPLES = 7


@dataclass
class _Share:
    """The head's view of one worker."""

    index: int
    actor: Any
    where: dict[str, Any]
    offset_ns: int
    rtt_ns: int
    recorder: EventSink
    flying: list[Flying] = field(default_factory=list)  # in flight at the last drain
    live: bool = True
    died: bool = False
    lost: int = 0  # requests in flight when it died

    def describe(self) -> dict[str, Any]:
        return {
            "worker": self.index,
            **self.where,
            "clock_offset_ms": self.offset_ns / 1e6,
            "clock_rtt_ms": self.rtt_ns / 1e6,
            "died": self.died,
            "worker_lost": self.lost,
        }


def _measure_offset(actor: Any) -> tuple[int, int]:
    samples = []
    for _ in range(_CLOCK_SAMPLES):
        before = time.time_ns()
        remote = ray.get(actor.clock.remote())
        samples.append((before, remote, time.time_ns()))
    return clock_offset_ns(samples)


def unreachable(address: str, timeout_s: float = 5.0) -> str | None:
    """Why a ``HOST:PORT`` or ``ray://HOST:PORT`` address takes no TCP connection (None when it
    does, or when the address has another form). Ray itself retries an unreachable GCS for minutes."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address)
    if m is None:
        return None
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout_s).close()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def _local_cpus() -> int:
    """The CPUs a local Ray is given: those this process may run on (a container's or taskset's
    share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _short_of_cpus(dist: Distributed, source: str, have: float | None = None) -> str | None:
    """What is wrong when the cluster (``have`` CPUs; asked of Ray when None) has fewer CPUs than
    the actors reserve (None when it has enough)."""
    need = dist.workers * dist.cpus_per_worker
    if have is None:
        have = float(ray.cluster_resources().get("CPU", 0.0))
    if need <= have:
        return None
    return (
        f"{source}: distributed.workers: {dist.workers} actors x cpus_per_worker {dist.cpus_per_worker:g} "
        f"need {need:g} CPUs and the Ray cluster has {have:g}; lower distributed.workers or "
        "distributed.cpus_per_worker (0 places actors regardless of CPUs)"
    )


@contextlib.contextmanager
def connected(dist: Distributed, source: str, warn: Callable[[str], None] | None = None) -> Iterator[None]:
    """Ray, connected: an instance already joined (inside a RayJob), a new local one on
    127.0.0.1 (``local``, stopped afterwards), or the cluster at ``dist.address``. A local Ray
    short of CPUs for the actors is an error (they would wait forever); a cluster may autoscale,
    so there it is a warning."""
    address = dist.address
    if ray.is_initialized():
        if warn is not None and (short := _short_of_cpus(dist, source)):
            warn(short)
        yield
        return
    if (why := unreachable(address)) is not None:
        raise ScenarioError(f"{source}: distributed.address: cannot connect to Ray at {address!r} ({why})")
    cpus = _local_cpus()
    if address == "local" and (short := _short_of_cpus(dist, source, cpus)):
        raise ScenarioError(short)  # known before starting Ray: no 10 s start and stop to say it
    try:
        if address == "local":
            ray.init(
                address="local",
                num_cpus=cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
        else:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (OSError, RuntimeError, ValueError) as e:  # OSError: a socket path too long, a refused connection
        raise ScenarioError(
            f"{source}: distributed.address: cannot connect to Ray at {address!r} ({first_line(e)})"
        ) from None
    try:
        if address != "local" and warn is not None and (short := _short_of_cpus(dist, source)):
            warn(f"{short}; waiting up to {dist.start_timeout_s:g} s (distributed.start_timeout_s) for them")
        yield
    finally:
        ray.shutdown()


class _Signals:
    """SIGINT and SIGTERM during a Ray run: the first stops the run (kept, and passed on to the
    workers); a second while the actors are still starting gives up waiting (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.starting = True

    def __call__(self, sig: int, _frame: object) -> None:
        if self.starting and self.got:
            raise KeyboardInterrupt
        self.got.append(sig)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Signals]:
        with handled(self):
            yield self


def _placed(actors: list[Any], signals: _Signals, timeout_s: float, source: str) -> list[dict[str, Any]] | None:
    """Where each actor runs, once all have started; None when a signal came first."""
    refs = [a.where.remote() for a in actors]
    deadline = time.monotonic() + timeout_s
    while not signals.got:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
        if len(ready) == len(refs):
            try:
                return ray.get(refs)
            except RayActorError as e:  # an actor (or its node) died while starting: one line, not a traceback
                died = first_line(e)
                raise ScenarioError(f"{source}: distributed: a Ray actor died while starting ({died})") from None
        if time.monotonic() > deadline:
            raise ScenarioError(
                f"{source}: distributed.workers: {len(refs) - len(ready)} of {len(refs)} Ray actors were not "
                f"placed within distributed.start_timeout_s ({timeout_s:g} s; the cluster has "
                f"{ray.cluster_resources().get('CPU', 0):g} CPUs)"
            )
    return None


def run_ray_workers(
    scenario: Scenario,
    base_url: str,
    key: str,
    files: RunFiles,
    *,
    t0: int,
    grace_s: float,
    warn: Callable[[str], None] | None = None,
    source: str = "scenario",
) -> list[int]:
    """Run the scenario on ``scenario.distributed.workers`` Ray actors (Ray connected: see
    ``connected``); returns the signals that stopped it (empty when it ran to the end). A signal
    while the actors start ends the run before it sends anything."""
    dist = scenario.distributed
    assert dist is not None
    n = dist.workers
    say = warn or (lambda _m: None)
    head_wall0 = time.time_ns() - (time.perf_counter_ns() - t0)  # the head's wall clock at t0
    with _Signals().installed() as signals:
        here = ray.get_runtime_context().get_node_id()
        coordinator = Coordinator.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=True)
        ).remote(n, head_wall0)
        actors = [
            Worker.options(num_cpus=dist.cpus_per_worker, scheduling_strategy="SPREAD").remote() for _ in range(n)
        ]
        shares: list[_Share] = []
        _write_cluster(files, n, shares)
        try:
            if (places := _placed(actors, signals, dist.start_timeout_s, source)) is None:
                return signals.got[:1]
            coordinator.set_offset.remote(_measure_offset(coordinator)[0])
            for i, (actor, where) in enumerate(zip(actors, places, strict=True)):
                offset, rtt = _measure_offset(actor)
                shares.append(_Share(i, actor, where, offset, rtt, files.recorder(i)))
            _write_cluster(files, n, shares)
            if signals.got:
                return signals.got[:1]
            if base_url.startswith(("http://127.", "http://localhost")) and len({s.where["node"] for s in shares}) > 1:
                say(f"target {redact_url(base_url)} is on this host: workers on other nodes cannot reach it")
            payload = scenario.model_dump(mode="json")
            ray.get(
                [
                    s.actor.start.remote(
                        s.index, n, payload, base_url, key, head_wall0, s.offset_ns, grace_s, coordinator
                    )
                    for s in shares
                ]
            )
            signals.starting = False
            return _gather(shares, coordinator, t0, signals.got, say)
        finally:
            for s in shares:
                s.recorder.close()
            files.merge_workers()
            _write_cluster(files, n, shares)
            for actor in [*actors, coordinator]:
                with contextlib.suppress(Exception):
                    ray.kill(actor)


def _gather(
    shares: list[_Share], coordinator: Any, t0: int, stopped: list[int], say: Callable[[str], None]
) -> list[int]:
    """Drain every live worker until all are done; signals (``stopped``, filled by the handler)
    are passed on to the workers: the first stops them with a grace period, a second cancels."""
    forwarded = 0
    while any(s.live for s in shares):
        while forwarded < len(stopped):
            forwarded += 1
            coordinator.abort.remote()
            for s in shares:
                if s.live:
                    s.actor.stop.remote()
        pending = {s.index: s.actor.drain.remote() for s in shares if s.live}
        for s in shares:
            if s.index not in pending:
                continue
            try:
                batch = ray.get(pending[s.index], timeout=DRAIN_TIMEOUT_S)
            except (RayActorError, GetTimeoutError) as e:
                _lose(s, coordinator, time.perf_counter_ns() - t0, say, type(e).__name__)
                continue
            for stem, lines in batch["lines"].items():
                for line in lines:
                    s.recorder.write(stem, line)
            s.flying = batch["flying"]
            if batch["done"]:
                s.live = False
                if batch["error"]:
                    say(f"Ray worker {s.index} ({s.where['host']}) failed: {batch['error']}")
        if any(s.live for s in shares):
            time.sleep(POLL_S)
    return stopped[:1]


def _lose(share: _Share, coordinator: Any, now_ns: int, say: Callable[[str], None], why: str) -> None:
    """A worker died: what it had in flight at its last drain becomes ``worker_lost`` records."""
    for f in share.flying:
        share.recorder.write("requests", record_to_json(lost_record(f, share.index, now_ns)))
    share.live, share.died, share.lost = False, True, len(share.flying)
    coordinator.lose.remote(share.index)
    say(
        f"Ray worker {share.index} ({share.where['host']}, pid {share.where['pid']}) was lost ({why}): "
        f"{share.lost} requests in flight counted as worker_lost; the run goes on with the rest"
    )


def _write_cluster(files: RunFiles, requested: int, shares: list[_Share]) -> None:
    """cluster.json: the actors asked for, and each one started (none yet while they are placed)."""
    workers = [s.describe() for s in shares]
    files.write(
        "cluster.json",
        json.dumps({"engine": "ray", "requested": requested, "workers": workers}, indent=2) + "\n",
    )
