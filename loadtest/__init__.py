"""loadtest: an async load-testing harness for OpenAI-compatible LLM endpoints."""

__version__ = "0.1.0"

from loadtest.analysis.checks import evaluate_slos
from loadtest.analysis.metrics import distribution, summarize_step
from loadtest.analysis.records import RequestRecord
from loadtest.config.loading import load_scenario
from loadtest.config.scenario import Scenario, ScenarioError

__all__ = [
    "RequestRecord",
    "Scenario",
    "ScenarioError",
    "__version__",
    "distribution",
    "evaluate_slos",
    "load_scenario",
    "summarize_step",
]
