"""Recognising image bytes by their magic number (trusted over names and declared types)."""

from __future__ import annotations

import hashlib
from typing import IO, NamedTuple

from airflow_provider_xai_image.exceptions import XaiImageError


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


#: Largest image accepted, downloaded or inline.
MAX_IMAGE_BYTES = 50 * 1024 * 1024


class VerifiedImage(NamedTuple):
    image_type: ImageType
    size: int
    sha256: str


class ImageWriter:
    """Writes image bytes to ``sink`` chunk by chunk, checking the magic number and the size cap,
    and hashing as it goes.

    :param sink: A binary file to write to.
    :param name: What to call the image in errors.
    :param max_bytes: The size cap.
    """

    def __init__(self, sink: IO[bytes], name: str, max_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.sink = sink
        self.name = name
        self.max_bytes = max_bytes
        self._digest = hashlib.sha256()
        self._size = 0
        self._type: ImageType | None = None
        self._header = b""

    def write(self, chunk: bytes) -> None:
        if self._type is None:
            self._header += chunk
            if len(self._header) < HEADER_BYTES:
                return
            self._identify()
            chunk, self._header = self._header, b""
        self._size += len(chunk)
        if self._size > self.max_bytes:
            raise XaiImageError(f"{self.name} is larger than the {self.max_bytes}-byte limit")
        self._digest.update(chunk)
        self.sink.write(chunk)

    def _identify(self) -> None:
        self._type = sniff_image_type(self._header)
        if self._type is None:
            raise XaiImageError(f"{self.name} is not an image (unknown magic number)")

    def result(self) -> VerifiedImage:
        if self._type is None:
            if not self._header:
                raise XaiImageError(f"{self.name} is empty")
            self._identify()  # an image shorter than the header
            header, self._header = self._header, b""
            self.write(header)
        assert self._type is not None
        return VerifiedImage(self._type, self._size, self._digest.hexdigest())


def verify_stream(
    stream: IO[bytes], sink: IO[bytes], name: str, max_bytes: int = MAX_IMAGE_BYTES, chunk_bytes: int = 1 << 20
) -> VerifiedImage:
    """Copy an image from ``stream`` to ``sink`` chunk by chunk, verifying it on the way."""
    writer = ImageWriter(sink, name, max_bytes)
    while chunk := stream.read(chunk_bytes):
        writer.write(chunk)
    return writer.result()
