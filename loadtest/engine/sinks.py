"""Where the engine puts what it measured. It is handed these (the runner wires in the run directory's
files, ``output/rundir.py``'s ``RunFiles``), so the engine never imports the output layer."""

from __future__ import annotations

from typing import Protocol

from loadtest.analysis.events import Event

__all__ = ["EventSink", "RunFiles"]


class EventSink(Protocol):
    """Takes every driver event; writes the ones that are kept (records, step health)."""

    def __call__(self, event: Event) -> None: ...

    def write(self, stem: str, line: str) -> None: ...

    def close(self) -> None: ...


class RunFiles(Protocol):
    """A run directory as the engine sees it. Picklable: worker processes get it as an argument."""

    def recorder(self, worker: int | None = None) -> EventSink:
        """The sink of one worker's events (``None``: the only process)."""
        ...

    def write(self, name: str, text: str) -> None:
        """Replace the file ``name`` atomically (``cluster.json``)."""
        ...

    def merge_workers(self) -> None:
        """Fold the per-worker files into the run's own, once the workers are done."""
        ...
