"""``storage.image_checks``: sniffing the image type and the streaming ``ImageWriter``."""

from __future__ import annotations

import hashlib
import io

import pytest
from support.images import GIF, JPEG, PNG, WEBP

from airflow_provider_xai_image.exceptions import XaiImageError
from airflow_provider_xai_image.storage.image_checks import HEADER_BYTES, ImageType, ImageWriter, sniff_image_type


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (JPEG, ImageType("image/jpeg", "jpg")),
        (PNG, ImageType("image/png", "png")),
        (GIF, ImageType("image/gif", "gif")),
        (WEBP, ImageType("image/webp", "webp")),
        (b"<html><body>502</body></html>", None),
        (b'{"error": "x"}', None),
        (b"RIFF\0\0\0\0WAVEfmt ", None),  # RIFF, but audio
        (b"xxxxxxxxWEBP", None),  # WEBP at 8 without RIFF
        (b"", None),
    ],
    ids=["jpeg", "png", "gif", "webp", "html", "json", "wav", "webp-without-riff", "empty"],
)
def test_sniff_image_type(data: bytes, expected: ImageType | None) -> None:
    assert sniff_image_type(data[:HEADER_BYTES]) == expected


def test_image_writer_writes_hashes_and_measures() -> None:
    sink = io.BytesIO()
    writer = ImageWriter(sink, "a.png")

    for start in range(0, len(PNG), 64):
        writer.write(PNG[start : start + 64])

    verified = writer.result()
    assert sink.getvalue() == PNG
    assert verified == (ImageType("image/png", "png"), len(PNG), hashlib.sha256(PNG).hexdigest())


def test_image_writer_rejects_what_is_not_an_image() -> None:
    sink = io.BytesIO()
    writer = ImageWriter(sink, "page.jpeg")

    with pytest.raises(XaiImageError, match=r"page.jpeg is not an image \(unknown magic number\)"):
        writer.write(b"<html>Access denied</html>")
    assert sink.getvalue() == b""


def test_image_writer_enforces_the_size_cap_before_writing_past_it() -> None:
    sink = io.BytesIO()
    writer = ImageWriter(sink, "big.jpg", max_bytes=len(JPEG) - 1)

    writer.write(JPEG[:100])
    with pytest.raises(XaiImageError, match=rf"big.jpg is larger than the {len(JPEG) - 1}-byte limit"):
        writer.write(JPEG[100:])
    assert sink.getvalue() == JPEG[:100]


def test_image_writer_accepts_exactly_max_bytes() -> None:
    writer = ImageWriter(io.BytesIO(), "ok.jpg", max_bytes=len(JPEG))
    writer.write(JPEG)

    assert writer.result().size == len(JPEG)


def test_image_writer_with_nothing_written_is_an_error() -> None:
    with pytest.raises(XaiImageError, match="empty"):
        ImageWriter(io.BytesIO(), "nothing.jpg").result()


@pytest.mark.parametrize(("data", "chunk"), [(JPEG, 2), (PNG, 5), (WEBP, 10)], ids=["jpeg", "png", "webp"])
def test_image_writer_sniffs_across_chunks_shorter_than_the_header(data: bytes, chunk: int) -> None:
    """A stream may deliver its first bytes in pieces smaller than the magic number."""
    sink = io.BytesIO()
    writer = ImageWriter(sink, "slow.img")

    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])

    assert writer.result().size == len(data)
    assert sink.getvalue() == data
