"""loadtest: an async load-testing harness for OpenAI-compatible LLM endpoints.

The public names below load on first use (PEP 562): importing ``loadtest.config`` for a scenario
does not import numpy and the metrics with it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "evaluate_slos": "loadtest.analysis.checks",
    "distribution": "loadtest.analysis.metrics",
    "summarize_step": "loadtest.analysis.metrics",
    "RequestRecord": "loadtest.analysis.records",
    "load_scenario": "loadtest.config.loading",
    "Scenario": "loadtest.config.scenario",
    "ScenarioError": "loadtest.config.scenario",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'loadtest' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
