"""XaiHook's batch API calls via the emulator: create, add (chunked and paced), get, results, cancel, list."""

from __future__ import annotations

import time

import pytest

from airflow_provider_xai_image.batching import CallPacer
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.models import BATCH_ADD_MAX_BYTES, BATCH_REQUEST_KIND, ImageRequest
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, XaiEmulator
from airflow_provider_xai_image.testing.records import RequestRecord


def add_calls(emulator: XaiEmulator, batch_id: str) -> list[RequestRecord]:
    return [r for r in emulator.requests_log if r.path == f"/v1/batches/{batch_id}/requests"]


def image_requests(hook: XaiHook, count: int, prompt_bytes: int = 40, fail: set[int] = frozenset()) -> list:
    """``(batch_request_id, ImageRequest)`` pairs with prompts of about ``prompt_bytes`` bytes."""
    pairs = []
    for index in range(count):
        prompt = f"picture {index} " + "x" * max(0, prompt_bytes - 12)
        if index in fail:
            prompt += f" {BATCH_FAILURE_MARKER}"
        pairs.append((f"req-{index}", hook.build_request(prompt, model="grok-imagine-image")))
    return pairs


def test_create_batch(hook: XaiHook, emulator: XaiEmulator) -> None:
    batch = hook.create_batch("nightly-renders")

    assert batch.batch_id.startswith("batch_")
    assert batch.name == "nightly-renders"
    assert batch.create_time is not None
    assert batch.state.num_requests == 0
    assert batch.is_done
    [sent] = emulator.requests_log
    assert (sent.method, sent.path, sent.json) == ("POST", "/v1/batches", {"name": "nightly-renders"})


def test_add_requests_in_one_call_and_get_batch_counts_them(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_seconds=3600)
    batch = hook.create_batch("small")
    pairs = image_requests(hook, 5)

    assert hook.add_batch_requests(batch.batch_id, pairs) == 1

    [call] = add_calls(emulator, batch.batch_id)
    assert call.status == 200
    entries = call.json["batch_requests"]
    assert [entry["batch_request_id"] for entry in entries] == [f"req-{i}" for i in range(5)]
    assert entries[0]["batch_request"] == {BATCH_REQUEST_KIND: pairs[0][1].body()}
    state = hook.get_batch(batch.batch_id)
    assert state.batch_id == batch.batch_id
    assert (state.state.num_requests, state.state.num_pending) == (5, 5)
    assert not state.is_done


def test_add_requests_is_split_into_calls_under_the_byte_limit_in_order(hook: XaiHook, emulator: XaiEmulator) -> None:
    limit = 4000
    emulator.configure(batch_add_max_bytes=limit, batch_seconds=3600)
    batch = hook.create_batch("chunked")
    pairs = image_requests(hook, 60, prompt_bytes=150)

    made = hook.add_batch_requests(batch.batch_id, pairs, max_bytes=limit)

    calls = add_calls(emulator, batch.batch_id)
    assert made == len(calls) >= 3
    assert all(call.status == 200 for call in calls)
    assert all(call.body_size <= limit for call in calls)
    sent_ids = [entry["batch_request_id"] for call in calls for entry in call.json["batch_requests"]]
    assert sent_ids == [request_id for request_id, _ in pairs]
    assert hook.get_batch(batch.batch_id).state.num_requests == 60


def test_add_calls_are_paced_to_the_rate_limit(hook: XaiHook, emulator: XaiEmulator) -> None:
    limit = 2000
    # Latency jitter (0-50 ms), as on any network: the server counts a call when it handles it, not when
    # the client sent it.
    emulator.configure(
        batch_add_max_bytes=limit,
        batch_add_max_calls=3,
        batch_add_window_seconds=1.0,
        batch_seconds=3600,
        latency=(0.0, 0.05),
    )
    batch = hook.create_batch("paced")
    pairs = image_requests(hook, 50, prompt_bytes=120)

    made = hook.add_batch_requests(batch.batch_id, pairs, pacer=CallPacer(3, 1.0), max_bytes=limit)

    calls = add_calls(emulator, batch.batch_id)
    assert [call.status for call in calls] == [200] * len(calls)  # no 429: the pacer kept to the limit
    assert made == len(calls) >= 7
    times = [call.time for call in calls]
    # Never more than 3 calls in a second: call i+3 comes about a window after call i.
    assert all(times[i + 3] - times[i] >= 0.95 for i in range(len(times) - 3))
    assert times[-1] - times[0] >= 2.0
    assert hook.get_batch(batch.batch_id).state.num_requests == 50


