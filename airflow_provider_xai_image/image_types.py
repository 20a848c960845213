"""Recognising image bytes by their magic number (trusted over names and declared types)."""

from __future__ import annotations

from typing import NamedTuple


class ImageType(NamedTuple):
    mime_type: str
    extension: str


_SIGNATURES: tuple[tuple[bytes, int, ImageType], ...] = (
    (b"\xff\xd8\xff", 0, ImageType("image/jpeg", "jpg")),
    (b"\x89PNG\r\n\x1a\n", 0, ImageType("image/png", "png")),
    (b"GIF8", 0, ImageType("image/gif", "gif")),
    (b"WEBP", 8, ImageType("image/webp", "webp")),
)

#: How many leading bytes :func:`sniff_image_type` needs.
HEADER_BYTES = 12


def sniff_image_type(header: bytes) -> ImageType | None:
    """The image type that ``header`` (the first :data:`HEADER_BYTES` bytes) starts, or None."""
    for magic, offset, image_type in _SIGNATURES:
        if header[offset : offset + len(magic)] == magic:
            if image_type.extension == "webp" and not header.startswith(b"RIFF"):
                continue
            return image_type
    return None
