"""The built-in OpenAI-compatible mock server (runs in its own process)."""

from loadtest.config.mock import MockSettings
from loadtest.mock.process import MockProcess, MockStartError, run_mock, start_mock
from loadtest.mock.server import WORDS

__all__ = ["WORDS", "MockProcess", "MockSettings", "MockStartError", "run_mock", "start_mock"]
