"""Images for prompts, encoded once before the run: never on the request path.

Synthetic images are independent random RGB pixels (numpy, seeded), saved as PNG or JPEG by Pillow,
as vLLM's ``random-mm`` dataset and AIPerf's noise images are: the worst case for compression, so an
image's size on the wire is about its pixel count (PNG ~3 bytes a pixel) and a server's decode does
real work. ``pool`` distinct images are built and cycled through, so content-keyed caches (vLLM's
multimodal processor cache) do not serve every request from one image. A folder's files are sent as
they are, in name order.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtest.config.apis import Images
from loadtest.config.scenario import ScenarioError

__all__ = ["EncodedImage", "build_images", "folder_images", "synthetic_image"]

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif"}


@dataclass(frozen=True, slots=True)
class EncodedImage:
    url: str  # data:image/...;base64,...
    nbytes: int  # the encoded file's bytes (the base64 in the URL is 4/3 of that)


def _data_url(mime: str, data: bytes) -> EncodedImage:
    return EncodedImage(f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", len(data))


def synthetic_image(width: int, height: int, fmt: str, rng: np.random.Generator) -> bytes:
    """One image of random pixels as PNG or JPEG bytes (JPEG at Pillow's default quality, as vLLM's)."""
    from PIL import Image  # only runs with images load Pillow

    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG" if fmt == "png" else "JPEG")
    return out.getvalue()


def folder_images(folder: str) -> list[EncodedImage]:
    """Every png/jpeg/webp/gif file of ``folder``, by name; a one-line error when there is none."""
    path = Path(folder)
    if not path.is_dir():
        raise ScenarioError(f"workload.images.folder: {folder}: not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _MIME and p.is_file())
    if not files:
        raise ScenarioError(f"workload.images.folder: {folder}: no .png, .jpg, .webp or .gif files")
    return [_data_url(_MIME[p.suffix.lower()], p.read_bytes()) for p in files]


def build_images(spec: Images, seed: int) -> list[EncodedImage]:
    """The run's images: the folder's, or ``spec.pool`` synthetic ones (deterministic for a seed)."""
    if spec.folder is not None:
        return folder_images(spec.folder)
    mime = "image/png" if spec.format == "png" else "image/jpeg"
    return [
        _data_url(mime, synthetic_image(spec.width, spec.height, spec.format, np.random.default_rng([seed, 17, k])))
        for k in range(spec.pool)
    ]
