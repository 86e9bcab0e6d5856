"""What a request's prompt holds, whatever its API: its texts and its images, and what an image costs.

Texts: chat ``messages`` (a content string, or the ``text`` of its parts; tool results and tool-call
arguments too), Responses ``input`` (a string, or message items with ``input_text`` parts,
``function_call`` arguments and ``function_call_output`` outputs), completions ``prompt``.

Images: chat ``image_url`` parts (``{url, detail}``) and Responses ``input_image`` parts (``image_url``
the URL itself, ``detail`` beside it), as data URLs. Their size is read from the file's header (PNG's
IHDR, JPEG's SOFn marker), so the mock needs no image library. Tokens follow OpenAI's documented rule
for GPT-4o-class models: ``detail: low`` costs 85; ``high`` (and ``auto``) scales the image to fit in
2048 x 2048, then its shortest side down to 768, counts 512-pixel tiles and costs 170 a tile plus 85
(1024 x 1024 -> 765, 2048 x 4096 -> 1105; images are only scaled down, so 512 x 512 -> 255).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any

__all__ = ["image_size", "image_tokens", "prompt_image_tokens", "prompt_images", "prompt_texts"]

_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_HEAD_B64 = 1 << 16  # base64 characters decoded to find a JPEG's size (its frame header comes early)


def _part_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _item_texts(m: Any) -> list[str]:
    """The texts of one chat message or Responses input item (or one embeddings input)."""
    if isinstance(m, str):
        return [m]
    if not isinstance(m, dict):
        return []
    texts = _part_texts(m.get("content"))
    for call in m.get("tool_calls") or ():  # an assistant message that called tools
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            texts.append(fn["arguments"])
    for key in ("arguments", "output"):  # function_call / function_call_output items
        if isinstance(m.get(key), str):
            texts.append(m[key])
    return texts


def prompt_texts(body: dict[str, Any]) -> list[str]:
    """Every text of the request's prompt, in order."""
    items = body.get("messages") if "messages" in body else body.get("input")
    if isinstance(items, str):
        return [items]
    if isinstance(items, list):
        return [t for m in items for t in _item_texts(m)]
    prompt = body.get("prompt")
    return [prompt] if isinstance(prompt, str) else []


def prompt_images(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(data URL, detail) of every image part of the request's prompt."""
    items = body.get("messages") if "messages" in body else body.get("input")
    found = []
    for m in items if isinstance(items, list) else ():
        parts = m.get("content") if isinstance(m, dict) else None
        for p in parts if isinstance(parts, list) else ():
            if not isinstance(p, dict):
                continue
            if p.get("type") == "image_url" and isinstance(p.get("image_url"), dict):
                found.append((str(p["image_url"].get("url", "")), str(p["image_url"].get("detail") or "auto")))
            elif p.get("type") == "input_image":
                found.append((str(p.get("image_url") or ""), str(p.get("detail") or "auto")))
    return found


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in _SOF:
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def image_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG data URL, from its header; None for anything else."""
    head, _, b64 = url.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        return None
    try:
        if b64.startswith("iVBORw0KGgo"):  # PNG: the IHDR chunk's width and height at bytes 16..24
            return struct.unpack(">II", base64.b64decode(b64[:32])[16:24])  # type: ignore[return-value]
        if b64.startswith("/9j/"):  # JPEG
            return _jpeg_size(base64.b64decode(b64[: min(len(b64), _JPEG_HEAD_B64) // 4 * 4]))
    except (binascii.Error, struct.error):
        return None
    return None


def image_tokens(width: int, height: int, detail: str) -> int:
    """OpenAI's token cost of one image (GPT-4o class): 85 at low detail, else 85 + 170 per 512-px tile."""
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
    if min(w, h) > 768:
        w, h = w * 768 / min(w, h), h * 768 / min(w, h)
    return 85 + 170 * math.ceil(int(w) / 512) * math.ceil(int(h) / 512)


def prompt_image_tokens(body: dict[str, Any]) -> list[tuple[int, int, int]]:
    """(width, height, tokens) of each image of the request's prompt that the mock can read (others cost 0)."""
    out = []
    for url, detail in prompt_images(body):
        if (size := image_size(url)) is not None:
            out.append((size[0], size[1], image_tokens(size[0], size[1], detail)))
    return out
