"""Deterministic, cheap image rendering, and checking source images the way xAI does.

An image is described by an :class:`ImageSpec` (prompt, index, pixel size, format) and rendered
on demand: a background colour and a few rectangles derived from a hash of prompt and index, so
every (prompt, index) pair gives a different, reproducible, decodable picture. Source images are
identified with Pillow (never by file name or MIME type).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageDraw

from airflow_provider_xai_image.testing.config import ImageFormat
from airflow_provider_xai_image.testing.contract import DEFAULT_RESOLUTION, SOURCE_IMAGE_FORMATS, SOURCE_MAX_BYTES

#: Long side in pixels of each ``resolution``.
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
    long_side = LONG_SIDE[resolution or DEFAULT_RESOLUTION]
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


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URI; ValueError when it is not one."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ValueError("a data URI source must look like data:image/<type>;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ValueError("the data URI does not hold valid base64") from None


def source_image_size(data: bytes) -> tuple[int, int]:
    """Pixel size of a source image; ValueError unless it is a PNG, JPEG or WebP of at most 10 MiB."""
    if len(data) > SOURCE_MAX_BYTES:
        raise ValueError(f"the source image is {len(data)} bytes; at most {SOURCE_MAX_BYTES} are accepted")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format, size = image.format, image.size
    except (OSError, ValueError, Image.DecompressionBombError):  # what Pillow raises for non-images
        image_format, size = None, (0, 0)
    if image_format not in SOURCE_IMAGE_FORMATS:
        found = image_format or "not a recognised image"
        raise ValueError(f"the source image must be PNG, JPEG or WebP (found: {found})")
    return size
