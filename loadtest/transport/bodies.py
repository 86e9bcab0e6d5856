"""Request bodies of the four APIs, from a prompt item and what is fixed for the run.

- chat (``/chat/completions``): ``messages``, ``max_tokens``; streamed with ``stream_options:
  {include_usage: true}``. Images are ``image_url`` parts of the last user message (text first, as
  vLLM's bench and AIPerf put them); tools nest as ``{type: function, function: {...}}``.
- completions: ``prompt``, ``max_tokens``.
- responses (``/responses``): ``input`` as message items, ``max_output_tokens``, ``store: false`` (OpenAI
  stores responses by default); streamed with ``stream_options: {include_obfuscation: false}`` (else
  every delta carries a random pad and byte counts lie). Images are ``input_image`` parts whose
  ``image_url`` is the data URL itself; tools are flat ``{type: function, name, ...}``.
- embeddings (``/embeddings``): ``input`` (one text, or a list for a batch) and ``encoding_format``,
  always sent: the SDK asks for base64 when it is left out, the API's own default is float.

``extra_body`` is merged last, so a scenario can still override any field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadtest.config.scenario import Workload
from loadtest.workload.prompts import PromptItem

__all__ = ["RequestShape", "request_body", "request_shape"]


@dataclass(frozen=True)
class RequestShape:
    """What every request body of a run adds to its prompt item."""

    tools: tuple[dict[str, Any], ...] = ()  # flat {name, description?, parameters, strict?}
    tool_choice: str | None = None  # auto | none | required, or a function's name to force
    image_detail: str = "auto"
    encoding_format: str = "float"

    @property
    def named_choice(self) -> bool:
        return self.tool_choice is not None and self.tool_choice not in ("auto", "none", "required")


def request_shape(workload: Workload) -> RequestShape:
    choice = workload.tool_choice
    return RequestShape(
        tools=tuple(t.model_dump(exclude_none=True) for t in workload.tools or ()),
        tool_choice=choice if isinstance(choice, str) or choice is None else choice.name,
        image_detail=workload.images.detail if workload.images is not None else "auto",
        encoding_format=workload.encoding_format,
    )


def _with_images(messages: list[dict[str, Any]], item: PromptItem, shape: RequestShape, api: str) -> list[Any]:
    """``messages`` with the item's images appended, as parts, to the last user message."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last is None:
        return messages
    text = messages[last].get("content")
    detail = shape.image_detail
    if api == "chat":
        parts = [{"type": "text", "text": text}] if text else []
        parts += [{"type": "image_url", "image_url": {"url": im.url, "detail": detail}} for im in item.images]
    else:
        parts = [{"type": "input_text", "text": text}] if text else []
        parts += [{"type": "input_image", "image_url": im.url, "detail": detail} for im in item.images]
    return [*messages[:last], {**messages[last], "content": parts}, *messages[last + 1 :]]


def _tools(body: dict[str, Any], shape: RequestShape, api: str) -> None:
    if not shape.tools:
        return
    if api == "chat":
        body["tools"] = [{"type": "function", "function": t} for t in shape.tools]
    else:
        body["tools"] = [{"type": "function", **t} for t in shape.tools]
    if shape.named_choice:
        name = shape.tool_choice
        named = {"function": {"name": name}} if api == "chat" else {"name": name}
        body["tool_choice"] = {"type": "function", **named}
    elif shape.tool_choice is not None:
        body["tool_choice"] = shape.tool_choice


def request_body(
    item: PromptItem,
    model: str,
    api: str,
    stream: bool,
    extra_body: dict[str, Any] | None,
    shape: RequestShape | None = None,
) -> dict[str, Any]:
    shape = shape or RequestShape()
    body: dict[str, Any] = {"model": model}
    if api == "embeddings":
        body["input"] = list(item.inputs) if item.inputs is not None else item.prompt
        body["encoding_format"] = shape.encoding_format
    elif api == "completions":
        body.update(prompt=item.prompt, max_tokens=item.max_tokens, stream=stream)
        if stream:
            body["stream_options"] = {"include_usage": True}
    else:
        messages = item.messages or []
        if item.images:
            messages = _with_images(messages, item, shape, api)
        if api == "chat":
            body.update(messages=messages, max_tokens=item.max_tokens, stream=stream)
            if stream:
                body["stream_options"] = {"include_usage": True}
        else:
            body.update(input=messages, max_output_tokens=item.max_tokens, stream=stream, store=False)
            if stream:
                body["stream_options"] = {"include_obfuscation": False}
        _tools(body, shape, api)
    if extra_body:
        body.update(extra_body)
    return body
