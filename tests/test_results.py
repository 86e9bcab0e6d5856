from __future__ import annotations

import os
from pathlib import Path

import pytest

from loadtest.output.rundir import write_atomic


def test_write_atomic_never_leaves_half_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "summary.json"
    write_atomic(target, "old")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new" * 10_000)
    assert target.read_text() == "old"  # readers still see the whole old file
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # and no temporary left behind
    monkeypatch.undo()
    write_atomic(target, "new")
    assert target.read_text() == "new"
