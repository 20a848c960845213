"""XaiBatchTrigger and XaiGenerateImagesTrigger against the emulator: serialize/rebuild round trip, one
event of the documented shape from run(), the monotonic timeout, and no API key anywhere they write.

``airflow dags test`` runs a trigger inline and does not enforce its timeout, so the timeout is tested
here, directly, together with what the sensor and the operator make of a "timeout" event.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.serde import deserialize, serialize
from airflow.triggers.base import BaseTrigger, TriggerEvent
from batch_support import EXPIRED_MESSAGE, RUN_ID, make_context, no_key_in

from airflow_provider_xai_image.exceptions import XaiBatchFailedError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.models import Batch
from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor
from airflow_provider_xai_image.storage import RequestRecord, task_output_path
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, MODERATION_MARKER, XaiEmulator
from airflow_provider_xai_image.triggers.batch import XaiBatchTrigger
from airflow_provider_xai_image.triggers.generate import XaiGenerateImagesTrigger

BATCH_EVENT_KEYS = {"status", "batch_id", "message", "batch"}


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


def submit(hook: XaiHook, prompts: list[str], name: str = "trigger-test") -> str:
    batch = hook.create_batch(name)
    hook.add_batch_requests(batch.batch_id, [(str(i), hook.build_request(p)) for i, p in enumerate(prompts)])
    return batch.batch_id


def batch_gets(emulator: XaiEmulator, batch_id: str) -> int:
    return len([r for r in emulator.requests_log if r.method == "GET" and r.path == f"/v1/batches/{batch_id}"])


# --------------------------------------------------------------------------- XaiBatchTrigger


def test_batch_trigger_serialize_round_trip() -> None:
    trigger = XaiBatchTrigger(
        batch_id="batch_123", xai_conn_id="xai_other", poll_interval=2.5, timeout=90.0, max_failed_fraction=0.25
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_xai_image.triggers.batch.XaiBatchTrigger"
    assert kwargs == {
        "batch_id": "batch_123",
        "xai_conn_id": "xai_other",
        "poll_interval": 2.5,
        "timeout": 90.0,
        "max_failed_fraction": 0.25,
    }
    again = rebuilt(trigger)
    assert type(again) is XaiBatchTrigger
    assert again.serialize() == (classpath, kwargs)
    # timeout=None (wait forever) survives the trip too
    forever = XaiBatchTrigger(batch_id="batch_123")
    assert rebuilt(forever).serialize() == forever.serialize()
    assert forever.serialize()[1]["timeout"] is None


async def test_batch_trigger_run_polls_until_done_and_yields_one_success_event(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(batch_seconds=0.6)
    batch_id = submit(hook, ["a red kite", "a blue kite", "a green kite"])
    trigger = rebuilt(XaiBatchTrigger(batch_id=batch_id, poll_interval=0.1, timeout=30))
    assert trigger.serialize()[1]["batch_id"] == batch_id

    [event] = await all_events(trigger)

    assert set(event) == BATCH_EVENT_KEYS
    assert event["status"] == "success"
    assert event["batch_id"] == batch_id
    assert event["message"].startswith(
        f"batch {batch_id}: 3 succeeded, 0 failed, 0 cancelled, 0 pending of 3; cost so far $0.03"
    )
    batch = Batch.model_validate(event["batch"])
    assert (batch.batch_id, batch.state.num_success, batch.state.num_pending) == (batch_id, 3, 0)
    assert batch.cost_usd_ticks == emulator.cost_usd_ticks > 0
    assert batch_gets(emulator, batch_id) >= 2  # it polled while the requests were pending
    assert json.loads(json.dumps(event)) == event  # an event is JSON
    no_key_in(emulator.api_key, trigger.serialize(), event)


@pytest.mark.parametrize(
    ("fraction", "status"),
    [(0.5, "success"), (0.2, "error")],
    ids=["within-max-failed-fraction", "over-max-failed-fraction"],
)
async def test_batch_trigger_judges_failed_requests_by_max_failed_fraction(
    hook: XaiHook, emulator: XaiEmulator, fraction: float, status: str
) -> None:
    emulator.configure(batch_seconds=0.2)
    prompts = [f"kite {i}" + (f" {BATCH_FAILURE_MARKER}" if i < 2 else "") for i in range(5)]
    batch_id = submit(hook, prompts)

    [event] = await all_events(XaiBatchTrigger(batch_id=batch_id, poll_interval=0.1, max_failed_fraction=fraction))

    assert set(event) == BATCH_EVENT_KEYS
    assert event["status"] == status
    assert "3 succeeded, 2 failed" in event["message"]
    if status == "error":
        assert event["message"].endswith("2 failed requests, over max_failed_fraction=0.2 (1 allowed)")
        with pytest.raises(XaiBatchFailedError, match=r"over max_failed_fraction=0\.2"):
            XaiBatchSensor(task_id="wait", batch_id=batch_id).execute_complete(make_context("wait"), event)


async def test_batch_trigger_reports_a_batch_expired_by_xai_while_it_waits(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(batch_seconds=3600)
    batch_id = submit(hook, ["a slow kite", "another slow kite"])
    asyncio.get_running_loop().call_later(0.3, emulator.expire_batch, batch_id, EXPIRED_MESSAGE)

    [event] = await all_events(XaiBatchTrigger(batch_id=batch_id, poll_interval=0.1, timeout=30))

    assert event["status"] == "error"
    assert event["message"].endswith(f"cancelled: {EXPIRED_MESSAGE}")
    assert "2 cancelled, 0 pending of 2" in event["message"]
    assert event["batch"]["cancel_by_xai_message"] == EXPIRED_MESSAGE
    assert batch_gets(emulator, batch_id) >= 2
    with pytest.raises(XaiBatchFailedError, match=EXPIRED_MESSAGE):
        XaiBatchSensor(task_id="wait", batch_id=batch_id).execute_complete(make_context("wait"), event)


async def test_batch_trigger_reports_an_api_error_as_an_error_event(hook: XaiHook, emulator: XaiEmulator) -> None:
    [event] = await all_events(XaiBatchTrigger(batch_id="batch_does_not_exist", poll_interval=0.1))

    assert set(event) == {"status", "batch_id", "message"}
    assert (event["status"], event["batch_id"]) == ("error", "batch_does_not_exist")
    assert event["message"].startswith("xAI GET /batches/batch_does_not_exist failed (HTTP 404): ")
    assert event["message"].endswith("Batch batch_does_not_exist not found.")


async def test_batch_trigger_times_out_on_the_monotonic_clock(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_seconds=3600)
    batch_id = submit(hook, ["a kite that never lands"])
    trigger = rebuilt(XaiBatchTrigger(batch_id=batch_id, poll_interval=0.1, timeout=0.35))

    started = time.monotonic()
    [event] = await all_events(trigger)
    elapsed = time.monotonic() - started

    assert 0.35 <= elapsed < 5
    assert event == {
        "status": "timeout",
        "batch_id": batch_id,
        "message": f"batch {batch_id}: 0 succeeded, 0 failed, 0 cancelled, 1 pending of 1; cost so far $0.0000; "
        "still pending after 0.35 s",
    }
    assert batch_gets(emulator, batch_id) >= 2

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
        task_id="wait", batch_id="batch_42", deferrable=True, poke_interval=7, timeout=600, max_failed_fraction=0.1
    )

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context("wait"))

    assert deferred.value.method_name == "execute_complete"
    trigger = deferred.value.trigger
    assert trigger.serialize() == (
        "airflow_provider_xai_image.triggers.batch.XaiBatchTrigger",
        {
            "batch_id": "batch_42",
            "xai_conn_id": "xai_default",
            "poll_interval": 7,
            "timeout": 600,
            "max_failed_fraction": 0.1,
        },
    )
    assert emulator.requests_log == []  # deferring sends nothing


def test_deferring_operator_submits_then_defers_without_the_key(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str
) -> None:
    operator = XaiBatchGenerateImagesOperator(
        task_id="gen", prompts=["one", "two"], output_uri=output_uri, deferrable=True, poll_interval=3, timeout=120
    )
    context = make_context("gen")

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)

    batch_id = context["ti"].xcoms["batch_id"]
    classpath, kwargs = deferred.value.trigger.serialize()
    assert kwargs == {
        "batch_id": batch_id,
        "xai_conn_id": "xai_default",
        "poll_interval": 3,
        "timeout": 120.0,
        "max_failed_fraction": 0.0,
    }
    assert emulator.backend.get_batch(batch_id)["state"]["num_requests"] == 2
    no_key_in(emulator.api_key, classpath, kwargs, serialize(kwargs), context["ti"].xcoms)


# --------------------------------------------------------------------------- XaiGenerateImagesTrigger


def generate_trigger(hook: XaiHook, output_uri: str, prompts: dict[int, tuple[str, int]], **kwargs: Any):
    folder = task_output_path(output_uri, RUN_ID, "generate", -1)
    requests = {
        index: hook.build_request(prompt, n=n).model_dump(exclude={"source_images"}, exclude_none=True)
        for index, (prompt, n) in prompts.items()
    }
    return XaiGenerateImagesTrigger(requests=requests, folder=str(folder), **kwargs), folder


def test_generate_trigger_serialize_round_trip(hook: XaiHook, output_uri: str) -> None:
    trigger, folder = generate_trigger(
        hook,
        output_uri,
        {0: ("a lighthouse", 1), 3: ("a harbour", 2)},
        max_concurrency=2,
        on_moderation="skip",
        max_cost_usd=1.5,
        spent_usd_ticks=10,
        estimate_usd_ticks=200_000_000,
    )

    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_xai_image.triggers.generate.XaiGenerateImagesTrigger"
    assert kwargs["requests"] == {
        "0": {"prompt": "a lighthouse", "model": "grok-imagine-image-quality", "n": 1, "response_format": "url"},
        "3": {"prompt": "a harbour", "model": "grok-imagine-image-quality", "n": 2, "response_format": "url"},
    }
    assert kwargs["folder"] == str(folder)
    assert kwargs["folder"].startswith("s3://aws_moto@")
    again = rebuilt(trigger)
    assert type(again) is XaiGenerateImagesTrigger
    assert again.serialize() == (classpath, kwargs)
    assert again.requests.keys() == {0, 3}  # int prompt indexes again after the JSON trip
    no_key_in(hook.settings.api_key.get_secret_value(), kwargs)


async def test_generate_trigger_run_stores_images_and_yields_one_event(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    trigger, folder = generate_trigger(hook, output_uri, {0: ("a lighthouse", 1), 1: ("a harbour", 2)})

    [event] = await all_events(rebuilt(trigger))

    assert set(event) == {"status", "requests", "elapsed_seconds"}
    assert event["status"] == "success"
    assert event["requests"] == 2
    assert 0 < event["elapsed_seconds"] < 60
    prefix = f"images/{folder.parent.name}/generate/"
    [records_key, *image_keys] = moto_s3.keys(s3_bucket)
    assert re.fullmatch(rf"{prefix}_records/p00000-[0-9a-f]{{12}}\.json", records_key)
    assert image_keys == [f"{prefix}p00000-i00.jpg", f"{prefix}p00001-i00.jpg", f"{prefix}p00001-i01.jpg"]
    records = {item["prompt_index"]: item for item in json.loads(moto_s3.get_bytes(s3_bucket, records_key))}
    record = RequestRecord.model_validate(records[1])
    assert (record.prompt, len(record.images), record.error) == ("a harbour", 2, None)
    assert moto_s3.get_bytes(s3_bucket, f"{prefix}p00001-i01.jpg")[:3] == b"\xff\xd8\xff"
    assert emulator.images_billed == 3
    no_key_in(emulator.api_key, trigger.serialize(), event)


async def test_generate_trigger_yields_one_error_event(hook: XaiHook, emulator: XaiEmulator, output_uri: str) -> None:
    trigger, _ = generate_trigger(hook, output_uri, {0: (f"a storm {MODERATION_MARKER}", 1)}, on_moderation="fail")

    [event] = await all_events(rebuilt(trigger))

    assert event["status"] == "error"
    assert set(event) == {"status", "message"}
    assert event["message"].startswith(
        "XaiContentFilteredError: xAI's moderation filtered images of prompt index(es) [0]"
    )
    no_key_in(emulator.api_key, event)
