"""Run the mock in this process (``loadtest mock``) or start it as a child process for a run or test."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from loadtest.config.mock import MockSettings, MockStartError
from loadtest.mock.server import serve
from loadtest.transport.loop import new_loop

__all__ = [
    "MockProcess",
    "MockStartError",
    "run_mock",
    "start_mock",
]

_READY = "loadtest-mock listening on "


def run_mock(config: MockSettings, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until SIGINT/SIGTERM. Prints one ready line with the base URL once listening."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    try:
        server = loop.run_until_complete(serve(config, host, port))
    except OSError as e:
        loop.close()
        if e.errno == errno.EADDRINUSE:
            raise MockStartError(f"port {port} on {host} is already in use") from None
        raise MockStartError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound = server.sockets[0].getsockname()[1]
    scheme = "https" if config.tls_cert else "http"
    print(f"{_READY}{scheme}://{host}:{bound}/v1", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        server.close()
        loop.close()


@dataclass
class MockProcess:
    proc: subprocess.Popen[str]
    base_url: str  # ends in /v1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def start_mock(config: MockSettings | None = None, port: int = 0, timeout_s: float = 30.0) -> Iterator[MockProcess]:
    """Start the mock (``python -m loadtest.mock``) as a child process on 127.0.0.1; stop it on exit."""
    settings = (config or MockSettings()).model_dump_json()
    cmd = [sys.executable, "-m", "loadtest.mock", settings, "127.0.0.1", str(port)]
    errlog = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - a file, not a pipe: a chatty child never blocks
    # Its own session: a Ctrl-C at the terminal (SIGINT to the whole process group) must not stop
    # the server while the run gives its in-flight requests their grace period; the run stops it.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=errlog,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    if not line.startswith(_READY):
        proc.kill()
        proc.wait()
        errlog.seek(0)
        err = errlog.read().strip().splitlines()
        errlog.close()
        raise MockStartError("mock server did not start: " + (err[-1] if err else "no ready line"))
    handle = MockProcess(proc=proc, base_url=line[len(_READY) :].strip())
    try:
        yield handle
    finally:
        handle.stop()
        errlog.close()
