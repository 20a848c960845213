"""Pure functions under the hook, without the emulator: batch files, parsing, image sniffing, settings."""

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

from airflow_provider_xai_image.api.batch_files import batch_files
from airflow_provider_xai_image.api.batches import BATCH_FILE_MAX_BYTES, parse_batch_results_page
from airflow_provider_xai_image.api.images import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    NO_IMAGE_ERROR,
    ImageRequest,
    decode_b64_image,
    parse_image_response,
)
from airflow_provider_xai_image.connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IMAGE_READ_TIMEOUT,
    DEFAULT_MAX_AMBIGUOUS_RETRIES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    XaiConnectionSettings,
)
from airflow_provider_xai_image.exceptions import XaiConnectionConfigError, XaiImageError
from airflow_provider_xai_image.storage.image_checks import HEADER_BYTES, ImageType, ImageWriter, sniff_image_type


def encoded(image_format: str, size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (9, 99, 199)).save(buffer, format=image_format)
    return buffer.getvalue()


JPEG = encoded("JPEG")
PNG = encoded("PNG")
GIF = encoded("GIF")
WEBP = encoded("WEBP")


# -- batch_files ----------------------------------------------------------------------------------


def pairs(count: int, prompt_bytes: int = 100) -> list[tuple[str, ImageRequest]]:
    request = ImageRequest.build(prompt="p" * prompt_bytes)
    return [(f"id-{index}", request) for index in range(count)]


def ids_of(content: bytes) -> list[str]:
    return [json.loads(line)["custom_id"] for line in content.decode().splitlines()]


@pytest.mark.parametrize("max_bytes", [600, 1000, 4096, 10_000])
def test_batch_files_respect_the_byte_limit_and_keep_order(max_bytes: int) -> None:
    given = pairs(50)

    files = list(batch_files(given, max_bytes))

    assert [custom_id for content, _ in files for custom_id in ids_of(content)] == [custom_id for custom_id, _ in given]
    assert all(count == len(ids_of(content)) > 0 for content, count in files)
    assert all(len(content) <= max_bytes for content, _ in files)
    # Greedy: the next file's first line would not have fitted in the previous file.
    for (content, _), (following, _) in itertools.pairwise(files):
        assert len(content) + len(following.splitlines(keepends=True)[0]) > max_bytes


def test_batch_file_lines_are_json_lines_of_the_request_bodies() -> None:
    request = ImageRequest.build(prompt="a cat", n=2, aspect_ratio="16:9")

    [(content, count)] = list(batch_files([("r1", request)]))

    assert count == 1
    assert content.endswith(b"\n")
    assert json.loads(content) == {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/images/generations",
        "body": {"prompt": "a cat", "model": DEFAULT_MODEL, "n": 2, "aspect_ratio": "16:9", "response_format": "url"},
    }


def test_an_edit_line_goes_to_the_edits_endpoint() -> None:
    request = ImageRequest.build(prompt="night", source_images=("https://example.com/a.png",))

    [(content, _)] = list(batch_files([("e", request)]))

    line = json.loads(content)
    assert line["url"] == "/v1/images/edits"
    assert line["body"]["image"] == {"type": "image_url", "url": "https://example.com/a.png"}


def test_everything_fits_in_one_file_under_the_default_limit() -> None:
    [(content, count)] = list(batch_files(pairs(1000)))

    assert count == 1000
    assert len(content) < BATCH_FILE_MAX_BYTES


def test_no_requests_no_files() -> None:
    assert list(batch_files([], 1000)) == []


def test_a_line_exactly_at_the_limit_is_alone_in_its_file() -> None:
    [(line, _)] = list(batch_files(pairs(1, prompt_bytes=300)))

    files = list(batch_files(pairs(3, prompt_bytes=300), len(line)))

    assert [count for _, count in files] == [1, 1, 1]
    assert all(len(content) == len(line) for content, _ in files)


