"""How the sensor judges a batch, in-process against the emulator: a batch past its expire_time, and
max_failed_fraction taken exactly (a share of 0.58 of 50 requests allows 29 failures, not 28).
"""

from __future__ import annotations

import time

import pytest
from batch_support import make_context

from airflow_provider_xai_image.batch_state import judge
from airflow_provider_xai_image.exceptions import XaiBatchFailedError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.models import Batch, BatchState
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, XaiEmulator


def submit(hook: XaiHook, prompts: list[str]) -> str:
    batch = hook.create_batch("judged")
    hook.add_batch_requests(batch.batch_id, [(str(i), hook.build_request(p)) for i, p in enumerate(prompts)])
    return batch.batch_id


def test_sensor_fails_on_a_batch_past_its_expire_time(
    hook: XaiHook, emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch xAI let run out without a cancel message: still pending after its expire_time.
    monkeypatch.setattr("airflow_provider_xai_image.testing.backend.BATCH_LIFETIME_SECONDS", 0.2)
    emulator.configure(batch_seconds=3600)
    batch_id = submit(hook, ["a", "b"])
    sensor = XaiBatchSensor(task_id="wait", batch_id=batch_id, poke_interval=0.1)
    assert sensor.poke(make_context("wait")).is_done is False
    time.sleep(0.3)

    with pytest.raises(
        XaiBatchFailedError, match=r"0 succeeded, 0 failed, 0 cancelled, 2 pending of 2; .*; expired at 20"
    ):
        sensor.poke(make_context("wait"))


def test_sensor_fails_on_a_cancelled_batch(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_seconds=3600)
    batch_id = submit(hook, ["a", "b"])
    hook.cancel_batch(batch_id)

    with pytest.raises(XaiBatchFailedError) as failure:
        XaiBatchSensor(task_id="wait", batch_id=batch_id).poke(make_context("wait"))

    assert str(failure.value) == (
        f"batch {batch_id}: 0 succeeded, 0 failed, 2 cancelled, 0 pending of 2; cost so far $0.0000; "
        "cancelled: cancelled"
    )


@pytest.mark.parametrize(
    ("requests", "fraction"),
    [(50, 0.58), (100, 0.29), (90, 0.7), (10, 0.3)],
)
def test_a_share_of_failures_equal_to_max_failed_fraction_is_allowed(
    hook: XaiHook, emulator: XaiEmulator, requests: int, fraction: float
) -> None:
    failures = round(requests * fraction)  # exactly the allowed share, e.g. 29 of 50 for 0.58
    emulator.configure(batch_seconds=0)
    batch_id = submit(hook, [f"p{i}" + (f" {BATCH_FAILURE_MARKER}" if i < failures else "") for i in range(requests)])
    sensor = XaiBatchSensor(task_id="wait", batch_id=batch_id, max_failed_fraction=fraction)

    done = sensor.poke(make_context("wait"))

    assert done.is_done is True
    assert done.xcom_value["state"]["num_error"] == failures
    # one more failure than the share is too many
    over = Batch(
        batch_id="b",
        state=BatchState(num_requests=requests, num_success=requests - failures - 1, num_error=failures + 1),
    )
    outcome = judge(over, fraction)
    assert outcome.status == "failed"
    assert outcome.message.endswith(
        f"{failures + 1} failed requests, over max_failed_fraction={fraction} ({failures} allowed)"
    )
