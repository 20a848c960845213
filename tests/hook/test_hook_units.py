"""Pure functions under the hook, without the emulator: batching, pacing, parsing, image sniffing, settings."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
from typing import Any

import pytest
from airflow.sdk import Connection
from PIL import Image

from airflow_provider_xai_image.batching import CallPacer, chunk_batch_requests
from airflow_provider_xai_image.connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    XaiConnectionSettings,
)
from airflow_provider_xai_image.exceptions import XaiConnectionConfigError, XaiImageError
from airflow_provider_xai_image.image_types import HEADER_BYTES, ImageType, ImageWriter, sniff_image_type
from airflow_provider_xai_image.models import (
    BATCH_ADD_MAX_BYTES,
    BATCH_REQUEST_KIND,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    ImageRequest,
    batch_request_entry,
    decode_b64_image,
    parse_batch_results_page,
    parse_image_response,
)


def encoded(image_format: str, size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (9, 99, 199)).save(buffer, format=image_format)
    return buffer.getvalue()


JPEG = encoded("JPEG")
PNG = encoded("PNG")
GIF = encoded("GIF")
WEBP = encoded("WEBP")


# -- chunk_batch_requests -------------------------------------------------------------------------


def entries(count: int, prompt_bytes: int = 100) -> list[dict[str, Any]]:
    request = ImageRequest.build(prompt="p" * prompt_bytes)
    return [batch_request_entry(f"id-{index}", request) for index in range(count)]


def body_size(chunk: list[dict[str, Any]]) -> int:
    """Bytes of the body requests sends for ``json={"batch_requests": chunk}``."""
    return len(json.dumps({"batch_requests": chunk}).encode())


@pytest.mark.parametrize("max_bytes", [600, 1000, 4096, 10_000])
def test_chunks_respect_the_byte_limit_and_keep_order(max_bytes: int) -> None:
    given = entries(50)

    chunks = list(chunk_batch_requests(given, max_bytes))

    assert [entry for chunk in chunks for entry in chunk] == given
    assert all(chunk for chunk in chunks)
    assert all(body_size(chunk) <= max_bytes for chunk in chunks)
    # Greedy: adding the next entry to a chunk would have broken the limit.
    for chunk, following in itertools.pairwise(chunks):
        assert body_size([*chunk, following[0]]) > max_bytes - 2


def test_everything_fits_in_one_chunk_under_the_default_limit() -> None:
    given = entries(100)

    assert list(chunk_batch_requests(given)) == [given]
    assert body_size(given) < BATCH_ADD_MAX_BYTES


def test_no_entries_no_chunks() -> None:
    assert list(chunk_batch_requests([], 1000)) == []


def test_an_entry_exactly_at_the_limit_is_alone_in_its_chunk() -> None:
    [entry] = entries(1, prompt_bytes=300)
    limit = body_size([entry]) + 2  # the chunker counts a ", " separator per entry

    chunks = list(chunk_batch_requests([entry, entry, entry], limit))

    assert chunks == [[entry], [entry], [entry]]


def test_an_oversize_single_entry_is_an_error_naming_it() -> None:
    small, big = entries(1)[0], entries(1, prompt_bytes=5000)[0]
    big = {**big, "batch_request_id": "the-big-one"}

    with pytest.raises(ValueError, match=r"'the-big-one' is \d+ bytes, over the 2000-byte limit"):
        list(chunk_batch_requests([small, big], 2000))


def test_chunks_are_lazy_over_an_iterator() -> None:
    chunks = chunk_batch_requests(iter(entries(10)), 1000)

    first = next(chunks)
    assert first[0]["batch_request_id"] == "id-0"
    assert sum(len(chunk) for chunk in chunks) == 10 - len(first)


def test_batch_request_entry_wraps_the_generate_body() -> None:
    request = ImageRequest.build(prompt="a cat", n=2, aspect_ratio="16:9")

    assert batch_request_entry("r1", request) == {
        "batch_request_id": "r1",
        "batch_request": {
            BATCH_REQUEST_KIND: {
                "prompt": "a cat",
                "model": DEFAULT_MODEL,
                "n": 2,
                "aspect_ratio": "16:9",
                "response_format": "url",
            }
        },
    }


# -- CallPacer ------------------------------------------------------------------------------------


def test_pacer_allows_max_calls_then_waits_for_the_oldest_to_leave_the_window() -> None:
    pacer = CallPacer(max_calls=3, window=10.0)
    for now in (100.0, 101.0, 102.0):
        assert pacer.delay(now) == 0.0
        pacer.record(now)

    assert pacer.delay(103.0) == pytest.approx(7.0)  # until 100 + 10
    assert pacer.delay(109.5) == pytest.approx(0.5)
    assert pacer.delay(110.0) == 0.0  # the call of 100.0 left the window
    pacer.record(110.0)
    assert pacer.delay(110.0) == pytest.approx(1.0)  # now the call of 101.0 is the oldest


def test_pacer_is_a_sliding_window_not_a_fixed_one() -> None:
    pacer = CallPacer(max_calls=2, window=1.0)
    schedule = []
    now = 0.0
    for _ in range(6):
        now += pacer.delay(now)
        pacer.record(now)
        schedule.append(now)

    assert schedule == pytest.approx([0.0, 0.0, 1.0, 1.0, 2.0, 2.0])
    for first, third in zip(schedule, schedule[2:], strict=False):
        assert third - first >= 1.0


def test_pacer_defaults_are_xai_limits() -> None:
    pacer = CallPacer()

    assert (pacer.max_calls, pacer.window) == (100, 30.0)


# -- parse_image_response -------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("prefix", ["", "data:image/jpeg;base64,"])
def test_b64_json_with_or_without_data_uri_prefix(prefix: str) -> None:
    payload = {
        "data": [{"url": None, "b64_json": prefix + b64(JPEG), "mime_type": "image/jpeg", "revised_prompt": "r"}],
        "usage": {"cost_in_usd_ticks": 200_000_000},
        "model": "grok-imagine-image",
        "block_reason": None,
    }

    result = parse_image_response(payload, "asked-model")

    [image] = result.images
    assert image.data == JPEG
    assert image.url is None
    assert (image.mime_type, image.revised_prompt, image.filtered) == ("image/jpeg", "r", False)
    assert result.model == "grok-imagine-image"
    assert result.cost_usd == pytest.approx(0.02)


def test_url_images_and_the_requested_model_when_none_is_reported() -> None:
    payload = {"data": [{"url": "https://x/a.jpeg"}, {"url": "https://x/b.jpeg"}]}

    result = parse_image_response(payload, "grok-imagine-image")

    assert [image.url for image in result.images] == ["https://x/a.jpeg", "https://x/b.jpeg"]
    assert result.model == "grok-imagine-image"
    assert result.cost_usd_ticks == 0


def test_block_reason_filters_every_image() -> None:
    payload = {"data": [{"url": "https://x/a.jpeg", "b64_json": b64(JPEG)}], "block_reason": "moderation"}

    [image] = parse_image_response(payload, "m").images

    assert image.filtered
    assert (image.url, image.data) == (None, None)


def test_a_response_blocked_as_a_whole_counts_as_the_expected_filtered_images() -> None:
    images = parse_image_response({"data": [], "block_reason": "blocked"}, "m", expected_images=3).images

    assert [(image.filtered, image.url, image.data) for image in images] == [(True, None, None)] * 3


def test_respect_moderation_false_filters_only_that_image() -> None:
    payload = {
        "data": [
            {"url": "https://x/ok.jpeg", "respect_moderation": True},
            {"url": "https://x/bad.jpeg", "respect_moderation": False},
            {"url": None, "b64_json": None},
        ]
    }

    images = parse_image_response(payload, "m").images

    assert [image.filtered for image in images] == [False, True, True]
    assert images[0].url == "https://x/ok.jpeg"
    assert images[1].url is None


def test_invalid_base64_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not valid base64"):
        decode_b64_image("this is not base64!")


# -- parse_batch_results_page ---------------------------------------------------------------------


def image_response(url: str) -> dict[str, Any]:
    return {"data": [{"url": url, "mime_type": "image/jpeg"}], "usage": {"cost_in_usd_ticks": 100_000_000}}


def test_results_shape_with_response_and_error() -> None:
    page = {
        "results": [
            {"batch_request_id": "a", "response": image_response("https://x/a.jpeg")},
            {"batch_request_id": "b", "error": {"message": "boom"}},
            {"batch_request_id": "c", "response": {BATCH_REQUEST_KIND: image_response("https://x/c.jpeg")}},
            {"batch_request_id": "d", "error": "plain text error"},
        ],
        "pagination_token": "next-page",
    }

    results, token = parse_batch_results_page(page, "grok-imagine-image")

    assert token == "next-page"
    by_id = {result.batch_request_id: result for result in results}
    assert by_id["a"].result is not None
    assert by_id["a"].result.images[0].url == "https://x/a.jpeg"
    assert by_id["a"].result.model == "grok-imagine-image"
    assert by_id["a"].result.cost_usd_ticks == 100_000_000
    assert (by_id["b"].result, by_id["b"].error) == (None, "boom")
    assert by_id["c"].result is not None
    assert by_id["c"].result.images[0].url == "https://x/c.jpeg"
    assert by_id["d"].error == "plain text error"


def test_succeeded_failed_shape() -> None:
    page = {
        "succeeded": [{"batch_request_id": "a", "response": image_response("https://x/a.jpeg")}],
        "failed": [{"batch_request_id": "b", "error_message": "moderation"}, {"batch_request_id": "c"}],
        "pagination_token": "",
    }

    results, token = parse_batch_results_page(page, "m")

    assert token is None
    assert [(r.batch_request_id, r.error) for r in results] == [
        ("a", None),
        ("b", "moderation"),
        ("c", "unknown error"),
    ]
    assert results[0].result is not None


def test_empty_page_is_the_last() -> None:
    assert parse_batch_results_page({}, "m") == ([], None)


# -- sniff_image_type and ImageWriter -------------------------------------------------------------


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


# -- connection settings --------------------------------------------------------------------------


def settings(host: str | None = "https://api.x.ai/v1", password: str | None = "xai-k", **extra: Any):
    conn = Connection(conn_id="xai_unit", conn_type="xai", host=host, password=password, extra=json.dumps(extra))
    return XaiConnectionSettings.from_connection(conn)


def test_defaults() -> None:
    parsed = settings(host=None)

    assert parsed.base_url == DEFAULT_BASE_URL
    assert (parsed.connect_timeout, parsed.read_timeout) == (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
    assert parsed.max_retries == DEFAULT_MAX_RETRIES
    assert parsed.default_model == DEFAULT_MODEL
    assert parsed.api_key.get_secret_value() == "xai-k"


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (30, (DEFAULT_CONNECT_TIMEOUT, 30.0)),
        (2.5, (DEFAULT_CONNECT_TIMEOUT, 2.5)),
        ("45", (DEFAULT_CONNECT_TIMEOUT, 45.0)),
        ([3, 60], (3.0, 60.0)),
        (["1.5", "20"], (1.5, 20.0)),
        (None, (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)),
        ("", (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)),
    ],
)
def test_timeout_as_a_number_or_connect_read_pair(timeout: Any, expected: tuple[float, float]) -> None:
    parsed = settings(timeout=timeout)

    assert (parsed.connect_timeout, parsed.read_timeout) == expected


def test_prefixed_extras_of_the_ui_form() -> None:
    parsed = settings(extra__xai__timeout=12, extra__xai__max_retries="3", extra__xai__default_model="grok-2-image")

    assert (parsed.read_timeout, parsed.max_retries, parsed.default_model) == (12.0, 3, "grok-2-image")


def test_plain_extras_win_over_prefixed_ones() -> None:
    parsed = settings(timeout=5, extra__xai__timeout=99, max_retries=0, extra__xai__max_retries=7)

    assert (parsed.read_timeout, parsed.max_retries) == (5.0, 0)


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("api.x.ai/v1", "https://api.x.ai/v1"),
        ("https://api.x.ai/v1/", "https://api.x.ai/v1"),
        ("http://127.0.0.1:8010/v1", "http://127.0.0.1:8010/v1"),
        ("proxy.internal:8443/xai/v1", "https://proxy.internal:8443/xai/v1"),
        ("", DEFAULT_BASE_URL),
    ],
)
def test_base_url_from_host_with_or_without_scheme(host: str, base_url: str) -> None:
    assert settings(host=host).base_url == base_url


@pytest.mark.parametrize(
    ("uri", "base_url"),
    [
        ("xai://:xai-k@api.x.ai/v1", "https://api.x.ai/v1"),
        ("xai://:xai-k@proxy.internal:8443/v1", "https://proxy.internal:8443/v1"),
    ],
)
def test_base_url_from_the_uri_form_keeps_port_and_path(uri: str, base_url: str) -> None:
    conn = Connection.from_uri(uri, conn_id="xai_unit")

    assert XaiConnectionSettings.from_connection(conn).base_url == base_url


@pytest.mark.parametrize("password", [None, ""])
def test_no_api_key_is_a_config_error(password: str | None) -> None:
    with pytest.raises(XaiConnectionConfigError, match="'xai_unit' has no API key"):
        settings(password=password)


def test_settings_repr_masks_the_key() -> None:
    parsed = settings(password="xai-very-secret-key-123")

    assert "xai-very-secret-key-123" not in repr(parsed)
    assert "xai-very-secret-key-123" not in repr(parsed.api_key)