def test_ten_thousand_requests_over_25_mb_are_split_into_calls_under_the_real_limit(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(batch_seconds=3600)  # nothing completes: only the submission is measured
    batch = hook.create_batch("ten-thousand")
    filler = "a quiet harbour at dawn, " * 120  # ~3 KB per prompt
    request = ImageRequest.build(prompt=filler, model="grok-imagine-image")
    pairs = [(f"r{index:05d}", request.model_copy(update={"prompt": f"{index}: {filler}"})) for index in range(10_000)]

    made = hook.add_batch_requests(batch.batch_id, pairs)

    calls = add_calls(emulator, batch.batch_id)
    assert made == len(calls) >= 2
    assert sum(call.body_size for call in calls) > 25 * 1024 * 1024
    assert all(call.status == 200 and call.body_size <= BATCH_ADD_MAX_BYTES for call in calls)
    state = hook.get_batch(batch.batch_id).state
    assert (state.num_requests, state.num_pending) == (10_000, 10_000)


@pytest.mark.parametrize("shape", ["results", "succeeded_failed"])
def test_iter_batch_results_over_pages_in_both_shapes(hook: XaiHook, emulator: XaiEmulator, shape: str) -> None:
    emulator.configure(results_shape=shape, batch_seconds=0)
    batch = hook.create_batch(f"results-{shape}")
    hook.add_batch_requests(batch.batch_id, image_requests(hook, 8, fail={5}))
    done = hook.get_batch(batch.batch_id)
    assert done.is_done
    assert (done.state.num_success, done.state.num_error) == (7, 1)
    assert done.cost_usd_ticks > 0

    results = {result.batch_request_id: result for result in hook.iter_batch_results(batch.batch_id, page_size=3)}

    assert set(results) == {f"req-{i}" for i in range(8)}
    failed = results.pop("req-5")
    assert failed.result is None
    assert failed.error == "Image generation failed (emulated failure)."
    for result in results.values():
        assert result.error is None
        assert result.result is not None
        assert result.result.model == "grok-imagine-image"
        [image] = result.result.images
        assert image.url is not None
        assert not image.filtered
    pages = [r for r in emulator.requests_log if r.path == f"/v1/batches/{batch.batch_id}/results"]
    assert len(pages) == 3
    assert "pagination_token" not in pages[0].query
    assert all("pagination_token=" in page.query and "page_size=3" in page.query for page in pages[1:])


def test_batch_result_images_can_be_downloaded(hook: XaiHook, emulator: XaiEmulator) -> None:
    import io

    emulator.configure(batch_seconds=0)
    batch = hook.create_batch("download")
    hook.add_batch_requests(batch.batch_id, image_requests(hook, 1))
    [result] = list(hook.iter_batch_results(batch.batch_id))
    assert result.result is not None
    url = result.result.images[0].url
    assert url is not None

    assert hook.download(url, io.BytesIO()).image_type.extension == "jpg"


def test_cancel_batch_cancels_pending_requests(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_seconds=3600)
    batch = hook.create_batch("to-cancel")
    hook.add_batch_requests(batch.batch_id, image_requests(hook, 4))

    cancelled = hook.cancel_batch(batch.batch_id)

    assert cancelled.cancel_time is not None
    assert (cancelled.state.num_cancelled, cancelled.state.num_pending) == (4, 0)
    assert cancelled.is_done
    assert emulator.requests_log[-1].path == f"/v1/batches/{batch.batch_id}:cancel"
    assert hook.get_batch(batch.batch_id).state.num_cancelled == 4
    assert list(hook.iter_batch_results(batch.batch_id)) == []


def test_list_batches_pages_and_find_batch_by_name(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_create_per_second=None)
    created = [hook.create_batch(f"batch-{index}") for index in range(5)]

    listed = list(hook.list_batches(page_size=2))

    assert [batch.batch_id for batch in listed] == [batch.batch_id for batch in created]
    assert len([r for r in emulator.requests_log if r.path == "/v1/batches" and r.method == "GET"]) == 3
    found = hook.find_batch_by_name("batch-3")
    assert found is not None
    assert found.batch_id == created[3].batch_id
    assert hook.find_batch_by_name("no-such-batch") is None


def test_batch_creation_rate_limit_is_retried_after_retry_after(hook: XaiHook, emulator: XaiEmulator) -> None:
    # One creation per second (the emulator's default, as documented by xAI): the second create gets a
    # 429 and is retried after its Retry-After.
    hook.create_batch("first")
    started = time.monotonic()
    second = hook.create_batch("second")

    assert second.name == "second"
    statuses = [r.status for r in emulator.requests_log if r.path == "/v1/batches"]
    assert statuses == [200, 429, 200]
    assert time.monotonic() - started >= 0.9


def test_an_oversize_request_is_rejected_before_any_add_call(hook: XaiHook, emulator: XaiEmulator) -> None:
    """One request too big for any add call fails the submission up front, not after half of it was sent."""
    emulator.configure(batch_seconds=3600)
    batch = hook.create_batch("oversize")
    pairs = [*image_requests(hook, 30), ("huge", hook.build_request("h" * 5000))]

    with pytest.raises(ValueError, match=r"'huge' is \d+ bytes, over the 2000-byte limit"):
        hook.add_batch_requests(batch.batch_id, pairs, max_bytes=2000)

    assert add_calls(emulator, batch.batch_id) == []
    assert hook.get_batch(batch.batch_id).state.num_requests == 0
