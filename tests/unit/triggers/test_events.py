"""``triggers.events``: one event format for both triggers, each error back as its type; the previous
version's events (fired before an upgrade) understood by the sensor and both operators."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout

from airflow_provider_xai_image.exceptions import (
    XaiAuthError,
    XaiBatchFailedError,
    XaiBatchRefusedError,
    XaiBatchTimeoutError,
    XaiContentFilteredError,
    XaiError,
    XaiPlanError,
    XaiPossiblyBilledError,
    XaiRateLimitError,
)
from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor
from airflow_provider_xai_image.triggers.events import error_event, event_result, success_event


def through_the_database(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the worker gets it: JSON."""
    return json.loads(json.dumps(event))


def test_a_success_event_carries_its_result() -> None:
    event = success_event(batch_ids=["batch_1"], message="done", batches=[{"batch_id": "batch_1"}])

    assert event == {
        "status": "success",
        "batch_ids": ["batch_1"],
        "message": "done",
        "batches": [{"batch_id": "batch_1"}],
    }
    assert event_result(through_the_database(event)) == {
        "batch_ids": ["batch_1"],
        "message": "done",
        "batches": [{"batch_id": "batch_1"}],
    }


@pytest.mark.parametrize(
    "error",
    [
        XaiAuthError("GET", "api-key", 401, "Incorrect API key"),
        XaiRateLimitError("POST", "images/generations", 429, "slow down", retry_after=2.0),
        XaiPossiblyBilledError("POST", "images/generations", 504, "gateway timeout"),
        XaiContentFilteredError("prompt index(es) [1]"),
        XaiBatchFailedError("batch_1: 2 failed requests"),
        XaiBatchRefusedError("batch_1: xAI cancelled it: bad input"),
        XaiBatchTimeoutError("Timed out waiting for the batch: batch_1 still pending"),
        XaiPlanError("The plan is not the one the worker wrote"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_error_event_raises_the_same_typed_error(error: XaiError) -> None:
    event = through_the_database(error_event(error))

    assert set(event) == {"status", "error_type", "error"}
    assert (event["status"], event["error_type"]) == ("error", type(error).__name__)
    with pytest.raises(type(error)) as raised:
        event_result(event)
    assert type(raised.value) is type(error)
    assert str(raised.value) == str(error)


def test_an_unknown_error_type_is_a_plain_provider_error() -> None:
    event = through_the_database(error_event(KeyError("boom")))

    with pytest.raises(XaiError, match=r"^KeyError: 'boom'$") as raised:
        event_result(event)
    assert type(raised.value) is XaiError


# --------------------------------------------------------------------------- the previous version's events


@pytest.mark.parametrize(
    ("status", "error_type", "message"),
    [
        ("error", XaiBatchFailedError, "batch_1: 2 failed requests"),
        ("refused", XaiBatchRefusedError, "batch_1: xAI cancelled it: bad input"),
        ("timeout", XaiBatchTimeoutError, "Timed out waiting for the batch: batch_1: 1 pending of 1"),
    ],
)
def test_an_old_batch_event_raises_the_typed_error_it_stood_for(
    status: str, error_type: type[XaiError], message: str
) -> None:
    old = {
        "status": status,
        "batch_ids": ["batch_1"],
        "message": message.removeprefix("Timed out waiting for the batch: "),
    }

    with pytest.raises(XaiBatchFailedError) as raised:
        event_result(old)

    assert type(raised.value) is error_type
    assert str(raised.value) == message


def test_old_events_reach_the_sensor_and_the_operators_as_before() -> None:
    sensor = XaiBatchSensor(task_id="wait", batch_id="batch_1")
    batch_operator = XaiBatchGenerateImagesOperator(task_id="gen", prompts=["x"], output_uri="file:///tmp/unused/")
    timeout = {"status": "timeout", "batch_ids": ["batch_1"], "message": "1 pending of 1; still pending after 60 s"}
    refused = {"status": "refused", "batch_ids": ["batch_1"], "message": "xAI cancelled it: bad input"}

    with pytest.raises(AirflowSensorTimeout, match=r"^Batch batch_1 still pending: .*still pending after 60 s$"):
        sensor.execute_complete({}, timeout)
    with pytest.raises(XaiBatchTimeoutError, match=r"^Timed out waiting for the batch: 1 pending of 1"):
        batch_operator.execute_complete({}, timeout)
    for task in (sensor, batch_operator):
        with pytest.raises(
            AirflowFailException, match=r"^XaiBatchRefusedError: xAI cancelled it: bad input$"
        ) as failed:
            task.execute_complete({}, refused)
        assert isinstance(failed.value.__cause__, XaiBatchRefusedError)

    old_generate_error = {
        "status": "error",
        "error_type": "XaiAuthError",
        "error": {"method": "GET", "path": "api-key", "status": 401, "detail": "Incorrect API key"},
    }
    generate = XaiGenerateImagesOperator(task_id="generate", prompt="x", output_uri="file:///tmp/unused/")
    with pytest.raises(AirflowFailException) as failed:
        generate.execute_complete({}, old_generate_error)
    assert isinstance(failed.value.__cause__, XaiAuthError)
    assert str(failed.value.__cause__) == "xAI GET /api-key failed (HTTP 401): Incorrect API key"
