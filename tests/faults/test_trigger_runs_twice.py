"""A deferrable generation whose trigger Airflow runs twice (triggerer restart, failover) pays once,
stops when cancelled, and brings its typed error back to the worker; the trigger runs the worker's plan
(a local source gone since is not read again), and a trigger of the previous version still runs."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred
from faults_support import context, generation_posts, images_in, manifest_of
from support.images import jpeg_file

from airflow_provider_xai_image.engine.plan import GenerationPlan
from airflow_provider_xai_image.exceptions import XaiAuthError
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.testing import XaiEmulator
from airflow_provider_xai_image.triggers.generate import XaiGenerateImagesTrigger


def deferred_trigger(operator: XaiGenerateImagesOperator, ctx: dict[str, Any]) -> XaiGenerateImagesTrigger:
    """Run ``execute`` up to its deferral; return the trigger as the triggerer would rebuild it."""
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(ctx)
    classpath, kwargs = deferred.value.trigger.serialize()
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


async def first_event(trigger: XaiGenerateImagesTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger fired no event")


def operator(output_uri: str, **kwargs: Any) -> XaiGenerateImagesOperator:
    """A deferrable generation: two prompts of two images unless ``kwargs`` say otherwise."""
    kwargs = {"prompt": ["a red kite", "a blue kite"], "n": 2, **kwargs}
    return XaiGenerateImagesOperator(task_id="generate", output_uri=output_uri, deferrable=True, **kwargs)


def kites(count: int) -> list[str]:
    return [f"kite {index}" for index in range(count)]


def test_a_trigger_run_twice_bills_once_and_lists_each_image_once(
    emulator: XaiEmulator, output_uri: str, out: Path
) -> None:
    ctx = context()
    op = operator(output_uri)
    trigger = deferred_trigger(op, ctx)
    _, kwargs = trigger.serialize()
    first = asyncio.run(first_event(trigger))
    again = asyncio.run(first_event(type(trigger)(**kwargs)))  # the triggerer restarted: the same row runs again
    assert first["status"] == again["status"] == "success"
    assert again["requests"] == 0
    assert emulator.images_billed == 4
    assert generation_posts(emulator) == 2
    uris = op.execute_complete(ctx, again)
    manifest = manifest_of(ctx)
    slots = [(image["prompt_index"], image["image_index"]) for image in manifest["images"]]
    assert sorted(slots) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(uris) == len(set(uris)) == 4
    assert len(images_in(out)) == 4


def test_a_trigger_killed_half_way_is_resumed_by_its_second_run(
    emulator: XaiEmulator, output_uri: str, out: Path
) -> None:
    emulator.configure(latency=0.4)
    op = operator(output_uri, prompt=kites(6), n=1, max_concurrency=2)
    ctx = context()
    trigger = deferred_trigger(op, ctx)
    _, kwargs = trigger.serialize()

    async def interrupted() -> None:
        task = asyncio.create_task(first_event(trigger))
        async with asyncio.timeout(60):
            while not images_in(out):  # killed once it has stored its first image
                await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    event = asyncio.run(first_event(type(trigger)(**kwargs)))
    assert event["status"] == "success"
    assert 0 < event["requests"] < 6  # what the first run stored is not asked for again
    time.sleep(0.5)
    assert emulator.images_billed <= 6 + 2  # at most the two requests in flight at the cancel are paid again
    assert len(op.execute_complete(ctx, event)) == 6


def test_a_cancelled_trigger_sends_no_further_requests_and_fires_no_event(
    emulator: XaiEmulator, output_uri: str
) -> None:
    emulator.configure(latency=0.6)
    op = operator(output_uri, prompt=kites(8), n=1, max_concurrency=2)
    trigger = deferred_trigger(op, context())
    events: list[Any] = []

    async def run_then_cancel() -> None:
        async def collect() -> None:
            async for event in trigger.run():
                events.append(event)

        task = asyncio.create_task(collect())
        async with asyncio.timeout(60):
            while not emulator.backend.generations_in_flight():  # cancelled once its first request is served
                await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_then_cancel())
    time.sleep(1.0)  # the server finishes (and logs) what was in flight
    sent = generation_posts(emulator)
    assert 1 <= sent <= 2
    time.sleep(1.5)
    assert generation_posts(emulator) == sent
    assert events == []


def test_the_worker_raises_the_typed_error_the_trigger_met(emulator: XaiEmulator, output_uri: str) -> None:
    ctx = context()
    op = operator(output_uri)
    trigger = deferred_trigger(op, ctx)
    emulator.backend.api_key = "xai-rotated-key-000000000000"  # the key is revoked while the task is deferred
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "error"
    assert event["error_type"] == "XaiAuthError"
    with pytest.raises(AirflowFailException) as raised:
        op.execute_complete(ctx, event)
    assert isinstance(raised.value.__cause__, XaiAuthError)
    assert generation_posts(emulator) == 0


def test_an_edit_whose_local_source_is_gone_after_deferral_still_runs_its_plan(
    emulator: XaiEmulator, output_uri: str, tmp_path: Path
) -> None:
    source = jpeg_file(tmp_path / "worker-only" / "photo.jpg")
    ctx = context()
    op = operator(output_uri, prompt=["add a hat", "add a scarf"], n=1, source_images=[f"file://{source}"])
    trigger = deferred_trigger(op, ctx)
    source.unlink()  # the triggerer (and the worker finishing the task) no longer see the worker's file

    event = asyncio.run(first_event(trigger))

    assert event["status"] == "success", event
    assert event["requests"] == 2
    edits = [record for record in emulator.requests_log if record.path == "/v1/images/edits"]
    assert len(edits) == 2
    uris = op.execute_complete(ctx, event)  # fingerprints come from the plan: the source is not read again
    assert len(uris) == 2
    assert emulator.images_billed == 2


def previous_version_kwargs(plan: GenerationPlan, folder: str, source_images: list[str]) -> dict[str, Any]:
    """What the previous version's operator serialized for ``plan``: every request body without its sources,
    fingerprints and prices by prompt index, every prompt, the source URIs."""
    requests = plan.requests.by_index
    return {
        "requests": {
            str(index): requests[index].model_dump(exclude={"source_images"}, exclude_none=True) for index in requests
        },
        "fingerprints": {str(index): value for index, value in enumerate(plan.requests.fingerprints)},
        "prices": {str(index): plan.price_usd_ticks for index in requests},
        "folder": folder,
        "prompts": plan.requests.prompts,
        "xai_conn_id": "xai_default",
        "source_images": source_images,
        "max_concurrency": plan.max_concurrency,
        "on_moderation": plan.on_moderation,
        "max_cost_usd": plan.max_cost_usd,
    }


def test_a_trigger_serialized_by_the_previous_version_runs_after_an_upgrade(
    emulator: XaiEmulator, output_uri: str, tmp_path: Path
) -> None:
    source = f"file://{jpeg_file(tmp_path / 'sources' / 'photo.jpg')}"
    ctx = context()
    op = operator(output_uri, source_images=[source], max_cost_usd=5.0)
    _, kwargs = deferred_trigger(op, ctx).serialize()
    plan = GenerationPlan.load(kwargs["plan_uri"], kwargs["plan_digest"])
    old = previous_version_kwargs(plan, kwargs["plan_uri"].rpartition("/")[0], [source])
    Path(kwargs["plan_uri"].removeprefix("file://")).unlink()  # the previous version wrote no plan

    trigger = XaiGenerateImagesTrigger(**json.loads(json.dumps(old)))
    assert trigger.serialize()[1] == old
    event = asyncio.run(first_event(trigger))

    assert (event["status"], event["requests"], event["plan_digest"]) == ("success", 2, None)
    assert emulator.images_billed == 4
    uris = op.execute_complete(ctx, event)  # no plan: the worker reads the sources again, as before
    assert len(uris) == 4
    assert len(manifest_of(ctx)["images"]) == 4
    assert {uri.rpartition("-")[2].partition(".")[0] for uri in uris} == set(plan.requests.fingerprints)
    # and an event of the previous version's trigger (no plan digest) is understood the same way
    old_event = {"status": "success", "requests": 0, "elapsed_seconds": 1.5}
    assert op.execute_complete(context(), old_event) == uris
    assert emulator.images_billed == 4
