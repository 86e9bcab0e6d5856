"""The built-in OpenAI-compatible mock server (runs in its own process)."""

from .process import MockProcess, MockStartError, run_mock, start_mock
from .server import WORDS, MockConfig

__all__ = ["WORDS", "MockConfig", "MockProcess", "MockStartError", "run_mock", "start_mock"]
