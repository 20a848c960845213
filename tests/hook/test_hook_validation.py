"""Bad request parameters are rejected by the hook before anything is sent to xAI."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from airflow_provider_xai_image.exceptions import XaiRequestValidationError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator

GOOD_SOURCE = "https://example.com/source.jpg"

#: (keyword arguments of generate_images, the parameter named, allowed values the message must list)
BAD_INPUTS: list[tuple[dict[str, Any], str, tuple[str, ...]]] = [
    ({"n": 0}, "n", ("greater than or equal to 1",)),
    ({"n": -3}, "n", ("greater than or equal to 1",)),
    ({"n": 11}, "n", ("less than or equal to 10",)),
    ({"n": "many"}, "n", ("valid integer",)),
    ({"n": 2.5}, "n", ("valid integer",)),
    ({"aspect_ratio": "5:4"}, "aspect_ratio", ("'16:9'", "'19.5:9'", "'auto'")),
    ({"aspect_ratio": "16x9"}, "aspect_ratio", ("'16:9'", "'1:1'")),
    ({"aspect_ratio": ""}, "aspect_ratio", ("'16:9'",)),
    ({"resolution": "4k"}, "resolution", ("'1k'", "'2k'")),
    ({"resolution": "2K"}, "resolution", ("'1k'", "'2k'")),
    ({"quality": "ultra"}, "quality", ("'low'", "'medium'")),
    ({"quality": "high"}, "quality", ("'low'", "'medium'")),  # refused by xAI since revision 2
    ({"response_format": "png"}, "response_format", ("'url'", "'b64_json'")),
    ({"prompt": ""}, "prompt", ("non-blank",)),
    ({"prompt": "   "}, "prompt", ("non-blank",)),
    ({"prompt": "\n\t"}, "prompt", ("non-blank",)),
    ({"prompt": None}, "prompt", ("valid string",)),
    ({"prompt": 123}, "prompt", ("valid string",)),
    ({"source_images": [GOOD_SOURCE] * 4}, "source_images", ("at most 3",)),
    ({"source_images": []}, "source_images", ("at least 1",)),
    ({"source_images": ["ftp://example.com/a.png"]}, "source_images", ("https URL", "data:image/")),
    ({"source_images": [GOOD_SOURCE, "file:///etc/passwd"]}, "source_images", ("https URL",)),
    ({"source_images": ["data:text/plain;base64,aGVsbG8="]}, "source_images", ("data:image/",)),
    ({"model": ""}, "model", ("at least 1 character",)),
    ({"user": 123}, "user", ("valid string",)),
]


def test_there_are_at_least_twenty_bad_inputs() -> None:
    assert len(BAD_INPUTS) >= 20


@pytest.mark.parametrize(
    ("kwargs", "parameter", "allowed"),
    BAD_INPUTS,
    ids=[f"{next(iter(case[0]))}={next(iter(case[0].values()))!r}"[:40] for case in BAD_INPUTS],
)
def test_bad_input_is_rejected_before_any_request(
    hook: XaiHook, emulator: XaiEmulator, kwargs: dict[str, Any], parameter: str, allowed: tuple[str, ...]
) -> None:
    params = {"prompt": "a valid prompt", **kwargs}
    prompt = params.pop("prompt")

    with pytest.raises(XaiRequestValidationError) as raised:
        hook.generate_images(prompt, **params)

    message = str(raised.value)
    assert message.startswith("Invalid xAI image request: ")
    assert f"{parameter}: " in message
    for fragment in allowed:
        assert fragment in message
    if parameter == "quality":
        assert "'high'" not in message.partition("quality: ")[2].partition("(got")[0]  # not offered
    assert emulator.requests_log == []
    assert emulator.images_billed == 0


@pytest.mark.parametrize(("name", "value"), [("size", "1024x1024"), ("style", "vivid"), ("seed", 7)])
def test_unknown_parameters_are_rejected_by_build_request(
    hook: XaiHook, emulator: XaiEmulator, name: str, value: Any
) -> None:
    with pytest.raises(XaiRequestValidationError, match=f"{name}: Extra inputs are not permitted"):
        hook.build_request("a cat", **{name: value})
    assert emulator.requests_log == []


def test_unknown_parameters_are_not_accepted_by_generate_images(hook: XaiHook, emulator: XaiEmulator) -> None:
    with pytest.raises(TypeError, match="size"):
        hook.generate_images("a cat", size="1024x1024")  # type: ignore[call-arg]
    assert emulator.requests_log == []


def test_several_bad_parameters_are_all_named(hook: XaiHook, emulator: XaiEmulator) -> None:
    with pytest.raises(XaiRequestValidationError) as raised:
        hook.generate_images("a cat", n=99, aspect_ratio="5:4", quality="ultra")

    assert all(f"{name}: " in str(raised.value) for name in ("n", "aspect_ratio", "quality"))
    assert emulator.requests_log == []


def test_rejection_of_a_huge_data_uri_does_not_echo_it(hook: XaiHook, emulator: XaiEmulator) -> None:
    """Four ~1 MB data-URI sources (one too many): the message names the problem without megabytes of base64."""
    big = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff" + b"\0" * 1_000_000).decode()

    with pytest.raises(XaiRequestValidationError) as raised:
        hook.generate_images("merge", source_images=[big] * 4)

    message = str(raised.value)
    assert "source_images: " in message
    assert "at most 3" in message
    assert len(message) < 2000
    assert emulator.requests_log == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 10, "quality": "medium", "resolution": "2k", "aspect_ratio": "19.5:9"},
        {"n": 1, "quality": "low", "response_format": "b64_json", "user": "end-user-7"},
        {"source_images": [GOOD_SOURCE, GOOD_SOURCE, GOOD_SOURCE], "aspect_ratio": "auto"},
        {"model": "grok-imagine-image-2.0", "quality": "low"},
        {"model": "grok-imagine-image-pro"},
    ],
)
def test_boundary_values_are_accepted_and_sent(hook: XaiHook, emulator: XaiEmulator, kwargs: dict[str, Any]) -> None:
    hook.generate_images("a valid prompt", **kwargs)

    [sent] = emulator.requests_log
    assert sent.status == 200
    body = sent.json
    for name, value in kwargs.items():
        if name != "source_images":
            assert body[name] == value


def test_quality_high_is_refused_before_any_request(hook: XaiHook, emulator: XaiEmulator) -> None:
    with pytest.raises(XaiRequestValidationError) as raised:
        hook.generate_images("a detailed cat", model="grok-imagine-image-2.0", quality="high")

    message = str(raised.value)
    assert message.startswith("Invalid xAI image request: quality: ")
    assert "'high'" in message  # what was given
    assert emulator.requests_log == []
    assert emulator.images_billed == 0
