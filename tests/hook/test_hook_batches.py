"""XaiHook's batch API calls via the emulator: upload a JSONL file, create a batch from it, watch it
validate and run, page its results (every error shape), cancel it, list and find batches."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from PIL import Image

from airflow_provider_xai_image.api.batch_files import batch_files
from airflow_provider_xai_image.api.batches import Batch, BatchState
from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.exceptions import XaiBadRequestError, XaiPossiblyBilledError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, XaiEmulator
from airflow_provider_xai_image.testing.records import LoggedRequest

#: What the emulator answers for a batch request whose prompt holds ``[[fail]]`` (gRPC code 13).
FAILURE = "Image generation failed (emulated failure)."
#: ``grok-imagine-image`` at $0.02 an image, half price in a batch.
BATCH_IMAGE_PRICE = 100_000_000


def image_requests(
    hook: XaiHook, count: int, *, fail: frozenset[int] = frozenset(), **params: str
) -> list[tuple[str, ImageRequest]]:
    """``(custom_id, request)`` pairs ``"0"``, ``"1"``, ...; those in ``fail`` fail in the batch."""
    pairs = []
    for index in range(count):
        prompt = f"poster {index}" + (f" {BATCH_FAILURE_MARKER}" if index in fail else "")
        pairs.append((str(index), hook.build_request(prompt, model="grok-imagine-image", **params)))
    return pairs


def jsonl(pairs: list[tuple[str, ImageRequest]]) -> bytes:
    """The one batch input file of ``pairs`` (as the batch operator builds it)."""
    [(content, count)] = list(batch_files(pairs))
    assert count == len(pairs)
    return content


def submit(hook: XaiHook, name: str, pairs: list[tuple[str, ImageRequest]]) -> Batch:
    file_id = hook.upload_batch_file(f"{name}.jsonl", jsonl(pairs))
    return hook.create_batch(name, file_id)


def wait_for(hook: XaiHook, batch_id: str, condition: Callable[[Batch], bool], timeout: float = 15.0) -> Batch:
    """Poll ``get_batch`` until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        batch = hook.get_batch(batch_id)
        if condition(batch):
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} never got there: {batch!r}"
        time.sleep(0.05)


def counted(batch: Batch) -> bool:
    return batch.state.num_requests > 0


def finished(batch: Batch) -> bool:
    return batch.state.num_requests > 0 and batch.state.num_pending == 0


def sent_to(emulator: XaiEmulator, method: str, path: str) -> list[LoggedRequest]:
    return [r for r in emulator.requests_log if (r.method, r.path) == (method, path)]


def error_shape(item: dict[str, object]) -> str:
    """Which of the three error shapes of the contract a raw results item has ("" for a success)."""
    outcome = item.get("batch_result")
    if isinstance(outcome, dict) and "error" in outcome:
        return "object" if isinstance(outcome["error"], dict) else "string"
    return "error_message" if "error_message" in item else ""


# -- upload ----------------------------------------------------------------------------------------


def test_upload_batch_file_sends_multipart_and_returns_the_file_id(hook: XaiHook, emulator: XaiEmulator) -> None:
    content = jsonl(image_requests(hook, 3))

    file_id = hook.upload_batch_file("nightly.jsonl", content)

    assert file_id.startswith("file_")
    [sent] = emulator.requests_log
    assert (sent.method, sent.path, sent.status) == ("POST", "/v1/files", 200)
    assert sent.json is None  # multipart/form-data, not JSON
    assert sent.body_size > len(content)
    assert emulator.stats()["files_uploaded"] == 1


