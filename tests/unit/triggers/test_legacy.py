"""``triggers.legacy``: a generate trigger serialized by the previous version (its exact kwargs) is still
accepted after an upgrade, rebuilt into the plan that version's worker meant; and how much smaller the
trigger row of the plan is."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.serde import serialize
from support.images import jpeg_file

from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.engine.plan import GenerationPlan, PlannedRequests
from airflow_provider_xai_image.exceptions import XaiPlanError
from airflow_provider_xai_image.ledger.records import request_fingerprint
from airflow_provider_xai_image.triggers.generate import XaiGenerateImagesTrigger

FOLDER = "s3://aws_moto@bucket/images/manual__1/generate"
PRICE = 200_000_000


def old_kwargs(prompts: list[str], left: list[int], source_images: list[str] | None, **body: Any) -> dict[str, Any]:
    """The kwargs the previous version's ``serialize()`` wrote for the prompts ``left`` to generate."""
    bodies = {index: {"prompt": prompts[index], "model": "grok-imagine-image", "n": 2, **body} for index in left}
    return {
        "requests": {str(index): bodies[index] for index in left},
        "fingerprints": {str(index): f"{index:012x}" for index in left},
        "prices": {str(index): PRICE for index in left},
        "folder": FOLDER,
        "prompts": prompts,
        "xai_conn_id": "xai_other",
        "source_images": source_images,
        "max_concurrency": 3,
        "on_moderation": "skip",
        "max_cost_usd": 2.5,
    }


def test_old_kwargs_round_trip_unchanged() -> None:
    kwargs = old_kwargs(["a", "b", "c"], [0, 2], None, aspect_ratio="16:9")

    trigger = XaiGenerateImagesTrigger(**json.loads(json.dumps(kwargs)))

    assert trigger.serialize() == ("airflow_provider_xai_image.triggers.generate.XaiGenerateImagesTrigger", kwargs)
    assert (trigger.plan_uri, trigger.plan_digest, trigger.xai_conn_id) == (None, None, "xai_other")


def test_old_kwargs_become_the_plan_their_worker_meant(tmp_path: Path) -> None:
    source = jpeg_file(tmp_path / "photo.jpg")
    prompts = ["add a hat", "add a scarf", "add boots"]
    trigger = XaiGenerateImagesTrigger(**old_kwargs(prompts, [1, 2], [f"file://{source}"], aspect_ratio="16:9"))

    plan, folder = trigger._plan()

    assert folder == FOLDER
    sources = (f"data:image/jpeg;base64,{base64.b64encode(source.read_bytes()).decode()}",)
    expected = {
        index: ImageRequest.build(
            prompt=prompt, model="grok-imagine-image", n=2, aspect_ratio="16:9", source_images=sources
        )
        for index, prompt in enumerate(prompts)
    }
    assert dict(plan.requests.by_index) == expected
    # the fingerprints the old worker sent are kept; the prompt it had finished gets the one it would have had
    assert plan.requests.fingerprints == [request_fingerprint(expected[0]), f"{1:012x}", f"{2:012x}"]
    assert (plan.price_usd_ticks, plan.max_cost_usd, plan.on_moderation, plan.max_concurrency) == (
        PRICE,
        2.5,
        "skip",
        3,
    )


@pytest.mark.parametrize(
    "broken",
    [
        {"requests": {}, "fingerprints": {}, "prices": {}},
        {"requests": {"5": {"prompt": "x", "model": "grok-imagine-image", "n": 1}}},
    ],
    ids=["no request", "no prompt for a request"],
)
def test_old_kwargs_without_a_plan_to_rebuild_are_refused(broken: dict[str, Any]) -> None:
    trigger = XaiGenerateImagesTrigger(**{**old_kwargs(["a", "b"], [0], None), **broken})

    with pytest.raises(XaiPlanError, match="holds no request, or one of no prompt"):
        trigger._plan()


def test_old_requests_that_differ_in_more_than_their_prompt_are_refused() -> None:
    kwargs = old_kwargs(["a", "b"], [0, 1], None)
    kwargs["requests"]["1"]["n"] = 1

    with pytest.raises(XaiPlanError, match="differ in more than their prompt"):
        XaiGenerateImagesTrigger(**kwargs)._plan()


def test_the_trigger_row_no_longer_grows_with_the_prompts() -> None:
    prompts = [f"A product shot of item {index:05d} on a white background, soft light" for index in range(10_000)]
    plan = GenerationPlan(
        requests=PlannedRequests.of(
            {index: ImageRequest.build(prompt=prompt, n=2) for index, prompt in enumerate(prompts)}, prompts
        ),
        price_usd_ticks=PRICE,
    )
    new = XaiGenerateImagesTrigger(plan_uri=f"{FOLDER}/plan.json", plan_digest="0" * 64).serialize()[1]
    old = XaiGenerateImagesTrigger(**old_kwargs(prompts, list(range(10_000)), None)).serialize()[1]

    new_size, old_size = len(json.dumps(serialize(new))), len(json.dumps(serialize(old)))
    print(f"trigger kwargs for 10,000 prompts: {old_size} bytes before, {new_size} bytes now")
    assert new_size < 512
    assert old_size > 2_000_000
    assert len(plan.model_dump_json()) < old_size  # the plan in storage holds each prompt once
