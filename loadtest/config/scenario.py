"""The scenario's pydantic models: every field, its default and its check (loading is in ``loading.py``).

Every problem with user input becomes a :class:`ScenarioError` whose message is one line naming
the file, the field path and what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from loadtest.config.apis import ApiName, Images, Tool, ToolChoice, api_problem, read_tools
from loadtest.config.mock import MockSettings
from loadtest.config.servermetrics import ServerMetrics
from loadtest.config.sessions import DatasetPrompt, DatasetSpec, Sessions
from loadtest.config.traffic import Ramp, SharedPrefixPrompt, SharedPrefixSpec, Trace

__all__ = [
    "SLO",
    "Capacity",
    "DatasetPrompt",
    "DatasetSpec",
    "Distributed",
    "FilePrompt",
    "Images",
    "Load",
    "MaxBound",
    "MinBound",
    "MockSettings",
    "PerRequestSLO",
    "PercentileBounds",
    "Ramp",
    "RetryPolicy",
    "Scenario",
    "ScenarioError",
    "Search",
    "ServerMetrics",
    "Sessions",
    "SharedPrefixPrompt",
    "SharedPrefixSpec",
    "StepSLO",
    "Stop",
    "SyntheticPrompt",
    "SyntheticSpec",
    "Target",
    "TextPrompt",
    "Tls",
    "Tool",
    "Trace",
    "Workload",
]


class ScenarioError(Exception):
    """Bad user input. ``str(err)`` is a single line fit to print as is: line breaks in the user's
    own text (a key, a value) are shown escaped."""

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class Tls(_Strict):
    """How https endpoints are verified; file paths are relative to the scenario file."""

    verify: bool = True  # false: accept any certificate (a staging endpoint's self-signed one)
    ca_file: str | None = None  # PEM bundle of the CAs to trust instead of the system's (a private CA)
    client_cert: str | None = None  # PEM certificate (mutual TLS); its key in client_key or in the same file
    client_key: str | None = None

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Tls:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")
        return self


class Target(_Strict):
    base_url: str = "mock"
    api_key_env: str | None = None
    model: str = "mock-model"
    api: ApiName = "chat"  # chat | completions | responses | embeddings
    timeout_s: PositiveFloat = 60.0  # whole-request deadline
    connect_timeout_s: PositiveFloat = 10.0
    idle_timeout_s: PositiveFloat | None = None  # longest silence between two reads; default: timeout_s
    headers: dict[str, str] = Field(default_factory=dict)
    transport: Literal["h1", "aiohttp"] = "h1"  # HTTP under AsyncOpenAI: loadtest's own, or the SDK's aiohttp
    # o200k_base | cl100k_base | server | a tokenizer.json (file or cached Hugging Face model id)
    tokenizer: Annotated[str, Field(min_length=1)] = "o200k_base"
    tls: Tls = Field(default_factory=Tls)
    mock: MockSettings = Field(default_factory=MockSettings)
    _written: dict[str, Any] | None = PrivateAttr(default=None)  # as the file wrote it, before ${VAR}: secrets.py

    @field_validator("api_key_env")
    @classmethod
    def _is_a_variable_name(cls, v: str | None) -> str | None:
        # Never echo the value: a user who pasted the key itself must not see it printed back.
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not the key")
        if v is not None and re.match(r"(sk|csk|gsk)[-_]", v):
            raise ValueError("looks like an API key; give the name of the variable that holds it")
        return v

    @field_validator("base_url")
    @classmethod
    def _is_a_url(cls, v: str, info: ValidationInfo) -> str:
        as_written = (info.context or {}).get("unexpanded") and "${" in v  # a run's scenario.yaml: ${BASE_URL}
        if v != "mock" and not as_written and not re.match(r"https?://[^/\s]+", v):
            raise ValueError("expected 'mock' or an http(s):// URL")  # not echoed: it may hold credentials
        return v.rstrip("/")


class TextPrompt(_Strict):
    text: str


class FilePrompt(_Strict):
    file: str


class SyntheticSpec(_Strict):
    input_tokens: Annotated[int, Field(ge=1)]
    stddev: NonNegFloat = 0.0


class SyntheticPrompt(_Strict):
    synthetic: SyntheticSpec


def _prompt_kind(v: Any) -> str | None:
    if isinstance(v, dict):
        keys = [k for k in ("text", "file", "synthetic", "shared_prefix", "dataset") if k in v]
        return keys[0] if len(keys) == 1 else None
    if isinstance(v, BaseModel):
        kinds = {TextPrompt: "text", FilePrompt: "file", SyntheticPrompt: "synthetic", DatasetPrompt: "dataset"}
        return {**kinds, SharedPrefixPrompt: "shared_prefix"}.get(type(v))
    return None


Prompt = Annotated[
    Annotated[TextPrompt, Tag("text")]
    | Annotated[FilePrompt, Tag("file")]
    | Annotated[SyntheticPrompt, Tag("synthetic")]
    | Annotated[SharedPrefixPrompt, Tag("shared_prefix")]
    | Annotated[DatasetPrompt, Tag("dataset")],
    Discriminator(
        _prompt_kind,
        custom_error_type="prompt_kind",
        custom_error_message=(
            "expected exactly one of {text: ...}, {file: ...}, {synthetic: {input_tokens: N}}, {shared_prefix: {...}},"
            " {dataset: {path: ...}}"
        ),
    ),
]


class Workload(_Strict):
    prompt: Prompt = Field(default_factory=lambda: SyntheticPrompt(synthetic=SyntheticSpec(input_tokens=128)))
    system_prompt: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] = 128
    stream: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    seed: int = 42
    sessions: Sessions | None = None  # conversations of several turns (config/sessions.py)

    @model_validator(mode="after")
    def _sessions_need_turns(self) -> Workload:
        s = self.sessions
        if s is None:
            return self
        if not isinstance(self.prompt, SyntheticPrompt | DatasetPrompt):
            raise ValueError("sessions: the user messages come from workload.prompt synthetic or dataset")
        if isinstance(self.prompt, SyntheticPrompt) and s.turns is None:
            raise ValueError("sessions.turns: how many turns a synthetic conversation has (a number or {mean: ...})")
        if isinstance(self.prompt, DatasetPrompt) and (s.input_tokens is not None or s.max_tokens is not None):
            raise ValueError("sessions: a dataset's turns have their own lengths (dataset.output_tokens sets answers)")
        if isinstance(self.prompt, DatasetPrompt) and s.turns is not None and not isinstance(s.turns, int):
            raise ValueError("sessions.turns: with a dataset, a number (the most turns taken from a conversation)")
        if s.history == "dataset" and not isinstance(self.prompt, DatasetPrompt):
            raise ValueError("sessions.history: dataset replays a dataset's recorded answers (workload.prompt.dataset)")
        return self

    # the APIs beyond plain chat (config/apis.py)
    batch_size: Annotated[int, Field(ge=1, le=2048)] = 1  # embeddings: inputs per request
    encoding_format: Literal["float", "base64"] = "float"  # embeddings: always sent
    images: Images | None = None
    tools: list[Tool] | None = None  # or a JSON/YAML file of them
    tool_choice: ToolChoice | None = None  # auto | none | required | {name: f}; unset: the server's default
    tool_result: str | None = None  # a canned result answering each call, then one more turn

    @field_validator("tools", mode="before")
    @classmethod
    def _tools_from_file(cls, v: Any, info: ValidationInfo) -> Any:
        if not isinstance(v, str):
            return v
        base = (info.context or {}).get("base_dir")
        path = Path(v) if base is None or Path(v).is_absolute() else Path(base) / v
        return read_tools(path)


class Search(_Strict):
    """Limit discovery (planner.py): raise the open-loop rate by ``factor`` from ``start_rate``, with
    no pause between steps, until 429s come; then hold that rate ``steady_s`` to measure the refill
    (a rate limit's burst and sustainable rate). A step that breaks on other errors or an SLO
    instead is bisected to ``tolerance``."""

    start_rate: PositiveFloat = 1.0
    max_rate: PositiveFloat = 1000.0
    factor: Annotated[float, Field(gt=1)] = 2.0
    step_duration_s: PositiveFloat = 10.0
    max_429_rate: Annotated[float, Field(ge=0, le=1)] = 0.02  # a step holds up to this share of 429s...
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01  # ...and of other errors
    tolerance: Annotated[float, Field(gt=0, lt=1)] = 0.05
    max_steps: Annotated[int, Field(ge=1, le=100)] = 20
    # once, after the first step, so the probe starts on a full bucket (and between bisection steps);
    # default: the advertised reset (at most 60 s)
    cooldown_s: NonNegFloat | None = None
    steady_s: PositiveFloat = 20.0  # how long the drained bucket's refill is measured, after the first 429
    max_drain_s: PositiveFloat = 60.0  # how long max_rate may be held waiting for a bucket to drain


class Capacity(_Strict):
    """Capacity under SLO (analysis/capacity.py): the highest rate (or concurrency) at which every SLO
    in ``slo`` holds, found by growing from ``start`` by ``growth`` then bisecting to ``tolerance``.
    A step whose verdict is not sure (a latency percentile's bootstrap interval straddles its bound;
    another SLO within ``uncertain_margin`` of it) is run again, twice as long each time, up to
    ``lengthen`` times, and judged on all its runs; one still unsure then goes by its point estimates
    and lies inside the reported interval. An open-loop
    step past capacity ends early (over-saturation)."""

    over: Literal["rate", "concurrency"] = "rate"
    start: PositiveFloat = 1.0
    max: PositiveFloat = 1000.0
    growth: Annotated[float, Field(gt=1)] = 2.0
    tolerance: Annotated[float, Field(gt=0, lt=1)] = 0.1
    step_duration_s: PositiveFloat | None = None
    step_requests: Annotated[int, Field(ge=1)] | None = None
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    uncertain_margin: Annotated[float, Field(ge=0, lt=1)] = 0.1
    lengthen: Annotated[int, Field(ge=0, le=4)] = 2  # re-runs of an unsure step, each twice as long
    floor: PositiveFloat | None = None  # the run fails (exit 1, a JUnit case) when the capacity found is below it
    max_steps: Annotated[int, Field(ge=1, le=100)] = 24

    @model_validator(mode="after")
    def _one_length(self) -> Capacity:
        if self.step_duration_s is not None and self.step_requests is not None:
            raise ValueError("give either step_duration_s or step_requests, not both")
        if self.step_duration_s is None and self.step_requests is None:
            self.step_duration_s = 10.0
        if self.start > self.max:
            raise ValueError("start is above max")
        return self


class Stop(_Strict):
    max_error_rate: Annotated[float, Field(ge=0, le=1)] | None = None  # a step above it ends the sweep


class Load(_Strict):
    concurrency: list[Annotated[int, Field(ge=1)]] | None = None
    rate: list[PositiveFloat] | None = None
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    burstiness: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0  # gamma's shape: 1 Poisson, <1 burstier
    ramp: Ramp | None = None  # one step whose rate (or concurrency) rises along a line, then holds
    trace: Trace | None = None  # replay a timestamped JSONL: one open-loop step per speedup
    requests: Annotated[int, Field(ge=1)] | None = None
    duration_s: PositiveFloat | None = None
    warmup_requests: Annotated[int, Field(ge=0)] = 0
    max_concurrency: Annotated[int, Field(ge=1)] = 1024
    workers: Annotated[int, Field(ge=1, le=256)] = 1  # processes sharing each step's load
    search: Search | None = None
    capacity: Capacity | None = None
    stop: Stop | None = None
    window_s: PositiveFloat = 5.0  # each step's time series (summary `windows`) in slices this long

    @field_validator("concurrency", "rate", mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, int | float) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _one_mode_one_stop(self) -> Load:
        if self.capacity is not None:
            if self.concurrency is not None or self.rate is not None or self.search is not None:
                raise ValueError("capacity chooses the load itself: remove concurrency/rate/search")
            if self.ramp is not None or self.trace is not None:
                raise ValueError("capacity chooses the load itself: remove ramp/trace")
            if self.workers > 1:
                raise ValueError("capacity runs in one process: remove workers")
            return self
        if self.ramp is not None or self.trace is not None:
            return self._shaped()
        if self.concurrency is not None and self.rate is not None:
            raise ValueError("give either concurrency (closed loop) or rate (open loop), not both")
        if self.search is not None:
            if self.concurrency is not None or self.rate is not None:
                raise ValueError("search chooses the rates itself: remove concurrency/rate")
            if self.workers > 1:
                raise ValueError("search runs in one process: remove workers")
            return self
        if self.stop is not None and self.workers > 1:
            raise ValueError("stop runs in one process: remove workers")
        if self.concurrency is None and self.rate is None:
            self.concurrency = [1]
        if (self.concurrency is not None and not self.concurrency) or (self.rate is not None and not self.rate):
            raise ValueError("concurrency/rate needs at least one value")
        if self.requests is not None and self.duration_s is not None:
            raise ValueError("give either requests or duration_s per step, not both")
        if self.requests is None and self.duration_s is None:
            self.requests = 100
        return self

    def _shaped(self) -> Load:
        """A ramp or a trace: the steps come from it, not from concurrency/rate lists."""
        what = "load.ramp" if self.ramp is not None else "load.trace"
        if self.ramp is not None and self.trace is not None:
            raise ValueError("give either ramp or trace, not both")
        if self.concurrency is not None or self.rate is not None or self.search is not None:
            raise ValueError(f"{what} sets the load itself: remove concurrency/rate/search")
        if self.workers > 1:
            raise ValueError(f"{what} runs in one process: remove workers")
        if self.requests is not None and self.duration_s is not None:
            raise ValueError("give either requests or duration_s per step, not both")
        if self.trace is not None:
            if self.warmup_requests:
                raise ValueError("load.trace replays the trace's rows as they are: remove warmup_requests")
            return self  # without requests/duration_s: every row
        ramp = self.ramp
        assert ramp is not None
        whole = ramp.start == int(ramp.start) and ramp.to == int(ramp.to)
        if ramp.of == "concurrency" and (ramp.start < 1 or ramp.to <= ramp.start or not whole):
            raise ValueError("a concurrency ramp goes up, from a whole number of users (at least 1) to a larger one")
        if self.requests is None and self.duration_s is None:
            self.requests = 100
        return self

    @property
    def mode(self) -> Literal["concurrency", "rate", "trace"]:
        if self.capacity is not None:
            return self.capacity.over
        if self.trace is not None:
            return "trace"
        if self.ramp is not None:
            return self.ramp.of
        return "concurrency" if self.concurrency is not None else "rate"  # search: open loop

    @property
    def values(self) -> list[float]:
        if self.trace is not None:
            return list(self.trace.speedup)
        if self.ramp is not None:
            return [self.ramp.to]
        return list(self.concurrency if self.concurrency is not None else self.rate or [])


class PercentileBounds(_Strict):
    """Upper bounds (milliseconds) on a latency distribution of one step."""

    mean: PositiveFloat | None = None
    p50: PositiveFloat | None = None
    p90: PositiveFloat | None = None
    p95: PositiveFloat | None = None
    p99: PositiveFloat | None = None
    max: PositiveFloat | None = None


class MaxBound(_Strict):
    max: NonNegFloat


class MinBound(_Strict):
    min: NonNegFloat


class PerRequestSLO(_Strict):
    """Per-request limits: a request meeting all of them counts towards goodput."""

    ttft_ms: PositiveFloat | None = None
    ttfa_ms: PositiveFloat | None = None  # time to the first answer token (after any reasoning)
    tpot_ms: PositiveFloat | None = None
    e2e_ms: PositiveFloat | None = None


class StepSLO(_Strict):
    """Bounds on one step's summary."""

    ttft_ms: PercentileBounds | None = None
    ttfa_ms: PercentileBounds | None = None
    tpot_ms: PercentileBounds | None = None
    itl_ms: PercentileBounds | None = None
    e2e_ms: PercentileBounds | None = None
    error_rate: MaxBound | None = None
    output_tokens_per_s: MinBound | None = None
    requests_per_s: MinBound | None = None
    goodput_ratio: MinBound | None = None


class SLO(StepSLO):
    """Bounds for every step, ``steps`` for one step (by index) on top, and the per-request limits of goodput."""

    per_request: PerRequestSLO = Field(default_factory=PerRequestSLO)
    steps: dict[int, StepSLO] = Field(default_factory=dict)


RetryOn = Literal[
    "429", "5xx", "4xx", "timeout", "connect", "tls", "reset", "stream_broken", "stream_error", "bad_response"
]


class RetryPolicy(_Strict):
    """Off unless given. Each attempt is its own record, linked by request id and attempt number."""

    on: list[RetryOn] = Field(default_factory=lambda: ["429", "5xx", "timeout"])
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    backoff: Literal["retry-after", "exponential"] = "retry-after"
    base_s: PositiveFloat = 0.5
    max_s: PositiveFloat = 60.0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.1  # up to this fraction is added to each delay

    @field_validator("on", mode="before")
    @classmethod
    def _codes_as_text(cls, v: Any) -> Any:
        return [str(x) for x in v] if isinstance(v, list) else v  # YAML reads 429 as a number


class Distributed(_Strict):
    """Load generation on a Ray cluster: each step's load split across ``workers`` Ray actors."""

    engine: Literal["ray"] = "ray"
    address: Annotated[str, Field(min_length=1)] = "local"  # local | auto | HOST:PORT | ray://HOST:10001
    workers: Annotated[int, Field(ge=1, le=4096)] = 2
    cpus_per_worker: Annotated[float, Field(ge=0)] = 1.0  # Ray places one actor per this many CPUs
    start_timeout_s: PositiveFloat = 300.0  # actors not placed by then end the run (an autoscaler adds nodes)


class Scenario(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    description: str | None = None
    target: Target = Field(default_factory=Target)
    workload: Workload = Field(default_factory=Workload)
    load: Load = Field(default_factory=Load)
    slo: SLO = Field(default_factory=SLO)
    retry: RetryPolicy | None = None
    distributed: Distributed | None = None
    server_metrics: ServerMetrics = Field(default_factory=ServerMetrics)

    @field_validator("workload")
    @classmethod
    def _fits_the_api(cls, v: Workload, info: ValidationInfo) -> Workload:
        target = info.data.get("target")  # validated before this field
        if isinstance(target, Target) and (problem := api_problem(target.api, v)) is not None:
            raise ValueError(problem)
        return v

    @field_validator("distributed")
    @classmethod
    def _one_way_to_share(cls, v: Distributed | None, info: ValidationInfo) -> Distributed | None:
        load = info.data.get("load")  # validated before this field
        if v is None or not isinstance(load, Load):
            return v
        if load.workers > 1:
            raise ValueError("give the number of workers here (distributed.workers), not as load.workers")
        if load.search is not None or load.stop is not None or load.capacity is not None:
            raise ValueError("load.search and load.stop run in one process: remove distributed")
        if load.ramp is not None or load.trace is not None:
            raise ValueError("load.ramp and load.trace run in one process: remove distributed")
        return v

    @model_validator(mode="after")
    def _trace_prompts(self) -> Scenario:
        default = Workload.model_fields["prompt"].get_default(call_default_factory=True)
        if self.load.trace is not None and self.workload.prompt != default:  # a run's scenario.yaml: the default
            raise ValueError("load.trace supplies the prompts: remove workload.prompt")
        if self.workload.sessions is not None and self.load.search is not None:
            raise ValueError("load.search sends single requests: remove workload.sessions")
        if self.workload.sessions is not None and self.load.capacity is not None:
            raise ValueError("load.capacity sends single requests: remove workload.sessions")
        if self.workload.sessions is not None and self.load.trace is not None:
            raise ValueError("load.trace sends single requests: remove workload.sessions")
        return self

    @property
    def workers(self) -> int:
        """Workers sharing each step: Ray actors, or local processes."""
        return self.distributed.workers if self.distributed is not None else self.load.workers