def test_upload_is_free_to_retry_after_a_500(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(status_script=[500])

    file_id = hook.upload_batch_file("retried.jsonl", jsonl(image_requests(hook, 1)))

    assert file_id.startswith("file_")
    assert [r.status for r in sent_to(emulator, "POST", "/v1/files")] == [500, 200]
    assert emulator.stats()["files_uploaded"] == 1


# -- create, get, results ----------------------------------------------------------------------------


def test_batch_from_a_file_validates_then_counts_and_pages_results_of_every_error_shape(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(batch_validation_seconds=1.0, batch_seconds=0, batch_error_shape="mixed")
    pairs = image_requests(hook, 6, fail=frozenset({1, 3, 4}))
    file_id = hook.upload_batch_file("nightly.jsonl", jsonl(pairs))

    created = hook.create_batch("nightly", file_id)
    validating = hook.get_batch(created.batch_id)

    [create_call] = sent_to(emulator, "POST", "/v1/batches")
    assert (create_call.status, create_call.json) == (200, {"name": "nightly", "input_file_id": file_id})
    assert created.batch_id.startswith("batch_")
    assert created.name == "nightly"
    for batch in (created, validating):
        assert batch.state == BatchState()  # every counter 0 while xAI reads the file
        assert batch.is_validating
        assert batch.cancel_time is None
    expires = validating.expires_at()
    assert expires is not None
    assert expires > datetime.now(timezone.utc)

    done = wait_for(hook, created.batch_id, finished)

    assert not done.is_validating
    state = done.state
    assert (state.num_requests, state.num_pending, state.num_success, state.num_error) == (6, 0, 3, 3)
    assert state.num_cancelled == 0

    results = list(hook.iter_batch_results(created.batch_id, model="grok-imagine-image", limit=4))

    pages = sent_to(emulator, "GET", f"/v1/batches/{created.batch_id}/results")
    assert len(pages) == 2  # 4 + 2 results
    assert all("limit=4" in page.query and "page_size" not in page.query for page in pages)
    assert "pagination_token" not in pages[0].query
    assert "pagination_token=" in pages[1].query
    by_id = {result.batch_request_id: result for result in results}
    assert len(results) == len(by_id) == 6
    assert sorted(by_id) == [str(index) for index in range(6)]
    assert all(result.unreadable is None for result in results)
    failed = [by_id[request_id] for request_id in ("1", "3", "4")]
    assert all(result.result is None for result in failed)
    assert sorted(result.error or "" for result in failed) == sorted([f"{FAILURE} (code 13)", FAILURE, FAILURE])
    for request_id in ("0", "2", "5"):
        success = by_id[request_id]
        assert success.error is None
        assert success.result is not None
        assert success.result.model == "grok-imagine-image"
        assert success.result.cost_usd_ticks == BATCH_IMAGE_PRICE
        [image] = success.result.images
        assert image.url is not None
        assert not image.filtered
    # The three failures really came in the three shapes of the contract (read raw, in one page).
    raw = hook.call("GET", f"batches/{created.batch_id}/results", params={"limit": 1000})
    assert sorted(error_shape(item) for item in raw["results"]) == ["", "", "", "error_message", "object", "string"]


def test_batch_result_images_can_be_downloaded_or_come_inline(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_validation_seconds=0, batch_seconds=0)
    pairs = [*image_requests(hook, 1), ("inline", hook.build_request("inline poster", response_format="b64_json"))]
    batch = submit(hook, "download", pairs)
    wait_for(hook, batch.batch_id, finished)

    by_id = {result.batch_request_id: result.result for result in hook.iter_batch_results(batch.batch_id)}

    url_result, inline_result = by_id["0"], by_id["inline"]
    assert url_result is not None
    assert inline_result is not None
    url = url_result.images[0].url
    assert url is not None
    assert hook.download(url, io.BytesIO()).image_type.extension == "jpg"
    data = inline_result.images[0].data
    assert data is not None
    assert Image.open(io.BytesIO(data)).format == "JPEG"


def test_a_file_xai_refuses_cancels_the_batch_with_its_message(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_validation_seconds=0.1)
    good = hook.build_request("fine").batch_line("good")
    bad = {**good, "custom_id": "bad", "body": {**good["body"], "quality": "high"}}
    content = b"".join(json.dumps(line).encode() + b"\n" for line in (good, bad))
    batch = hook.create_batch("refused", hook.upload_batch_file("refused.jsonl", content))

    refused = wait_for(hook, batch.batch_id, lambda batch: batch.cancel_time is not None)

    assert refused.cancel_by_xai_message is not None
    assert "line 2" in refused.cancel_by_xai_message
    assert "quality" in refused.cancel_by_xai_message
    assert refused.state.num_requests == 0
    assert not refused.is_validating


def test_a_batch_from_an_unknown_file_is_a_404_sent_once(hook: XaiHook, emulator: XaiEmulator) -> None:
    with pytest.raises(XaiBadRequestError) as raised:
        hook.create_batch("lost", "file_does-not-exist")

    assert raised.value.status == 404
    assert "file_does-not-exist" in str(raised.value)
    assert [r.status for r in emulator.requests_log] == [404]


def test_paging_limit_out_of_range_is_refused_before_any_request(hook: XaiHook, emulator: XaiEmulator) -> None:
    with pytest.raises(ValueError, match=r"limit: must be 1\.\.1000, got 0"):
        next(hook.iter_batch_results("batch_x", limit=0))
    with pytest.raises(ValueError, match=r"limit: must be 1\.\.1000, got 1001"):
        next(hook.list_batches(limit=1001))

    assert emulator.requests_log == []


# -- cancel ------------------------------------------------------------------------------------------


def test_cancel_batch_cancels_pending_requests(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_validation_seconds=0, batch_seconds=3600)
    batch = submit(hook, "to-cancel", image_requests(hook, 4))
    running = wait_for(hook, batch.batch_id, counted)
    assert (running.state.num_requests, running.state.num_pending) == (4, 4)

    cancelled = hook.cancel_batch(batch.batch_id)

    assert cancelled.cancel_time is not None
    assert cancelled.cancel_by_xai_message is None  # we cancelled it, not xAI
    assert (cancelled.state.num_cancelled, cancelled.state.num_pending) == (4, 0)
    last = emulator.requests_log[-1]
    assert (last.method, last.path, last.status) == ("POST", f"/v1/batches/{batch.batch_id}:cancel", 200)
    assert hook.get_batch(batch.batch_id).state.num_cancelled == 4
    assert list(hook.iter_batch_results(batch.batch_id)) == []
    assert emulator.images_billed == 0


def test_cancel_while_validating_ends_the_validation(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_validation_seconds=3600)
    batch = submit(hook, "early-cancel", image_requests(hook, 2))
    assert hook.get_batch(batch.batch_id).is_validating

    cancelled = hook.cancel_batch(batch.batch_id)

    assert cancelled.cancel_time is not None
    assert cancelled.state == BatchState()
    assert not cancelled.is_validating  # cancelled, not still being read


# -- list and find -----------------------------------------------------------------------------------


def test_list_batches_pages_with_limit_and_find_batch_by_name(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_create_per_second=None, batch_validation_seconds=3600)
    file_id = hook.upload_batch_file("shared.jsonl", jsonl(image_requests(hook, 1)))
    created = [hook.create_batch(f"batch-{index}", file_id) for index in range(5)]

    listed = list(hook.list_batches(limit=2))

    assert [batch.batch_id for batch in listed] == [batch.batch_id for batch in created]
    assert [batch.name for batch in listed] == [f"batch-{index}" for index in range(5)]
    pages = sent_to(emulator, "GET", "/v1/batches")
    assert len(pages) == 3  # 2 + 2 + 1
    assert all("limit=2" in page.query for page in pages)
    assert ["pagination_token=" in page.query for page in pages] == [False, True, True]

    found = hook.find_batch_by_name("batch-3")
    assert found is not None
    assert found.batch_id == created[3].batch_id
    assert hook.find_batch_by_name("no-such-batch") is None
    lookups = sent_to(emulator, "GET", "/v1/batches")[3:]
    assert [page.query for page in lookups] == ["limit=1000", "limit=1000"]  # one page each


def test_batch_creation_rate_limit_is_retried_after_retry_after(hook: XaiHook, emulator: XaiEmulator) -> None:
    # One creation per second (the emulator's default, as xAI documents): the second create gets a 429,
    # which was not served (so not billed), and is retried after its Retry-After.
    file_id = hook.upload_batch_file("twice.jsonl", jsonl(image_requests(hook, 1)))
    hook.create_batch("first", file_id)
    started = time.monotonic()
    second = hook.create_batch("second", file_id)

    assert second.name == "second"
    assert [r.status for r in sent_to(emulator, "POST", "/v1/batches")] == [200, 429, 200]
    assert time.monotonic() - started >= 0.9


def test_an_ambiguous_batch_creation_is_not_resent_and_can_be_found_by_name(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    hook = set_connection(timeout=0.3, max_retries=3)
    file_id = hook.upload_batch_file("slow.jsonl", jsonl(image_requests(hook, 1)))
    emulator.configure(latency=1.0)

    with pytest.raises(XaiPossiblyBilledError, match="may have been billed"):
        hook.create_batch("slow-create", file_id)

    time.sleep(1.2)  # xAI goes on and creates it, though the client has gone
    emulator.configure(latency=0.0)
    assert len(sent_to(emulator, "POST", "/v1/batches")) == 1  # not re-sent
    found = hook.find_batch_by_name("slow-create")
    assert found is not None
    assert found.batch_id.startswith("batch_")


def test_batch_file_lines_are_the_request_bodies(hook: XaiHook) -> None:
    pairs = image_requests(hook, 2, aspect_ratio="16:9")

    lines = [json.loads(line) for line in jsonl(pairs).decode().splitlines()]

    assert lines == [
        {"custom_id": custom_id, "method": "POST", "url": "/v1/images/generations", "body": request.body()}
        for custom_id, request in pairs
    ]
    assert lines[0]["body"]["aspect_ratio"] == "16:9"
