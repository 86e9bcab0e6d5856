"""Reading the user's own input files (prompts, traces): one-line errors naming the scenario field."""

from __future__ import annotations

from pathlib import Path

from loadtest.config.scenario import ScenarioError

__all__ = ["read_lines"]


def read_lines(path: Path, field: str) -> list[str]:
    """The lines of a UTF-8 text file; a missing or unreadable file is a ``ScenarioError`` naming ``field``."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ScenarioError(f"{field}: {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(f"{field}: {path}: cannot read ({e.__class__.__name__})") from None
