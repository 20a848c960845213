"""``api.batch_files``: batch input files as JSON lines, split under the byte limit, lazily."""

from __future__ import annotations

import itertools
import json

import pytest

from airflow_provider_xai_image.api.batch_files import batch_files
from airflow_provider_xai_image.api.batches import BATCH_FILE_MAX_BYTES
from airflow_provider_xai_image.api.images import (
    DEFAULT_MODEL,
    ImageRequest,
)


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
