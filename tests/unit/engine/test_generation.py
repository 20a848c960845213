"""``engine.generation``: what is left to pay for, the budget, and each outcome recorded, against a real
:class:`ImageStore` in a local folder (no emulator: results are built as the hook returns them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath
from support.images import JPEG

from airflow_provider_xai_image.api.images import GeneratedImage, ImageGenerationResult, ImageRequest
from airflow_provider_xai_image.api.prices import USD_TICKS_PER_USD
from airflow_provider_xai_image.engine.generation import ByPrompt, GenerationRun, estimate_usd_ticks, resume
from airflow_provider_xai_image.engine.plan import GenerationPlan, PlannedRequests
from airflow_provider_xai_image.exceptions import (
    XaiBudgetExceededError,
    XaiContentFilteredError,
    XaiPossiblyBilledError,
)
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.ledger.progress import Remaining
from airflow_provider_xai_image.storage.image_store import ImageStore

CENT = USD_TICKS_PER_USD // 100
PRICE = 2 * CENT
PROMPTS = ["a red fox", "a blue whale"]
REQUESTS = {index: ImageRequest.build(prompt=prompt, n=2) for index, prompt in enumerate(PROMPTS)}
PLANNED = PlannedRequests.of(REQUESTS, PROMPTS)


def result(*images: GeneratedImage, cost: int) -> ImageGenerationResult:
    return ImageGenerationResult(images=list(images), model="grok-imagine-image", cost_usd_ticks=cost)


def jpeg() -> GeneratedImage:
    return GeneratedImage(data=JPEG, mime_type="image/jpeg")


def start(
    folder: Path, max_cost_usd: float | None = None, on_moderation: str = "skip"
) -> tuple[GenerationRun, Remaining]:
    """A run as the operator starts one: a prepared store, what earlier runs left read back, then the run."""
    store = ImageStore(ObjectStoragePath(f"file://{folder}/"), XaiHook())
    store.prepare()
    remaining = resume(store, PLANNED, on_moderation)
    plan = GenerationPlan(
        requests=PLANNED, price_usd_ticks=PRICE, max_cost_usd=max_cost_usd, on_moderation=on_moderation
    )
    return GenerationRun(store, plan), remaining


def answer(run: GenerationRun, remaining: Mapping[int, tuple[ImageRequest, int]], index: int, *images: GeneratedImage):
    request, first_image_index = remaining[index]
    estimate = run.reserve(request)
    return run.stored(index, request, first_image_index, result(*images, cost=3 * CENT), estimate)


def stored_images(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.jpg"))


def test_an_estimate_counts_every_image_and_every_source_image() -> None:
    edit = ImageRequest.build(prompt="make it blue", n=3, source_images=("https://example.com/a.png",) * 2)

    assert estimate_usd_ticks(PRICE, REQUESTS[0]) == 2 * PRICE
    assert estimate_usd_ticks(PRICE, edit) == 5 * PRICE


def test_by_prompt_computes_each_value_when_asked_and_keeps_none() -> None:
    asked: list[int] = []
    squares = ByPrompt(4, lambda index: asked.append(index) or index * index)

    assert (len(squares), list(squares)) == (4, [0, 1, 2, 3])
    assert asked == []
    assert (squares[3], squares[3]) == (9, 9)
    assert asked == [3, 3]
    with pytest.raises(KeyError):
        squares[4]
    with pytest.raises(KeyError):
        squares[-1]


def test_a_second_run_asks_only_for_what_the_first_did_not_store_and_counts_its_spend(tmp_path: Path) -> None:
    first, remaining = start(tmp_path)
    with first.store:
        assert sorted(remaining) == [0, 1]
        record = answer(first, remaining, 0, jpeg(), jpeg())
    assert [image.image_index for image in record.images] == [0, 1]
    assert first.budget.spent == 3 * CENT

    second, remaining = start(tmp_path)
    with second.store:
        assert sorted(remaining) == [1]
    assert second.budget.spent == 3 * CENT
    assert len(stored_images(tmp_path)) == 2


def test_a_filtered_image_is_done_when_skipped_and_fails_the_task_otherwise(tmp_path: Path) -> None:
    run, remaining = start(tmp_path)
    with run.store:
        record = answer(run, remaining, 1, jpeg(), GeneratedImage(filtered=True))
    assert record.filtered
    assert len(stored_images(tmp_path)) == 1

    assert sorted(start(tmp_path)[1]) == [0]
    with pytest.raises(XaiContentFilteredError, match=r"prompt index\(es\) \[1\]"):
        start(tmp_path, on_moderation="fail")


def test_filtered_on_the_answer_itself_fails_when_on_moderation_is_fail(tmp_path: Path) -> None:
    run, remaining = start(tmp_path, on_moderation="fail")
    with run.store, pytest.raises(XaiContentFilteredError, match=r"\[0\]"):
        answer(run, remaining, 0, GeneratedImage(filtered=True), jpeg())


def test_a_possibly_billed_request_is_recorded_and_counted_as_spent_by_the_next_run(tmp_path: Path) -> None:
    run, remaining = start(tmp_path)
    error = XaiPossiblyBilledError("POST", "images/generations", None, "read timed out")
    error.attempts = 2
    with run.store:
        request, _ = remaining[0]
        estimate = run.reserve(request)
        run.failed(0, request, estimate, error)
    assert run.budget.spent == 2 * estimate == 8 * CENT

    # The next run knows the money may be gone: $0.08 possibly paid + $0.04 for prompt 0 is over $0.10.
    again, remaining = start(tmp_path, max_cost_usd=0.10)
    with again.store:
        assert again.budget.spent == 8 * CENT
        with pytest.raises(XaiBudgetExceededError):
            again.reserve(remaining[0][0])


def test_a_request_that_surely_failed_frees_its_hold_and_records_nothing(tmp_path: Path) -> None:
    run, remaining = start(tmp_path, max_cost_usd=0.04)  # one request's estimate
    with run.store:
        request, _ = remaining[0]
        estimate = run.reserve(request)
        with pytest.raises(XaiBudgetExceededError):
            run.reserve(remaining[1][0])
        run.failed(0, request, estimate, ConnectionRefusedError("refused before sending"))
        assert run.reserve(remaining[1][0]) == estimate
    assert run.budget.spent == 0

    fresh, remaining = start(tmp_path)
    with fresh.store:
        assert sorted(remaining) == [0, 1]
        assert fresh.budget.spent == 0
