"""XaiBatchTrigger and XaiGenerateImagesTrigger against the emulator: serialize/rebuild round trip, one
event of the documented shape from run(), waiting through the validation of the input file, the
monotonic timeout, and no API key anywhere they write.

``airflow dags test`` runs a trigger inline and does not enforce its timeout, so the timeout is tested
here, directly, together with what the sensor and the operator make of its ``XaiBatchTimeoutError`` event.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import re
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.serde import deserialize, serialize
from airflow.triggers.base import BaseTrigger, TriggerEvent
from batch_support import (
    EXPIRED_MESSAGE,
    JPEG_MAGIC,
    RUN_ID,
    calls,
    make_context,
    no_key_in,
    submit_batch,
    wait_until_counted,
    wait_until_done,
)

from airflow_provider_xai_image.api.batches import Batch
from airflow_provider_xai_image.engine.plan import GenerationPlan, PlannedRequests
from airflow_provider_xai_image.exceptions import XaiBadRequestError, XaiBatchFailedError, XaiBatchRefusedError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.ledger.records import RequestRecord, batch_fingerprint, request_fingerprint
from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor
from airflow_provider_xai_image.storage.layout import task_output_path
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, MODERATION_MARKER, XaiEmulator
from airflow_provider_xai_image.triggers.batch import XaiBatchTrigger
from airflow_provider_xai_image.triggers.generate import XaiGenerateImagesTrigger

BATCH_EVENT_KEYS = {"status", "batch_ids", "message", "batches"}
ERROR_EVENT_KEYS = {"status", "error_type", "error"}
PRICE_TICKS = 500_000_000  # $0.05 per image (emulator's grok-imagine-image-quality)


def rebuilt(trigger: BaseTrigger) -> BaseTrigger:
    """The trigger as the triggerer rebuilds it: classpath + kwargs, through Airflow's serde and JSON."""
    classpath, kwargs = trigger.serialize()
    wire = json.loads(json.dumps(serialize(kwargs)))
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**deserialize(wire))


async def all_events(trigger: BaseTrigger) -> list[dict[str, Any]]:
    events = [event async for event in trigger.run()]
    assert all(isinstance(event, TriggerEvent) for event in events)
    return [event.payload for event in events]


def batch_gets(emulator: XaiEmulator, batch_id: str) -> list:
    return calls(emulator, "GET", f"/v1/batches/{batch_id}")


# --------------------------------------------------------------------------- XaiBatchTrigger


