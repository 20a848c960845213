"""Images for tests, made with Pillow: small encoded images in each format the provider reads, a JPEG
file, and what a test checks of stored bytes (pixel size, sha256)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image


def encoded(image_format: str, size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (9, 99, 199)).save(buffer, format=image_format)
    return buffer.getvalue()


JPEG = encoded("JPEG")
PNG = encoded("PNG")
GIF = encoded("GIF")
WEBP = encoded("WEBP")


def jpeg_file(path: Path, size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = (10, 120, 200)) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def pixel_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
