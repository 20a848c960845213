"""How the sensor judges a batch job (``api.batches.judge``, whose rule is tested in
``tests/unit/api/test_batches.py``), in-process against the emulator: a batch past its expire_time, a
cancelled one, a batch still validating its input file, and max_failed_fraction taken exactly (0.58 of
50 allows 29).
"""

from __future__ import annotations

import time

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from batch_support import make_context, submit_batch, wait_until_counted

from airflow_provider_xai_image.api.batches import Batch, BatchState, judge
from airflow_provider_xai_image.exceptions import XaiBatchFailedError, XaiBatchRefusedError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, XaiEmulator


def test_sensor_fails_on_a_batch_past_its_expire_time(
    hook: XaiHook, emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch xAI let run out without a cancel message: still pending after its (RFC 3339) expire_time.
    monkeypatch.setattr("airflow_provider_xai_image.testing.backend.BATCH_LIFETIME_SECONDS", 0.5)
    emulator.configure(batch_seconds=3600, batch_validation_seconds=0, expire_time_format="rfc3339")
    batch_id = submit_batch(hook, ["a", "b"])
    sensor = XaiBatchSensor(task_id="wait", batch_id=batch_id, poke_interval=0.1)
    assert sensor.poke(make_context("wait")).is_done is False
    time.sleep(0.6)

    with pytest.raises(
        XaiBatchFailedError, match=r"^batch \S+: 0 succeeded, 0 failed, 0 cancelled, 2 pending of 2; expired at 20"
    ) as failure:
        sensor.poke(make_context("wait"))

    assert not isinstance(failure.value, XaiBatchRefusedError)  # not refused: a retry may try again


def test_sensor_fails_without_retry_on_a_cancelled_batch(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_seconds=3600)
    batch_id = submit_batch(hook, ["a", "b"])
    wait_until_counted(emulator, batch_id)
    cancelled = hook.cancel_batch(batch_id)

    with pytest.raises(AirflowFailException) as failure:
        XaiBatchSensor(task_id="wait", batch_id=batch_id).poke(make_context("wait"))

    assert isinstance(failure.value.__cause__, XaiBatchRefusedError)
    assert str(failure.value) == (
        f"XaiBatchRefusedError: batch {batch_id}: 0 succeeded, 0 failed, 2 cancelled, 0 pending of 2; "
        f"cancelled at {cancelled.cancel_time}"
    )


def test_sensor_keeps_waiting_while_xai_validates_the_input_file(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_validation_seconds=0.6, batch_seconds=0.2)
    batch_id = submit_batch(hook, ["a", "b", "c"])
    sensor = XaiBatchSensor(task_id="wait", batch_id=batch_id, poke_interval=0.1)

    first = sensor.poke(make_context("wait"))
    assert emulator.backend.get_batch(batch_id)["state"]["num_requests"] == 0  # it was still validating
    deadline = time.monotonic() + 10
    pokes = [first]
    while not pokes[-1].is_done:
        assert time.monotonic() < deadline
        time.sleep(0.1)
        pokes.append(sensor.poke(make_context("wait")))

    assert first.is_done is False
    assert first.xcom_value is None
    assert len(pokes) >= 4  # validation (0.6 s) and the requests (0.2 s) were waited for
    [final] = pokes[-1].xcom_value
    assert final["batch_id"] == batch_id
    assert final["state"] == {
        "num_requests": 3,
        "num_pending": 0,
        "num_success": 3,
        "num_error": 0,
        "num_cancelled": 0,
    }


@pytest.mark.parametrize(
    ("requests", "fraction"),
    [(50, 0.58), (100, 0.29), (90, 0.7), (10, 0.3)],
)
def test_a_share_of_failures_equal_to_max_failed_fraction_is_allowed(
    hook: XaiHook, emulator: XaiEmulator, requests: int, fraction: float
) -> None:
    failures = round(requests * fraction)  # exactly the allowed share, e.g. 29 of 50 for 0.58
    emulator.configure(batch_seconds=0, batch_validation_seconds=0)
    batch_id = submit_batch(
        hook, [f"p{i}" + (f" {BATCH_FAILURE_MARKER}" if i < failures else "") for i in range(requests)]
    )
    sensor = XaiBatchSensor(task_id="wait", batch_id=batch_id, max_failed_fraction=fraction)

    outcome = sensor.poke(make_context("wait"))

    assert outcome.is_done is True
    [final] = outcome.xcom_value
    assert (final["state"]["num_error"], final["state"]["num_requests"]) == (failures, requests)
    # one more failure than the share is too many
    over = Batch(
        batch_id="b",
        expire_time="2026-03-11",
        state=BatchState(num_requests=requests, num_success=requests - failures - 1, num_error=failures + 1),
    )
    verdict = judge([over], fraction)
    assert verdict.status == "failed"
    assert verdict.message.endswith(
        f"{failures + 1} failed requests, over max_failed_fraction={fraction} ({failures} allowed)"
    )
