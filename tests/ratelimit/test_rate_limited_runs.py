"""Rate-limited runs through the real path: the operator (threads) and its trigger (asyncio) against the
emulator over HTTP, limited to 3 generate calls a second: every image stored once and billed once, no
request failing for a 429 with ``max_retries=0``, and the emulator's log showing fewer requests in
flight after the first 429s."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from task_context import make_task_context

from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.testing import RequestRecord, XaiEmulator
from airflow_provider_xai_image.triggers.generate import XaiGenerateImagesTrigger

PROMPTS = 30
MAX_CONCURRENCY = 8
RATE_LIMIT_RPS = 3
GENERATION_LATENCY = 0.3


@pytest.fixture
def limited(emulator: XaiEmulator) -> XaiEmulator:
    emulator.configure(rate_limit_rps=RATE_LIMIT_RPS, generation_latency=GENERATION_LATENCY)
    return emulator


def operator(out: Path, **kwargs: Any) -> XaiGenerateImagesOperator:
    return XaiGenerateImagesOperator(
        task_id="generate",
        prompt=[f"a paper lantern, number {index}" for index in range(PROMPTS)],
        output_uri=f"file://{out}",
        max_concurrency=MAX_CONCURRENCY,
        **kwargs,
    )


def context() -> dict[str, Any]:
    return make_task_context("generate", dag_id="ratelimit", run_id="manual__ratelimit")


def image_calls(emulator: XaiEmulator) -> list[RequestRecord]:
    return [record for record in emulator.requests_log if record.method == "POST" and "/images/" in record.path]


def check_every_image_once(emulator: XaiEmulator, ctx: dict[str, Any], uris: list[str], out: Path) -> None:
    calls = image_calls(emulator)
    assert {record.status for record in calls} == {200, 429}
    assert sum(record.status == 200 for record in calls) == PROMPTS  # each prompt answered once
    assert emulator.images_billed == PROMPTS
    assert len(uris) == len(set(uris)) == PROMPTS
    assert len([path for path in out.rglob("p*-i*.jpg")]) == PROMPTS
    manifest = json.loads(Path(ctx["ti"].xcoms["manifest"].removeprefix("file://")).read_text())
    assert sorted(image["prompt_index"] for image in manifest["images"]) == list(range(PROMPTS))
    assert manifest["errors"] == []


def check_in_flight_fell(emulator: XaiEmulator) -> None:
    """Fewer generate calls in flight over the second half of the run than in the first burst.

    The first burst is every call sent at once (arriving before any answered one could end): the 3 the
    emulator accepts stay in flight, so the 4th sees at least 4. Each 429 halves what the task allows (8, 4,
    2, 1) and the step back up to where a 429 came takes many successes, so later calls see 1 or 2.
    """
    calls = sorted(image_calls(emulator), key=lambda record: record.time)
    assert any(record.status == 429 for record in calls[:MAX_CONCURRENCY])  # the first burst drew 429s
    burst = [record.in_flight for record in calls if record.time < calls[0].time + GENERATION_LATENCY]
    second_half = [record.in_flight for record in calls[len(calls) // 2 :]]
    assert max(burst) > RATE_LIMIT_RPS, burst
    assert max(second_half) <= 2, second_half


def test_a_rate_limited_run_stores_every_image_once_and_slows_down(limited: XaiEmulator, out: Path) -> None:
    ctx = context()

    uris = operator(out).execute(ctx)

    check_every_image_once(limited, ctx, uris, out)
    check_in_flight_fell(limited)


def test_a_rate_limited_deferrable_run_stores_every_image_once_and_slows_down(limited: XaiEmulator, out: Path) -> None:
    ctx = context()
    task = operator(out, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(ctx)
    classpath, kwargs = deferred.value.trigger.serialize()
    module, _, name = classpath.rpartition(".")
    trigger: XaiGenerateImagesTrigger = getattr(importlib.import_module(module), name)(**kwargs)

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger fired no event")

    event = asyncio.run(first_event())
    assert event["status"] == "success", event
    uris = task.execute_complete(ctx, event)

    check_every_image_once(limited, ctx, uris, out)
    check_in_flight_fell(limited)
