"""``engine.task_parameters.TaskParameters``: operator parameters checked before any request, every bad
one named with what is allowed."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_xai_image.engine.task_parameters import TaskParameters, storage_schemes
from airflow_provider_xai_image.exceptions import XaiRequestValidationError

STORAGE_URI = (
    "must be a URI with a storage scheme Airflow's ObjectStoragePath supports (s3://, gs://, abfs://, file://, ...)"
)


def problems(**values: Any) -> str:
    with pytest.raises(XaiRequestValidationError) as raised:
        TaskParameters.check(**values)
    message = str(raised.value)
    assert message.startswith("Invalid operator parameter: ")
    return message.removeprefix("Invalid operator parameter: ")


def test_good_values_are_kept_one_prompt_or_source_as_a_list_a_rendered_number_as_a_number() -> None:
    checked = TaskParameters.check(
        prompt="a cat", n="2", output_uri="file:///tmp/out/", source_images="https://example.com/a.png"
    )

    assert (checked.prompt, checked.n, checked.output_uri) == (["a cat"], 2, "file:///tmp/out/")
    assert checked.source_images == ["https://example.com/a.png"]
    assert checked.prompts is None


def test_every_bad_parameter_is_named_in_one_error() -> None:
    assert problems(prompt=["a", " "], n=11, on_moderation="maybe") == (
        "prompt.1: Value error, must be a non-blank string (got ' '); "
        "n: Input should be less than or equal to 10 (got 11); "
        "on_moderation: Input should be 'fail' or 'skip' (got 'maybe')"
    )


def test_limits_of_the_numbers() -> None:
    assert problems(
        max_cost_usd=float("nan"), max_concurrency=0, max_failed_fraction=1.5, poll_interval=0, shares=0
    ) == (
        "max_cost_usd: Input should be a finite number (got nan); "
        "max_concurrency: Input should be greater than or equal to 1 (got 0); "
        "max_failed_fraction: Input should be less than or equal to 1 (got 1.5); "
        "poll_interval: Input should be greater than 0 (got 0); "
        "shares: Input should be greater than or equal to 1 (got 0)"
    )
    TaskParameters.check(max_cost_usd=0, max_failed_fraction=1.0, n=10, max_concurrency=1)


def test_a_required_parameter_left_out_is_named_with_what_it_takes() -> None:
    assert problems(required=["prompt"], n=1) == (
        "prompt: is required, a non-blank string or a non-empty list of non-blank strings (got None)"
    )


def test_values_are_strict_and_unknown_names_refused() -> None:
    assert problems(n=True) == "n: Input should be a valid integer (got True)"
    assert problems(n="two") == "n: Input should be a valid integer (got 'two')"
    assert problems(colour="red") == "colour: Extra inputs are not permitted (got 'red')"


@pytest.mark.parametrize("uri", ["https://example.com/out/", "data:image/png;base64,AAAA", "nowhere://bucket/", " "])
def test_the_output_must_be_storage(uri: str) -> None:
    assert problems(output_uri=uri) == f"output_uri: Value error, {STORAGE_URI} (got {uri!r})"


def test_sources_may_also_be_https_or_data_uris_at_most_three() -> None:
    sources = ["https://example.com/a.png", "data:image/png;base64,AAAA", "s3://bucket/b.jpg"]
    assert TaskParameters.check(source_images=sources).source_images == sources

    assert "source_images: Value error, must be https://, data:image/... or a URI" in problems(
        source_images=[*sources[:2], "nowhere://c.png"]
    )
    assert problems(source_images=[*sources, "s3://bucket/d.jpg"]).startswith(
        "source_images: Value should have at most 3 items after validation, not 4"
    )


def test_storage_schemes_are_fsspecs_without_the_read_only_web() -> None:
    schemes = storage_schemes()

    assert {"file", "s3", "memory"} <= schemes
    assert schemes.isdisjoint({"http", "https", "data"})