def test_batch_trigger_serialize_round_trip() -> None:
    trigger = XaiBatchTrigger(
        batch_ids=["batch_1", "batch_2"],
        expected_requests=[10, 4],
        xai_conn_id="xai_other",
        poll_interval=2.5,
        timeout=90.0,
        max_failed_fraction=0.25,
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_xai_image.triggers.batch.XaiBatchTrigger"
    assert kwargs == {
        "batch_ids": ["batch_1", "batch_2"],
        "expected_requests": [10, 4],
        "xai_conn_id": "xai_other",
        "poll_interval": 2.5,
        "timeout": 90.0,
        "max_failed_fraction": 0.25,
    }
    again = rebuilt(trigger)
    assert type(again) is XaiBatchTrigger
    assert again.serialize() == (classpath, kwargs)
    # timeout=None (wait forever) and unknown counts survive the trip too
    forever = XaiBatchTrigger(batch_ids=["batch_1"])
    assert rebuilt(forever).serialize() == forever.serialize()
    assert (forever.serialize()[1]["timeout"], forever.serialize()[1]["expected_requests"]) == (None, None)


async def test_batch_trigger_polls_through_the_validation_until_done_and_yields_one_success_event(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(batch_validation_seconds=0.6, batch_seconds=0.3)
    batch_id = submit_batch(hook, ["a red kite", "a blue kite", "a green kite"])
    trigger = rebuilt(XaiBatchTrigger(batch_ids=[batch_id], expected_requests=[3], poll_interval=0.1, timeout=30))

    [event] = await all_events(trigger)

    assert set(event) == BATCH_EVENT_KEYS
    assert (event["status"], event["batch_ids"]) == ("success", [batch_id])
    assert event["message"] == f"batch {batch_id}: 3 succeeded, 0 failed, 0 cancelled, 0 pending of 3"
    [batch] = [Batch.model_validate(item) for item in event["batches"]]
    assert (batch.batch_id, batch.state.num_success, batch.state.num_pending) == (batch_id, 3, 0)
    # it polled while every counter was 0 (xAI validating the file) and while the requests were pending
    [create] = calls(emulator, "POST", "/v1/batches")
    polls = batch_gets(emulator, batch_id)
    assert len([poll for poll in polls if poll.time < create.time + 0.5]) >= 3
    assert len(polls) >= 5
    assert json.loads(json.dumps(event)) == event  # an event is JSON
    no_key_in(emulator.api_key, trigger.serialize(), event)


async def test_batch_trigger_waits_for_every_batch_of_a_job(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_seconds=0.1)
    first = submit_batch(hook, ["kite 0", "kite 1"], name="job-part1of2")
    wait_until_done(emulator, first)
    emulator.configure(batch_seconds=0.8)  # the second part is still running when the first is done
    second = submit_batch(hook, ["kite 2"], name="job-part2of2", first_index=2)
    trigger = XaiBatchTrigger(batch_ids=[first, second], expected_requests=[2, 1], poll_interval=0.1, timeout=30)

    [event] = await all_events(trigger)

    assert (event["status"], event["batch_ids"]) == ("success", [first, second])
    assert [batch["batch_id"] for batch in event["batches"]] == [first, second]
    assert event["message"] == (
        f"batch {first}: 2 succeeded, 0 failed, 0 cancelled, 0 pending of 2; "
        f"batch {second}: 1 succeeded, 0 failed, 0 cancelled, 0 pending of 1"
    )
    assert len(batch_gets(emulator, first)) >= 5  # the finished part was polled until the other was done


@pytest.mark.parametrize(
    ("fraction", "status"),
    [(0.4, "success"), (0.2, "error")],
    ids=["within-max-failed-fraction", "over-max-failed-fraction"],
)
async def test_batch_trigger_judges_failed_requests_by_max_failed_fraction(
    hook: XaiHook, emulator: XaiEmulator, fraction: float, status: str
) -> None:
    emulator.configure(batch_seconds=0.2)
    prompts = [f"kite {i}" + (f" {BATCH_FAILURE_MARKER}" if i < 2 else "") for i in range(5)]
    batch_id = submit_batch(hook, prompts)

    [event] = await all_events(XaiBatchTrigger(batch_ids=[batch_id], poll_interval=0.1, max_failed_fraction=fraction))

    assert event["status"] == status
    sensor = XaiBatchSensor(task_id="wait", batch_id=batch_id)
    if status == "success":
        assert set(event) == BATCH_EVENT_KEYS
        assert "3 succeeded, 2 failed" in event["message"]
        assert sensor.execute_complete(make_context("wait"), event) == event["batches"]
    else:
        assert set(event) == ERROR_EVENT_KEYS
        assert event["error_type"] == "XaiBatchFailedError"
        assert "3 succeeded, 2 failed" in event["error"]["message"]
        assert event["error"]["message"].endswith("2 failed requests, over max_failed_fraction=0.2 (1 allowed)")
        with pytest.raises(XaiBatchFailedError, match=r"over max_failed_fraction=0\.2") as failure:
            sensor.execute_complete(make_context("wait"), event)
        assert not isinstance(failure.value, XaiBatchRefusedError)  # too many failures: a retry may help


async def test_batch_trigger_reports_a_batch_xai_expired_while_it_waits(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_seconds=3600)
    batch_id = submit_batch(hook, ["a slow kite", "another slow kite"])
    wait_until_counted(emulator, batch_id)
    asyncio.get_running_loop().call_later(0.3, emulator.expire_batch, batch_id, EXPIRED_MESSAGE)

    [event] = await all_events(XaiBatchTrigger(batch_ids=[batch_id], poll_interval=0.1, timeout=30))

    assert set(event) == ERROR_EVENT_KEYS
    assert (event["status"], event["error_type"]) == ("error", "XaiBatchRefusedError")
    assert event["error"] == {
        "message": f"batch {batch_id}: 0 succeeded, 0 failed, 2 cancelled, 0 pending of 2; "
        f"xAI cancelled it: {EXPIRED_MESSAGE}"
    }
    assert len(batch_gets(emulator, batch_id)) >= 2
    # the sensor and the operator fail without retries, with xAI's message
    operator = XaiBatchGenerateImagesOperator(task_id="gen", prompts=["x"], output_uri="file:///tmp/unused/")
    for task in (XaiBatchSensor(task_id="wait", batch_id=batch_id), operator):
        with pytest.raises(AirflowFailException, match=f"XaiBatchRefusedError: .*{EXPIRED_MESSAGE}$") as failure:
            task.execute_complete(make_context(task.task_id), event)
        assert isinstance(failure.value.__cause__, XaiBatchRefusedError)


async def test_batch_trigger_reports_an_api_error_as_an_error_event(hook: XaiHook, emulator: XaiEmulator) -> None:
    [event] = await all_events(XaiBatchTrigger(batch_ids=["batch_does_not_exist"], poll_interval=0.1))

    assert set(event) == ERROR_EVENT_KEYS
    assert (event["status"], event["error_type"]) == ("error", "XaiBadRequestError")
    assert event["error"] == {
        "method": "GET",
        "path": "batches/batch_does_not_exist",
        "status": 404,
        "detail": "Some requested entity was not found: Batch batch_does_not_exist not found.",
    }
    # the worker raises the typed error a poke would have raised: a missing batch fails without retries
    sensor = XaiBatchSensor(task_id="wait", batch_id="batch_does_not_exist")
    with pytest.raises(AirflowFailException) as failure:
        sensor.execute_complete(make_context("wait"), event)
    assert isinstance(failure.value.__cause__, XaiBadRequestError)
    assert str(failure.value.__cause__) == (
        "xAI GET /batches/batch_does_not_exist failed (HTTP 404): "
        "Some requested entity was not found: Batch batch_does_not_exist not found."
    )


async def test_batch_trigger_times_out_on_the_monotonic_clock(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_seconds=3600, batch_validation_seconds=0)
    batch_id = submit_batch(hook, ["a kite that never lands"])
    trigger = rebuilt(XaiBatchTrigger(batch_ids=[batch_id], poll_interval=0.1, timeout=0.35))

    started = time.monotonic()
    [event] = await all_events(trigger)
    elapsed = time.monotonic() - started

    assert 0.35 <= elapsed < 5
    assert event == {
        "status": "error",
        "error_type": "XaiBatchTimeoutError",
        "error": {
            "message": f"Timed out waiting for the batch: batch {batch_id}: 0 succeeded, 0 failed, 0 cancelled, "
            "1 pending of 1; still pending after 0.35 s"
        },
    }
    assert len(batch_gets(emulator, batch_id)) >= 2

    # the sensor turns it into a sensor timeout (not a plain failure) ...
    sensor = XaiBatchSensor(task_id="wait", batch_id=batch_id, deferrable=True, timeout=0.35)
    with pytest.raises(AirflowSensorTimeout, match=rf"Batch {batch_id} still pending: .*still pending after 0\.35 s"):
        sensor.execute_complete(make_context("wait"), event)
    # ... and the waiting operator into a batch failure naming the timeout
    operator = XaiBatchGenerateImagesOperator(task_id="gen", prompts=["x"], output_uri="file:///tmp/unused/")
    with pytest.raises(XaiBatchFailedError, match=r"Timed out waiting for the batch: .*still pending after 0\.35 s"):
        operator.execute_complete(make_context("gen"), event)


def test_deferring_sensor_hands_its_settings_to_the_trigger(hook: XaiHook, emulator: XaiEmulator) -> None:
    sensor = XaiBatchSensor(
        task_id="wait",
        batch_id="batch_42, batch_43",
        deferrable=True,
        poke_interval=7,
        timeout=600,
        max_failed_fraction=0.1,
    )

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context("wait"))

    assert deferred.value.method_name == "execute_complete"
    trigger = deferred.value.trigger
    assert trigger.serialize() == (
        "airflow_provider_xai_image.triggers.batch.XaiBatchTrigger",
        {
            "batch_ids": ["batch_42", "batch_43"],
            "expected_requests": None,
            "xai_conn_id": "xai_default",
            "poll_interval": 7,
            "timeout": 600,
            "max_failed_fraction": 0.1,
        },
    )
    assert emulator.requests_log == []  # deferring sends nothing


async def test_deferring_operator_submits_defers_without_the_key_and_stores_after_the_event(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    emulator.configure(batch_seconds=0.2)
    operator = XaiBatchGenerateImagesOperator(
        task_id="gen", prompts=["one", "two"], output_uri=output_uri, deferrable=True, poll_interval=0.1, timeout=120
    )
    context = make_context("gen")

    with pytest.raises(TaskDeferred) as deferred:
        await asyncio.to_thread(operator.execute, context)

    batch_id = context["ti"].xcoms["batch_id"]
    classpath, kwargs = deferred.value.trigger.serialize()
    assert kwargs == {
        "batch_ids": [batch_id],
        "expected_requests": [2],
        "xai_conn_id": "xai_default",
        "poll_interval": 0.1,
        "timeout": 120.0,
        "max_failed_fraction": 0.0,
    }
    no_key_in(emulator.api_key, classpath, kwargs, serialize(kwargs), context["ti"].xcoms)
    # the triggerer's event brings the task back to a worker, which stores the images
    [event] = await all_events(rebuilt(deferred.value.trigger))
    resumed = XaiBatchGenerateImagesOperator(task_id="gen", prompts=["one", "two"], output_uri=output_uri)

    uris = await asyncio.to_thread(resumed.execute_complete, context, event)

    fingerprint = batch_fingerprint([batch_id])
    assert [uri.rsplit("/", 1)[1] for uri in uris] == [f"p{i:05d}-i00-{fingerprint}.jpg" for i in range(2)]
    assert resumed.submitted_batch_ids == [batch_id]
    assert calls(emulator, "POST", "/v1/batches")[0].status == 200
    assert len(calls(emulator, "POST", "/v1/batches")) == 1
    for uri in uris:
        assert moto_s3.get_bytes(s3_bucket, uri.split(f"{s3_bucket}/", 1)[1])[:3] == JPEG_MAGIC


# --------------------------------------------------------------------------- XaiGenerateImagesTrigger


def planned_trigger(hook: XaiHook, output_uri: str, prompts: list[str], **limits: Any):
    """A trigger as the operator defers one: its plan written into the task's folder, its URI and digest kept."""
    folder = task_output_path(output_uri, RUN_ID, "generate", -1)
    requests = {index: hook.build_request(prompt, n=2) for index, prompt in enumerate(prompts)}
    plan = GenerationPlan(
        requests=PlannedRequests.of(requests, prompts), price_usd_ticks=PRICE_TICKS, on_moderation="skip", **limits
    )
    uri, digest = plan.save(folder)
    return XaiGenerateImagesTrigger(plan_uri=uri, plan_digest=digest), folder, plan


def test_generate_trigger_serializes_only_where_its_plan_is(hook: XaiHook, output_uri: str) -> None:
    trigger, folder, _ = planned_trigger(hook, output_uri, [f"kite {index}" for index in range(100)])

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_xai_image.triggers.generate.XaiGenerateImagesTrigger"
    digest = hashlib.sha256((folder / "plan.json").read_bytes()).hexdigest()
    assert kwargs == {"plan_uri": f"{folder}/plan.json", "plan_digest": digest, "xai_conn_id": "xai_default"}
    assert rebuilt(trigger).serialize() == (classpath, kwargs)


async def test_generate_trigger_runs_its_plan_from_s3_and_refuses_a_plan_changed_since(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    # s3fs is driven from a thread: inside the test's event loop it would start a loop of its own
    trigger, folder, plan = await asyncio.to_thread(
        planned_trigger, hook, output_uri, ["a lighthouse", "a harbour"], max_concurrency=1
    )

    [event] = await all_events(rebuilt(trigger))

    assert event == {
        "status": "success",
        "requests": 2,
        "elapsed_seconds": event["elapsed_seconds"],
        "plan_digest": trigger.plan_digest,
    }
    fingerprints = plan.requests.fingerprints
    prefix = f"images/{folder.parent.name}/generate/"
    assert [key for key in moto_s3.keys(s3_bucket) if key.endswith(".jpg")] == [
        f"{prefix}p{prompt:05d}-i{image:02d}-{fingerprints[prompt]}.jpg" for prompt in (0, 1) for image in (0, 1)
    ]
    assert emulator.images_billed == 4

    # the plan in storage is replaced by another (a third prompt): the trigger refuses it and sends nothing
    more = {**plan.requests.by_index, 2: plan.requests.template.model_copy(update={"prompt": "a third"})}
    changed = plan.model_copy(update={"requests": PlannedRequests.of(more, [*plan.requests.prompts, "a third"])})
    await asyncio.to_thread((folder / "plan.json").write_bytes, changed.model_dump_json().encode())
    [refused] = await all_events(rebuilt(trigger))
    assert (refused["status"], refused["error_type"]) == ("error", "XaiPlanError")
    assert "its sha256 differs" in refused["error"]["message"]
    assert emulator.images_billed == 4


def generate_trigger(hook: XaiHook, output_uri: str, prompts: dict[int, tuple[str, int]], **kwargs: Any):
    """A trigger as the previous version serialized it (requests, fingerprints, prices and prompts in its
    kwargs): still run after an upgrade."""
    folder = task_output_path(output_uri, RUN_ID, "generate", -1)
    requests = {index: hook.build_request(prompt, n=n) for index, (prompt, n) in prompts.items()}
    trigger = XaiGenerateImagesTrigger(
        requests={i: r.model_dump(exclude={"source_images"}, exclude_none=True) for i, r in requests.items()},
        fingerprints={index: request_fingerprint(request) for index, request in requests.items()},
        prices=dict.fromkeys(requests, PRICE_TICKS),
        prompts=[prompt for prompt, _ in prompts.values()],
        folder=str(folder),
        **kwargs,
    )
    return trigger, folder, {index: request_fingerprint(request) for index, request in requests.items()}


def test_generate_trigger_serialize_round_trip(hook: XaiHook, output_uri: str) -> None:
    trigger, folder, fingerprints = generate_trigger(
        hook,
        output_uri,
        {0: ("a lighthouse", 1), 3: ("a harbour", 2)},
        max_concurrency=2,
        on_moderation="skip",
        max_cost_usd=1.5,
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_xai_image.triggers.generate.XaiGenerateImagesTrigger"
    assert kwargs["requests"] == {
        "0": {"prompt": "a lighthouse", "model": "grok-imagine-image-quality", "n": 1, "response_format": "url"},
        "3": {"prompt": "a harbour", "model": "grok-imagine-image-quality", "n": 2, "response_format": "url"},
    }
    assert kwargs["fingerprints"] == {"0": fingerprints[0], "3": fingerprints[3]}
    assert kwargs["prices"] == {"0": PRICE_TICKS, "3": PRICE_TICKS}
    assert kwargs["folder"] == str(folder)
    assert kwargs["folder"].startswith("s3://aws_moto@")
    again = rebuilt(trigger)
    assert type(again) is XaiGenerateImagesTrigger
    assert again.serialize() == (classpath, kwargs)
    assert again.legacy is not None
    assert again.legacy.requests.keys() == again.legacy.fingerprints.keys() == {0, 3}  # int indexes after the trip
    no_key_in(hook.settings.api_key.get_secret_value(), kwargs)


async def test_generate_trigger_run_stores_images_yields_one_event_and_is_safe_to_run_twice(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    # the previous operator gave every prompt the same request but for its prompt (here n=2)
    trigger, folder, fingerprints = generate_trigger(hook, output_uri, {0: ("a lighthouse", 2), 1: ("a harbour", 2)})

    [event] = await all_events(rebuilt(trigger))

    assert set(event) == {"status", "requests", "elapsed_seconds", "plan_digest"}
    assert (event["status"], event["requests"], event["plan_digest"]) == ("success", 2, None)  # no plan written
    assert 0 < event["elapsed_seconds"] < 60
    prefix = f"images/{folder.parent.name}/generate/"
    [records_key, *image_keys] = moto_s3.keys(s3_bucket)
    assert re.fullmatch(rf"{prefix}_records/p00000-[0-9a-f]{{12}}\.json", records_key)
    assert image_keys == [
        f"{prefix}p00000-i00-{fingerprints[0]}.jpg",
        f"{prefix}p00000-i01-{fingerprints[0]}.jpg",
        f"{prefix}p00001-i00-{fingerprints[1]}.jpg",
        f"{prefix}p00001-i01-{fingerprints[1]}.jpg",
    ]
    records = {item["prompt_index"]: item for item in json.loads(moto_s3.get_bytes(s3_bucket, records_key))}
    record = RequestRecord.model_validate(records[1])
    assert (record.prompt, len(record.images), record.error, record.fingerprint) == (
        "a harbour",
        2,
        None,
        fingerprints[1],
    )
    assert moto_s3.get_bytes(s3_bucket, image_keys[-1])[:3] == JPEG_MAGIC
    assert emulator.images_billed == 4
    no_key_in(emulator.api_key, trigger.serialize(), event)

    # the triggerer runs it again (a restart): it resumes from the records and pays for nothing
    [second] = await all_events(rebuilt(trigger))
    assert (second["status"], second["requests"]) == ("success", 0)
    assert emulator.images_billed == 4
    assert [key for key in moto_s3.keys(s3_bucket) if key.endswith(".jpg")] == image_keys


async def test_generate_trigger_yields_one_typed_error_event(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str
) -> None:
    trigger, _, _ = generate_trigger(hook, output_uri, {0: (f"a storm {MODERATION_MARKER}", 1)}, on_moderation="fail")

    [event] = await all_events(rebuilt(trigger))

    assert set(event) == {"status", "error_type", "error"}
    assert (event["status"], event["error_type"]) == ("error", "XaiContentFilteredError")
    assert event["error"]["message"].startswith("xAI's moderation filtered images of prompt index(es) [0]")
    no_key_in(emulator.api_key, event)
