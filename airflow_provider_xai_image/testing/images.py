"""Deterministic, cheap image rendering, and reading the size of a source image.

An image is described by an :class:`ImageSpec` (prompt, index, pixel size, format) and rendered
on demand: a background colour and a few rectangles derived from a hash of prompt and index, so
every (prompt, index) pair gives a different, reproducible, decodable picture.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageDraw

from airflow_provider_xai_image.image_types import HEADER_BYTES, sniff_image_type
from airflow_provider_xai_image.testing.config import ImageFormat

#: Long side in pixels of each ``resolution``; no resolution means ``1k``.
LONG_SIDE: dict[str, int] = {"1k": 1024, "2k": 2048}
MIME_TYPES: dict[str, str] = {"jpeg": "image/jpeg", "png": "image/png"}
JPEG_QUALITY = 85
_RECTANGLES = 4


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render one image again."""

    prompt: str
    index: int
    width: int
    height: int
    image_format: ImageFormat = "jpeg"

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.image_format]


def ratio_of(aspect_ratio: str | None) -> tuple[float, float]:
    """Width and height parts of ``"16:9"``-style ratios; ``"auto"`` (or none) is square."""
    if aspect_ratio in (None, "auto"):
        return 1.0, 1.0
    width, _, height = aspect_ratio.partition(":")
    return float(width), float(height)


def pixel_size(width: float, height: float, resolution: str | None) -> tuple[int, int]:
    """Pixel size with the proportions ``width:height`` whose long side matches ``resolution``."""
    long_side = LONG_SIDE[resolution or "1k"]
    if width >= height:
        return long_side, max(1, round(long_side * height / width))
    return max(1, round(long_side * width / height)), long_side


def render(spec: ImageSpec) -> bytes:
    """Encode the image ``spec`` describes (same spec, same bytes)."""
    digest = hashlib.sha256(f"{spec.index}\0{spec.prompt}".encode()).digest()
    image = Image.new("RGB", (spec.width, spec.height), (digest[0], digest[1], digest[2]))
    draw = ImageDraw.Draw(image)
    for number in range(_RECTANGLES):
        part = digest[3 + number * 7 : 10 + number * 7]
        left, top = spec.width * part[0] // 256, spec.height * part[1] // 256
        right = left + max(1, (spec.width - left) * part[2] // 256)
        bottom = top + max(1, (spec.height - top) * part[3] // 256)
        draw.rectangle((left, top, right, bottom), fill=(part[4], part[5], part[6]))
    buffer = io.BytesIO()
    if spec.image_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def data_uri_image_size(uri: str) -> tuple[int, int]:
    """Pixel size of the image in a ``data:image/...;base64,...`` URI; ValueError when it is not one."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ValueError("a data URI source must look like data:image/<type>;base64,<data>")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ValueError("the data URI does not hold valid base64") from None
    if sniff_image_type(data[:HEADER_BYTES]) is None:
        raise ValueError("the data URI does not hold a JPEG, PNG, GIF or WebP image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception as error:  # Pillow raises several types for undecodable data
        raise ValueError(f"the data URI image cannot be decoded: {error}") from None