def test_an_oversize_request_is_an_error_naming_it_before_any_file() -> None:
    big = ("the-big-one", ImageRequest.build(prompt="b" * 5000))
    produced = batch_files([*pairs(1), big], 2000)

    with pytest.raises(ValueError, match=r"'the-big-one' is \d+ bytes, over the 2000-byte file limit"):
        next(produced)


def test_batch_files_are_lazy_over_an_iterator() -> None:
    files = batch_files(iter(pairs(10)), 1000)

    first, count = next(files)
    assert ids_of(first)[0] == "id-0"
    assert count + sum(count for _, count in files) == 10


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


def test_an_empty_block_reason_blocks_nothing() -> None:
    result = parse_image_response({"data": [{"url": "https://x/a.jpeg"}], "block_reason": ""}, "m")

    assert [(image.filtered, image.url) for image in result.images] == [(False, "https://x/a.jpeg")]
    assert result.error is None


def test_no_image_and_no_block_reason_is_an_error() -> None:
    result = parse_image_response({"data": [], "block_reason": None}, "m", expected_images=2)

    assert result.images == []
    assert result.error == NO_IMAGE_ERROR


@pytest.mark.parametrize("revised", [None, ""])
def test_an_empty_or_absent_revised_prompt_is_none(revised: str | None) -> None:
    item: dict[str, Any] = {"url": "https://x/a.jpeg"}
    if revised is not None:
        item["revised_prompt"] = revised

    [image] = parse_image_response({"data": [item]}, "m").images

    assert image.revised_prompt is None


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


def test_results_page_with_a_response_and_every_error_shape() -> None:
    page = {
        "results": [
            {
                "batch_request_id": "a",
                "batch_result": {"response": {"image_generation": image_response("https://x/a")}},
            },
            {"batch_request_id": "b", "batch_result": {"error": {"code": 3, "message": "boom"}}},
            {"batch_request_id": "c", "batch_result": {"response": {"other_kind": image_response("https://x/c")}}},
            {"batch_request_id": "d", "batch_result": {"error": "plain text error"}},
            {"batch_request_id": "e", "error_message": "top-level error"},
        ],
        "pagination_token": "next-page",
    }

    results, token = parse_batch_results_page(page, "grok-imagine-image")

    assert token == "next-page"
    by_id = {result.batch_request_id: result for result in results}
    assert by_id["a"].result is not None
    assert by_id["a"].result.images[0].url == "https://x/a"
    assert by_id["a"].result.model == "grok-imagine-image"
    assert by_id["a"].result.cost_usd_ticks == 100_000_000
    assert (by_id["b"].result, by_id["b"].error) == (None, "boom (code 3)")
    assert by_id["c"].result is not None  # whichever single kind key is there
    assert by_id["c"].result.images[0].url == "https://x/c"
    assert by_id["d"].error == "plain text error"
    assert by_id["e"].error == "top-level error"
    assert all(result.unreadable is None for result in results)


def test_a_result_in_an_unknown_shape_is_unreadable_not_lost() -> None:
    page = {
        "results": [
            {"batch_request_id": "x", "batch_result": {}},
            {"batch_request_id": "y", "batch_result": {"response": {"a": {}, "b": {}}}},
            {"batch_request_id": "z", "succeeded": True},
        ]
    }

    results, token = parse_batch_results_page(page, "m")

    assert token is None
    assert [result.batch_request_id for result in results] == ["x", "y", "z"]
    assert all(result.unreadable and result.result is None and result.error is None for result in results)


@pytest.mark.parametrize("token", [None, ""])
def test_a_page_without_a_token_is_the_last(token: str | None) -> None:
    page: dict[str, Any] = {"results": []}
    if token is not None:
        page["pagination_token"] = token

    assert parse_batch_results_page(page, "m") == ([], None)


