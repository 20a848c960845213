"""Recognising image bytes by their magic number, and telling a whole image from a cut one.

The type comes from the magic number (trusted over names and declared types); an image is whole
when its type's structure ends where it should: a JPEG with its end-of-image marker, a PNG with its
``IEND`` chunk, a WebP as long as its RIFF header says, a GIF with its trailer. No image library:
the checks read only the first and last bytes, while the image streams through.
"""

from __future__ import annotations

import hashlib
from typing import IO, NamedTuple

from airflow_provider_xai_image.exceptions import XaiImageError


class ImageType(NamedTuple):
    mime_type: str
    extension: str


JPEG = ImageType("image/jpeg", "jpg")
PNG = ImageType("image/png", "png")
GIF = ImageType("image/gif", "gif")
WEBP = ImageType("image/webp", "webp")
#: The extension of each image type: the only ones a stored image's name ends with.
IMAGE_EXTENSIONS: tuple[str, ...] = tuple(image_type.extension for image_type in (JPEG, PNG, GIF, WEBP))

_SIGNATURES: tuple[tuple[bytes, int, ImageType], ...] = (
    (b"\xff\xd8\xff", 0, JPEG),
    (b"\x89PNG\r\n\x1a\n", 0, PNG),
    (b"GIF8", 0, GIF),
    (b"WEBP", 8, WEBP),
)
#: How each type's data ends when whole (WebP is checked by its RIFF size instead).
_ENDINGS: dict[ImageType, bytes] = {
    JPEG: b"\xff\xd9",
    PNG: b"\x00\x00\x00\x00IEND\xaeB`\x82",
    GIF: b"\x3b",
}
#: How many leading bytes :func:`sniff_image_type` needs.
HEADER_BYTES = 12
_TAIL_BYTES = max(len(ending) for ending in _ENDINGS.values())


def sniff_image_type(header: bytes) -> ImageType | None:
    """The image type that ``header`` (the first :data:`HEADER_BYTES` bytes) starts, or None."""
    for magic, offset, image_type in _SIGNATURES:
        if header[offset : offset + len(magic)] == magic:
            if image_type is WEBP and not header.startswith(b"RIFF"):
                continue
            return image_type
    return None


def incomplete_reason(image_type: ImageType, header: bytes, tail: bytes, size: int) -> str | None:
    """Why an image of ``size`` bytes starting with ``header`` and ending with ``tail`` is cut, or None."""
    if image_type is WEBP:
        expected = int.from_bytes(header[4:8], "little") + 8
        return None if size == expected else f"its RIFF header says {expected} bytes, got {size}"
    ending = _ENDINGS[image_type]
    trimmed = tail.rstrip(b"\x00") if image_type is JPEG else tail
    return None if trimmed.endswith(ending) else f"it does not end with the {image_type.extension} end marker"


#: Largest image accepted, downloaded or inline.
MAX_IMAGE_BYTES = 50 * 1024 * 1024


class VerifiedImage(NamedTuple):
    image_type: ImageType
    size: int
    sha256: str


class ImageWriter:
    """Writes image bytes to ``sink`` chunk by chunk, checking the magic number and the size cap,
    hashing as it goes; :meth:`result` checks that the image is whole.

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
        self._first_bytes = b""
        self._tail = b""

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
        self._tail = (self._tail + chunk)[-_TAIL_BYTES:]
        self.sink.write(chunk)

    def _identify(self) -> None:
        self._type = sniff_image_type(self._header)
        if self._type is None:
            raise XaiImageError(f"{self.name} is not an image (unknown magic number)")
        self._first_bytes = self._header[:HEADER_BYTES]

    def result(self, expected_size: int | None = None) -> VerifiedImage:
        """The verified image.

        :param expected_size: The byte count announced for it (``Content-Length``), if any.
        :raises XaiImageError: empty, not an image, or cut short.
        """
        if self._type is None:
            if not self._header:
                raise XaiImageError(f"{self.name} is empty")
            self._identify()  # an image shorter than the header
            header, self._header = self._header, b""
            self.write(header)
        assert self._type is not None
        if expected_size is not None and expected_size != self._size:
            raise XaiImageError(f"{self.name} is incomplete: {self._size} of {expected_size} bytes arrived")
        if reason := incomplete_reason(self._type, self._first_bytes, self._tail, self._size):
            raise XaiImageError(f"{self.name} is incomplete: {reason}")
        return VerifiedImage(self._type, self._size, self._digest.hexdigest())


def verify_stream(
    stream: IO[bytes], sink: IO[bytes], name: str, max_bytes: int = MAX_IMAGE_BYTES, chunk_bytes: int = 1 << 20
) -> VerifiedImage:
    """Copy an image from ``stream`` to ``sink`` chunk by chunk, verifying it (also that it is whole)."""
    writer = ImageWriter(sink, name, max_bytes)
    while chunk := stream.read(chunk_bytes):
        writer.write(chunk)
    return writer.result()
