"""Submitting a batch, in-process against the emulator: reconnecting retries (task_state_store, else the
deterministic name), a submission interrupted half-way, cancel on kill, and 10,000 requests kept to the
add-call size and pace limits.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from batch_support import (
    EXPIRED_MESSAGE,
    FakeStateStore,
    batches_created,
    calls,
    make_context,
)

from airflow_provider_xai_image.batching import CallPacer
from airflow_provider_xai_image.exceptions import XaiBadRequestError, XaiBatchFailedError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.operators.batch import BATCH_ID_STATE_KEY, XaiBatchGenerateImagesOperator
from airflow_provider_xai_image.testing import XaiEmulator

PROMPTS = [f"Catalogue photo of item {sku}: a tin robot, white background" for sku in range(30)]


def submit_operator(output_uri: str, prompts: list[str] = PROMPTS, **kwargs: Any) -> XaiBatchGenerateImagesOperator:
    """A new operator object each time: a retry runs in a new process."""
    kwargs.setdefault("wait_for_completion", False)
    return XaiBatchGenerateImagesOperator(task_id="submit", prompts=prompts, output_uri=output_uri, **kwargs)


def added_ids(emulator: XaiEmulator, batch_id: str) -> list[str]:
    """batch_request_ids of the add calls the emulator accepted, in order."""
    return [
        entry["batch_request_id"]
        for call in calls(emulator, "POST", f"/v1/batches/{batch_id}/requests")
        if call.status == 200
        for entry in call.json["batch_requests"]
    ]


# --------------------------------------------------------------------------- reconnecting retries


def test_retry_without_task_state_store_reconnects_by_deterministic_name(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str
) -> None:
    first = make_context("submit")
    batch_id = submit_operator(output_uri).execute(first)

    second = make_context("submit")  # the retry: same run, no task_state_store
    again = submit_operator(output_uri).execute(second)

    assert again == batch_id
    assert first["ti"].xcoms["batch_id"] == second["ti"].xcoms["batch_id"] == batch_id
    assert batches_created(emulator) == 1
    assert added_ids(emulator, batch_id) == [str(i) for i in range(len(PROMPTS))]  # nothing added twice
    assert len(calls(emulator, "GET", "/v1/batches")) == 2  # each try looked the name up
    [create] = calls(emulator, "POST", "/v1/batches")
    assert create.json["name"].startswith("airflow_batch_tests_submit_manual__2026-01-01T00_00_00_00_00-")
    assert emulator.backend.get_batch(batch_id)["state"]["num_requests"] == len(PROMPTS)

    # another run of the task is another batch (the run id is part of the name)
    other = submit_operator(output_uri).execute(make_context("submit", run_id="manual__2026-01-02T00:00:00+00:00"))
    assert other != batch_id
    assert batches_created(emulator) == 2


def test_retry_with_task_state_store_reconnects_by_id(hook: XaiHook, emulator: XaiEmulator, output_uri: str) -> None:
    store = FakeStateStore()
    batch_id = submit_operator(output_uri).execute(make_context("submit", state_store=store))
    assert store.data == {BATCH_ID_STATE_KEY: batch_id}
    looked_up = len(calls(emulator, "GET", "/v1/batches"))

    again = submit_operator(output_uri).execute(make_context("submit", state_store=store))

    assert again == batch_id
    assert batches_created(emulator) == 1
    assert len(calls(emulator, "GET", f"/v1/batches/{batch_id}")) == 1  # found by id ...
    assert len(calls(emulator, "GET", "/v1/batches")) == looked_up  # ... not by listing
    assert added_ids(emulator, batch_id) == [str(i) for i in range(len(PROMPTS))]


@pytest.mark.parametrize("with_state_store", [True, False], ids=["task_state_store", "by-name"])
def test_retry_does_not_reuse_a_batch_xai_expired(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, with_state_store: bool
) -> None:
    emulator.configure(batch_seconds=3600)
    store = FakeStateStore() if with_state_store else None
    batch_id = submit_operator(output_uri).execute(make_context("submit", state_store=store))
    emulator.expire_batch(batch_id, EXPIRED_MESSAGE)

    again = submit_operator(output_uri).execute(make_context("submit", state_store=store))

    assert again != batch_id
    assert batches_created(emulator) == 2
    assert emulator.backend.get_batch(again)["state"]["num_requests"] == len(PROMPTS)
    if store is not None:
        assert store.data == {BATCH_ID_STATE_KEY: again}


class FailingSecondAdd(CallPacer):
    """A pacer (called around each add call) that, once the first add call went through, makes the
    emulator answer the next call with a permanent 422: the submission dies half-way."""

    armed = True

    def __init__(self, emulator: XaiEmulator) -> None:
        super().__init__()
        self.emulator = emulator

    def record(self, now: float) -> None:
        super().record(now)
        if FailingSecondAdd.armed:
            FailingSecondAdd.armed = False
            self.emulator.configure(status_script=[422])


@pytest.mark.parametrize("with_state_store", [True, False], ids=["task_state_store", "by-name"])
def test_retry_after_an_interrupted_submission_adds_only_the_missing_requests(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, monkeypatch: pytest.MonkeyPatch, with_state_store: bool
) -> None:
    emulator.configure(batch_seconds=3600)
    original = XaiHook.add_batch_requests

    def small_calls(self: XaiHook, batch_id: str, requests_by_id: Any, **kwargs: Any) -> int:
        # 30 requests of ~190 bytes in calls of at most 2,000 bytes: 3 or more calls
        return original(self, batch_id, requests_by_id, pacer=FailingSecondAdd(emulator), max_bytes=2000)

    monkeypatch.setattr(XaiHook, "add_batch_requests", small_calls)
    monkeypatch.setattr(FailingSecondAdd, "armed", True)
    store = FakeStateStore() if with_state_store else None

    with pytest.raises(XaiBadRequestError, match=r"HTTP 422"):
        submit_operator(output_uri).execute(make_context("submit", state_store=store))
    [batch_id] = [b["batch_id"] for b in emulator.backend.list_batches(0, 10)[0]]
    added_first = emulator.backend.get_batch(batch_id)["state"]["num_requests"]
    assert 0 < added_first < len(PROMPTS)

    again = submit_operator(output_uri).execute(make_context("submit", state_store=store))

    assert again == batch_id
    assert batches_created(emulator) == 1
    state = emulator.backend.get_batch(batch_id)["state"]
    assert state["num_requests"] == state["num_pending"] == len(PROMPTS)
    assert added_ids(emulator, batch_id) == [str(i) for i in range(len(PROMPTS))]  # each exactly once, in order
    statuses = [call.status for call in calls(emulator, "POST", f"/v1/batches/{batch_id}/requests")]
    assert statuses.count(422) == 1
    assert 400 not in statuses  # no "Duplicate batch_request_id"
    assert len(statuses) >= 4


# --------------------------------------------------------------------------- cancel on kill


def test_on_kill_after_submit_cancels_the_batch(hook: XaiHook, emulator: XaiEmulator, output_uri: str) -> None:
    emulator.configure(batch_seconds=3600)
    operator = submit_operator(output_uri, PROMPTS[:4])
    operator.on_kill()  # nothing submitted yet: nothing to cancel
    assert emulator.requests_log == []
    batch_id = operator.execute(make_context("submit"))

    operator.on_kill()

    [cancel] = calls(emulator, "POST", f"/v1/batches/{batch_id}:cancel")
    assert cancel.status == 200
    batch = emulator.backend.get_batch(batch_id)
    assert batch["cancel_time"] is not None
    assert batch["state"] == {
        "num_requests": 4,
        "num_pending": 0,
        "num_success": 0,
        "num_error": 0,
        "num_cancelled": 4,
    }
    assert emulator.images_billed == 0


def test_killing_a_waiting_task_cancels_its_batch_and_fails_the_wait(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str
) -> None:
    emulator.configure(batch_seconds=3600)
    operator = submit_operator(output_uri, PROMPTS[:3], wait_for_completion=True, deferrable=False, poll_interval=0.1)
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            operator.execute(make_context("submit"))
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while operator.submitted_batch_id is None or not calls(
        emulator, "GET", f"/v1/batches/{operator.submitted_batch_id}"
    ):
        assert time.monotonic() < deadline, "the operator never started waiting"
        time.sleep(0.02)
    operator.on_kill()
    worker.join(10)

    assert not worker.is_alive()
    error = outcome["error"]
    assert isinstance(error, XaiBatchFailedError)
    assert str(error).endswith("3 cancelled, 0 pending of 3; cost so far $0.0000; cancelled: cancelled")
    batch = emulator.backend.get_batch(operator.submitted_batch_id)
    assert batch["cancel_time"] is not None
    assert batch["state"]["num_cancelled"] == 3
    assert len(calls(emulator, "POST", f"/v1/batches/{operator.submitted_batch_id}:cancel")) == 1


def test_killing_a_retry_while_it_adds_the_missing_requests_cancels_the_batch(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.configure(batch_seconds=3600)
    store = FakeStateStore()
    original = XaiHook.add_batch_requests

    def add_ten_then_die(self: XaiHook, batch_id: str, requests_by_id: Any, **kwargs: Any) -> int:
        original(self, batch_id, requests_by_id[:10], **kwargs)
        raise RuntimeError("the worker died")

    monkeypatch.setattr(XaiHook, "add_batch_requests", add_ten_then_die)
    with pytest.raises(RuntimeError, match="the worker died"):
        submit_operator(output_uri).execute(make_context("submit", state_store=store))
    batch_id = store.data[BATCH_ID_STATE_KEY]
    assert emulator.backend.get_batch(batch_id)["state"]["num_requests"] == 10

    retry = submit_operator(output_uri)

    def killed_while_adding(self: XaiHook, batch_id: str, requests_by_id: Any, **kwargs: Any) -> int:
        assert [request_id for request_id, _ in requests_by_id][:1] == ["10"]  # only the missing ones
        retry.on_kill()  # the task is killed (Airflow calls on_kill) while the retry adds the rest
        raise RuntimeError("killed")

    monkeypatch.setattr(XaiHook, "add_batch_requests", killed_while_adding)
    with pytest.raises(RuntimeError, match="killed"):
        retry.execute(make_context("submit", state_store=store))

    assert batches_created(emulator) == 1
    assert len(calls(emulator, "POST", f"/v1/batches/{batch_id}:cancel")) == 1, (
        "the reconnected batch was not cancelled"
    )
    assert emulator.backend.get_batch(batch_id)["state"]["num_cancelled"] == 10


# --------------------------------------------------------------------------- size and pace limits


def test_ten_thousand_requests_keep_to_the_size_and_pace_limits(hook: XaiHook, emulator: XaiEmulator) -> None:
    max_bytes, max_calls, window = 200_000, 5, 1.0
    emulator.configure(
        batch_seconds=3600,
        batch_add_max_bytes=max_bytes,
        batch_add_max_calls=max_calls,
        batch_add_window_seconds=window,
    )
    batch = hook.create_batch("ten-thousand")
    request = hook.build_request("a product shot, studio light, seamless white background", model="grok-imagine-image")
    pairs = [(str(i), request.model_copy(update={"prompt": f"{i}: {request.prompt}"})) for i in range(10_000)]

    made = hook.add_batch_requests(batch.batch_id, pairs, pacer=CallPacer(max_calls, window), max_bytes=max_bytes)

    adds = calls(emulator, "POST", f"/v1/batches/{batch.batch_id}/requests")
    assert made == len(adds) >= 2 * max_calls + 1  # enough calls to need pacing across windows
    assert [call.status for call in adds] == [200] * len(adds)  # no 413, no 429
    assert all(call.body_size <= max_bytes for call in adds)
    times = [call.time for call in adds]
    # Never more than max_calls in any window: call i+max_calls arrives a window after call i.
    assert all(later - earlier >= window * 0.95 for earlier, later in zip(times, times[max_calls:], strict=False))
    state = hook.get_batch(batch.batch_id).state
    assert (state.num_requests, state.num_pending) == (10_000, 10_000)
    assert emulator.stats()["batches_created"] == 1
