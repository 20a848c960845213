"""``api.images``: reading an image response (b64 or URL, moderation, revised prompts)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from support.images import JPEG

from airflow_provider_xai_image.api.images import (
    NO_IMAGE_ERROR,
    decode_b64_image,
    parse_image_response,
)


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