@pytest.mark.parametrize("page", [{}, {"succeeded": [], "failed": []}, {"results": {"a": 1}}])
def test_a_page_without_a_results_list_is_an_error(page: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="'results' list"):
        parse_batch_results_page(page, "m")


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
    assert (parsed.connect_timeout, parsed.read_timeout) == (DEFAULT_CONNECT_TIMEOUT, None)
    assert parsed.timeout(image_request=True) == (DEFAULT_CONNECT_TIMEOUT, DEFAULT_IMAGE_READ_TIMEOUT) == (10.0, 900.0)
    assert parsed.timeout() == (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT) == (10.0, 120.0)
    assert parsed.max_retries == DEFAULT_MAX_RETRIES
    assert parsed.max_ambiguous_retries == DEFAULT_MAX_AMBIGUOUS_RETRIES == 0
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
        (None, (DEFAULT_CONNECT_TIMEOUT, None)),
        ("", (DEFAULT_CONNECT_TIMEOUT, None)),
    ],
)
def test_timeout_as_a_number_or_connect_read_pair(timeout: Any, expected: tuple[float, float | None]) -> None:
    parsed = settings(timeout=timeout)

    assert (parsed.connect_timeout, parsed.read_timeout) == expected
    if expected[1] is not None:  # a timeout the connection sets applies to every call
        assert parsed.timeout() == parsed.timeout(image_request=True) == expected


@pytest.mark.parametrize("value", ["fast", [1, 2, 3], {"read": 5}])
def test_a_malformed_timeout_is_a_config_error(value: Any) -> None:
    with pytest.raises(XaiConnectionConfigError, match="'xai_unit': extra 'timeout' must be seconds"):
        settings(timeout=value)


@pytest.mark.parametrize(("value", "expected"), [(3, 3), ("2", 2), (0, 0), (None, 0)])
def test_max_ambiguous_retries(value: Any, expected: int) -> None:
    assert settings(max_ambiguous_retries=value).max_ambiguous_retries == expected


@pytest.mark.parametrize("value", [-1, "many", 1.5, True])
def test_a_bad_retry_count_is_a_config_error(value: Any) -> None:
    with pytest.raises(XaiConnectionConfigError, match="'max_ambiguous_retries' must be a whole number >= 0"):
        settings(max_ambiguous_retries=value)


@pytest.mark.parametrize(("value", "expected"), [(20, 20.0), ("12.5", 12.5), (0.5, 0.5), (None, 5.0), ("", 5.0)])
def test_requests_per_second(value: Any, expected: float) -> None:
    assert settings(requests_per_second=value).requests_per_second == expected


@pytest.mark.parametrize("value", [0, -5, "fast", True, float("inf"), float("nan"), [5]])
def test_a_bad_requests_per_second_is_a_config_error(value: Any) -> None:
    with pytest.raises(XaiConnectionConfigError, match="'requests_per_second' must be requests per second > 0"):
        settings(requests_per_second=value)


def test_prefixed_extras_of_the_ui_form() -> None:
    parsed = settings(
        extra__xai__timeout=12, extra__xai__max_retries="3", extra__xai__default_model="grok-imagine-image"
    )

    assert (parsed.read_timeout, parsed.max_retries, parsed.default_model) == (12.0, 3, "grok-imagine-image")


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


@pytest.mark.parametrize("password", ["xai-k-123456\n", "  xai-k-123456 ", "\txai-k-123456\r\n"])
def test_whitespace_around_the_key_is_stripped(password: str) -> None:
    assert settings(password=password).api_key.get_secret_value() == "xai-k-123456"


@pytest.mark.parametrize("password", ["xai-k-12\n3456", "xai-k 123456", "xai-k-12\x003456", "xai-k-\u00e9123456"])
def test_a_key_no_header_can_carry_is_refused_without_being_shown(password: str) -> None:
    with pytest.raises(XaiConnectionConfigError) as raised:
        settings(password=password)

    message = str(raised.value)
    assert "'xai_unit'" in message
    assert "API key" in message
    for part in (password, password.strip(), "xai-k-12", "3456", "123456"):
        assert part not in message
