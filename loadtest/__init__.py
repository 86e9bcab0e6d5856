"""loadtest: an async load-testing harness for OpenAI-compatible LLM endpoints."""

__version__ = "0.1.0"

from .checks import evaluate_slos
from .metrics import distribution, summarize_step
from .records import RequestRecord
from .scenario import Scenario, ScenarioError, load_scenario

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
