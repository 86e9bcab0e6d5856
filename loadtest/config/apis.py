"""Scenario fields of the APIs beyond plain chat: images in prompts, tools and tool calls, embeddings.

``workload.images`` adds images to every chat/Responses prompt; ``workload.tools`` (inline, or a JSON or
YAML file relative to the scenario) with ``tool_choice`` lets the model call functions, and
``tool_result`` answers each call with a canned result and sends one more turn;
``workload.batch_size`` and ``encoding_format`` shape embeddings requests. The checks that tie a field
to ``target.api`` are in ``api_problem``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["IMAGE_APIS", "ApiName", "Images", "NamedTool", "Tool", "ToolChoice", "api_problem", "read_tools"]

ApiName = Literal["chat", "completions", "responses", "embeddings"]
IMAGE_APIS = ("chat", "responses")  # the APIs whose messages take image parts and tools


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Images(_Strict):
    """Images added to the user message of every request: synthetic (seeded random pixels, built once
    into a pool of ``pool`` distinct images before the run) or the files of a local ``folder``."""

    count: Annotated[int, Field(ge=1, le=64)] = 1  # per request
    width: Annotated[int, Field(ge=1, le=8192)] = 512
    height: Annotated[int, Field(ge=1, le=8192)] = 512
    format: Literal["png", "jpeg"] = "png"
    detail: Literal["auto", "low", "high"] = "auto"  # sent in each image part; servers price tokens by it
    folder: str | None = None  # png/jpeg/webp/gif files sent instead (relative to the scenario file)
    pool: Annotated[int, Field(ge=1, le=4096)] = 16  # distinct synthetic images, cycled through


class Tool(_Strict):
    """A function the model may call. Written flat (``{name, description, parameters}``, the Responses
    API's shape) or in chat's shape (``{type: function, function: {...}}``); each API gets its own."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _either_shape(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("type", "function") == "function":
            inner = v.get("function")
            flat = dict(inner) if isinstance(inner, dict) else {k: x for k, x in v.items() if k != "type"}
            return flat
        if isinstance(v, dict):
            raise ValueError(f"only function tools are sent (got type {v.get('type')!r})")
        return v


class NamedTool(_Strict):
    name: str  # tool_choice: {name: f} forces a call of f


ToolChoice = Literal["auto", "none", "required"] | NamedTool


def read_tools(path: Path) -> list[Any]:
    """The list of tools in a JSON or YAML file (a list, or ``{tools: [...]}``); ValueError with one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e.__class__.__name__})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}") from None
    if isinstance(data, dict) and "tools" in data:
        data = data["tools"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of tools")
    return data


def api_problem(api: str, workload: Any) -> str | None:
    """What in ``workload`` does not fit ``target.api`` (None: it all fits)."""
    if workload.batch_size > 1 and api != "embeddings":
        return "batch_size: only with target.api: embeddings"
    if workload.images is not None and api not in IMAGE_APIS:
        return "images: only with target.api: chat or responses"
    if workload.tools and api not in IMAGE_APIS:
        return "tools: only with target.api: chat or responses"
    if (workload.tool_choice is not None or workload.tool_result is not None) and not workload.tools:
        return "tool_choice and tool_result need tools"
    choice = workload.tool_choice
    if isinstance(choice, NamedTool) and choice.name not in {t.name for t in workload.tools or ()}:
        return f"tool_choice: no tool named {choice.name!r} in tools"
    return None
