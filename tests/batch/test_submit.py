"""Submitting a batch job, in-process against the emulator: the JSONL file route (generations and
edits), reconnecting retries (task_state_store, else the deterministic name), a creation that fails
ambiguously (never two batches), a job split into several batches, and cancel on kill.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import threading
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from batch_support import (
    EXPIRED_MESSAGE,
    IMAGE_NAME,
    batches_created,
    calls,
    conn_json,
    make_context,
    wait_until_counted,
)
from PIL import Image
from support.task_context import FakeStateStore

from airflow_provider_xai_image.api.batch_files import batch_files
from airflow_provider_xai_image.exceptions import XaiBatchRefusedError, XaiPossiblyBilledError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.ledger.records import batch_fingerprint
from airflow_provider_xai_image.operators.batch import BATCH_IDS_STATE_KEY, XaiBatchGenerateImagesOperator
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor
from airflow_provider_xai_image.storage.layout import safe_segment
from airflow_provider_xai_image.testing import XaiEmulator

PROMPTS = [f"Catalogue photo of item {sku}: a tin robot, white background" for sku in range(30)]
#: Half of the emulator's prices: $0.05 per image of grok-imagine-image-quality, $0.002 per source image.
BATCH_IMAGE_TICKS = 250_000_000
BATCH_SOURCE_TICKS = 10_000_000


def submit_operator(output_uri: str, prompts: list[str] = PROMPTS, **kwargs: Any) -> XaiBatchGenerateImagesOperator:
    """A new operator object each time: a retry runs in a new process."""
    kwargs.setdefault("wait_for_completion", False)
    return XaiBatchGenerateImagesOperator(task_id="submit", prompts=prompts, output_uri=output_uri, **kwargs)


def api_calls(emulator: XaiEmulator) -> list[tuple[str, str, int | None]]:
    return [(r.method, r.path, r.status) for r in emulator.requests_log]


# --------------------------------------------------------------------------- the file route


def test_submit_uploads_one_jsonl_file_and_creates_the_batch_from_it(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, uploads: list
) -> None:
    context = make_context("submit")

    batch_id = submit_operator(output_uri, PROMPTS[:3], resolution="1k").execute(context)

    assert context["ti"].xcoms["batch_id"] == batch_id
    [(filename, lines)] = uploads
    name = safe_segment("airflow/batch_tests/submit/manual__2026-01-01T00:00:00+00:00")
    assert filename == f"{name}.jsonl"
    assert lines == [
        {
            "custom_id": str(i),
            "method": "POST",
            "url": "/v1/images/generations",
            "body": {
                "prompt": prompt,
                "model": "grok-imagine-image-quality",
                "n": 1,
                "resolution": "1k",
                "response_format": "b64_json",
            },
        }
        for i, prompt in enumerate(PROMPTS[:3])
    ]
    assert api_calls(emulator) == [
        ("GET", "/v1/api-key", 200),  # the key is checked before anything is paid for
        ("GET", "/v1/batches", 200),  # no batch of an earlier try by this name
        ("POST", "/v1/files", 200),
        ("POST", "/v1/batches", 200),
    ]
    [create] = calls(emulator, "POST", "/v1/batches")
    assert create.json["name"] == name
    assert create.json["input_file_id"].startswith("file_")
    assert set(create.json) == {"name", "input_file_id"}
    assert wait_until_counted(emulator, batch_id)["num_requests"] == 3


def test_batch_edits_send_source_images_in_edit_lines_and_store_the_edits(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str, uploads: list
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 32), (200, 40, 40)).save(buffer, format="PNG")
    moto_s3.client.put_object(Bucket=s3_bucket, Key="sources/photo.png", Body=buffer.getvalue())
    source = moto_s3.url(s3_bucket, "sources/photo.png")
    prompts = ["Add a hat", "Add a scarf"]
    operator = submit_operator(
        output_uri, prompts, source_images=[source], wait_for_completion=True, deferrable=False, poll_interval=0.1
    )
    context = make_context("submit")

    uris = operator.execute(context)

    [(_, lines)] = uploads
    data_uri = f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"
    assert [line["url"] for line in lines] == ["/v1/images/edits"] * 2
    assert [line["body"]["prompt"] for line in lines] == prompts
    assert all(line["body"]["image"] == {"type": "image_url", "url": data_uri} for line in lines)
    assert all("images" not in line["body"] for line in lines)
    # the edits are stored: one source keeps its proportions (2:1), and each edit billed its source image
    assert len(uris) == 2
    for uri in uris:
        image = Image.open(io.BytesIO(moto_s3.get_bytes(s3_bucket, uri.split(f"{s3_bucket}/", 1)[1])))
        assert (image.format, image.size) == ("JPEG", (1024, 512))
    manifest = json.loads(moto_s3.get_bytes(s3_bucket, context["ti"].xcoms["manifest"].split(f"{s3_bucket}/", 1)[1]))
    assert manifest["parameters"]["source_images"] == [source]
    assert (
        manifest["totals"]["cost_usd_ticks"] == emulator.cost_usd_ticks == 2 * (BATCH_IMAGE_TICKS + BATCH_SOURCE_TICKS)
    )


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
    assert emulator.stats()["files_uploaded"] == 1  # nothing uploaded twice
    assert len(calls(emulator, "GET", "/v1/batches")) == 2  # each try looked the name up
    [create] = calls(emulator, "POST", "/v1/batches")
    assert create.json["name"].startswith("airflow_batch_tests_submit_manual__2026-01-01T00_00_00_00_00-")
    assert wait_until_counted(emulator, batch_id)["num_requests"] == len(PROMPTS)

    # another run of the task is another batch (the run id is part of the name)
    other = submit_operator(output_uri).execute(make_context("submit", run_id="manual__2026-01-02T00:00:00+00:00"))
    assert other != batch_id
    assert batches_created(emulator) == 2


def test_retry_with_task_state_store_reconnects_by_id(hook: XaiHook, emulator: XaiEmulator, output_uri: str) -> None:
    store = FakeStateStore()
    batch_id = submit_operator(output_uri).execute(make_context("submit", state_store=store))
    assert store.data == {BATCH_IDS_STATE_KEY: batch_id}
    assert BATCH_IDS_STATE_KEY == "xai_batch_ids"  # renaming it strands the batches of in-flight retries
    looked_up = len(calls(emulator, "GET", "/v1/batches"))

    again = submit_operator(output_uri).execute(make_context("submit", state_store=store))

    assert again == batch_id
    assert batches_created(emulator) == 1
    assert emulator.stats()["files_uploaded"] == 1
    assert len(calls(emulator, "GET", f"/v1/batches/{batch_id}")) == 1  # found by id ...
    assert len(calls(emulator, "GET", "/v1/batches")) == looked_up  # ... not by listing


@pytest.mark.parametrize("with_state_store", [True, False], ids=["task_state_store", "by-name"])
def test_retry_does_not_reuse_a_batch_xai_expired(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, with_state_store: bool
) -> None:
    emulator.configure(batch_seconds=3600)
    store = FakeStateStore() if with_state_store else None
    batch_id = submit_operator(output_uri).execute(make_context("submit", state_store=store))
    wait_until_counted(emulator, batch_id)
    emulator.expire_batch(batch_id, EXPIRED_MESSAGE)

    again = submit_operator(output_uri).execute(make_context("submit", state_store=store))

    assert again != batch_id
    assert batches_created(emulator) == 2
    assert wait_until_counted(emulator, again)["num_requests"] == len(PROMPTS)
    if store is not None:
        assert store.data == {BATCH_IDS_STATE_KEY: again}


# --------------------------------------------------------------------------- an ambiguous creation


def test_a_creation_answered_500_is_not_resent_and_the_retry_makes_the_one_batch(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.configure(batch_seconds=3600)
    upload = XaiHook.upload_batch_file

    def upload_then_fail_the_next_call(self: XaiHook, filename: str, content: bytes) -> str:
        file_id = upload(self, filename, content)
        emulator.configure(status_script=[500])  # the next /v1 call: the creation
        return file_id

    monkeypatch.setattr(XaiHook, "upload_batch_file", upload_then_fail_the_next_call)

    with pytest.raises(XaiPossiblyBilledError, match=r"^xAI POST /batches failed \(HTTP 500\): .*may have been billed"):
        submit_operator(output_uri).execute(make_context("submit"))

    assert api_calls(emulator) == [
        ("GET", "/v1/api-key", 200),
        ("GET", "/v1/batches", 200),
        ("POST", "/v1/files", 200),
        ("POST", "/v1/batches", 500),  # not re-sent: it may have been billed ...
        ("GET", "/v1/batches", 200),  # ... so the batch is looked up by name: there is none
    ]
    assert batches_created(emulator) == 0

    monkeypatch.setattr(XaiHook, "upload_batch_file", upload)
    again = submit_operator(output_uri).execute(make_context("submit"))  # the task's retry

    assert batches_created(emulator) == 1
    assert [call.status for call in calls(emulator, "POST", "/v1/batches")] == [500, 200]
    assert wait_until_counted(emulator, again)["num_requests"] == len(PROMPTS)


def test_a_creation_whose_answer_is_lost_reconnects_to_the_batch_by_name(
    emulator: XaiEmulator, output_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # xAI creates the batch but answers after the client's read timeout (0.5 s).
    monkeypatch.setenv("AIRFLOW_CONN_XAI_DEFAULT", conn_json(emulator, timeout=[5, 0.5]))
    emulator.configure(batch_seconds=3600)
    create = XaiHook.create_batch

    def slow_creation(self: XaiHook, name: str, input_file_id: str) -> Any:
        emulator.configure(latency=1.5)
        try:
            return create(self, name, input_file_id)
        finally:
            emulator.configure(latency=0)
            deadline = time.monotonic() + 10
            while batches_created(emulator) == 0:  # xAI finishes the creation the client gave up on
                assert time.monotonic() < deadline
                time.sleep(0.02)

    monkeypatch.setattr(XaiHook, "create_batch", slow_creation)
    store = FakeStateStore()
    context = make_context("submit", state_store=store)

    batch_id = submit_operator(output_uri).execute(context)

    [held] = emulator.backend.list_batches(0, 10)[0]
    assert batch_id == held["batch_id"] == context["ti"].xcoms["batch_id"]
    assert store.data == {BATCH_IDS_STATE_KEY: batch_id}
    assert [(method, path) for method, path, _ in api_calls(emulator)][-3:] == [
        ("POST", "/v1/files"),
        ("POST", "/v1/batches"),  # sent once, its answer never read ...
        ("GET", "/v1/batches"),  # ... the batch found by name instead
    ]
    assert len(calls(emulator, "POST", "/v1/batches")) == 1
    assert batches_created(emulator) == 1


# --------------------------------------------------------------------------- a job split in batches


def test_batch_files_keep_each_file_under_the_limit_and_refuse_a_line_over_it(hook: XaiHook) -> None:
    pairs = [(str(i), hook.build_request(f"prompt {i:02d}")) for i in range(25)]
    lines = [json.dumps(request.batch_line(i), separators=(",", ":")).encode() + b"\n" for i, request in pairs]

    files = list(batch_files(pairs, max_bytes=sum(len(line) for line in lines[:10])))

    assert [count for _, count in files] == [10, 9, 6]  # longer ids from 10 on: one line fewer fits
    assert b"".join(content for content, _ in files) == b"".join(lines)  # every line once, in order
    assert all(len(content) <= sum(len(line) for line in lines[:10]) for content, _ in files)
    with pytest.raises(ValueError, match=r"batch request '0' is \d+ bytes, over the 100-byte file limit"):
        list(batch_files(pairs, max_bytes=100))


def test_a_job_split_in_three_batches_is_submitted_reconnected_waited_and_stored_together(
    hook: XaiHook,
    emulator: XaiEmulator,
    output_uri: str,
    moto_s3,
    s3_bucket: str,
    uploads: list,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator.configure(batch_seconds=0.3)
    request = hook.build_request(PROMPTS[29], response_format="b64_json")
    longest = len(json.dumps(request.batch_line("29"), separators=(",", ":"))) + 1
    # files of at most ten lines: the 30 requests make three batches
    monkeypatch.setattr(
        "airflow_provider_xai_image.operators.batch.batch_files", functools.partial(batch_files, max_bytes=10 * longest)
    )
    store = FakeStateStore()

    joined = submit_operator(output_uri).execute(make_context("submit", state_store=store))

    ids = joined.split(",")
    assert len(ids) == 3
    assert store.data == {BATCH_IDS_STATE_KEY: joined}
    name = safe_segment("airflow/batch_tests/submit/manual__2026-01-01T00:00:00+00:00")
    assert [filename for filename, _ in uploads] == [f"{name}-part{part}of3.jsonl" for part in (1, 2, 3)]
    assert [[line["custom_id"] for line in lines] for _, lines in uploads] == [
        [str(i) for i in range(start, start + 10)] for start in (0, 10, 20)
    ]
    assert [call.json["name"] for call in calls(emulator, "POST", "/v1/batches")] == [
        f"{name}-part{part}of3" for part in (1, 2, 3)
    ]
    listings = len(calls(emulator, "GET", "/v1/batches"))

    # the retry reconnects to the three batches by their ids, waits for all, and stores them as one job
    retry = submit_operator(output_uri, wait_for_completion=True, deferrable=False, poll_interval=0.1)
    context = make_context("submit", state_store=store)
    uris = retry.execute(context)

    assert retry.submitted_batch_ids == ids
    assert batches_created(emulator) == 3
    assert emulator.stats()["files_uploaded"] == 3
    assert len(calls(emulator, "GET", "/v1/batches")) == listings  # found by id, not by name
    assert context["ti"].xcoms["batch_id"] == joined
    fingerprint = batch_fingerprint(ids)
    assert [uri.rsplit("/", 1)[1] for uri in uris] == [f"p{i:05d}-i00-{fingerprint}.jpg" for i in range(30)]
    prefix = uris[0].split(f"{s3_bucket}/", 1)[1].rsplit("/", 1)[0]
    images = [key for key in moto_s3.keys(s3_bucket, prefix) if IMAGE_NAME.match(key.rsplit("/", 1)[1])]
    assert len(images) == 30
    for batch_id in ids:
        assert [call.status for call in calls(emulator, "GET", f"/v1/batches/{batch_id}/results")] == [200]
    manifest = json.loads(moto_s3.get_bytes(s3_bucket, f"{prefix}/manifest.json"))
    assert manifest["parameters"]["batch_id"] == joined
    assert (manifest["totals"]["requests"], manifest["totals"]["images"]) == (30, 30)
    assert manifest["totals"]["cost_usd_ticks"] == emulator.cost_usd_ticks == 30 * BATCH_IMAGE_TICKS
    assert emulator.images_billed == 30
    # the sensor takes the joined ids too, and returns every batch of the job
    done = XaiBatchSensor(task_id="wait", batch_id=joined).poke(make_context("wait"))
    assert [batch["batch_id"] for batch in done.xcom_value] == ids
    assert [batch["state"]["num_success"] for batch in done.xcom_value] == [10, 10, 10]
    # killing the task cancels every batch of the job
    retry.on_kill()
    for batch_id in ids:
        assert len(calls(emulator, "POST", f"/v1/batches/{batch_id}:cancel")) == 1


# --------------------------------------------------------------------------- cancel on kill


def test_on_kill_after_submit_cancels_the_batch(hook: XaiHook, emulator: XaiEmulator, output_uri: str) -> None:
    emulator.configure(batch_seconds=3600)
    operator = submit_operator(output_uri, PROMPTS[:4])
    operator.on_kill()  # nothing submitted yet: nothing to cancel
    assert emulator.requests_log == []
    batch_id = operator.execute(make_context("submit"))
    wait_until_counted(emulator, batch_id)

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


def run_in_thread(operator: XaiBatchGenerateImagesOperator, context: dict[str, Any]) -> tuple[threading.Thread, dict]:
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            operator.execute(context)
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    return worker, outcome


def wait_until_polling(emulator: XaiEmulator, operator: XaiBatchGenerateImagesOperator) -> str:
    """Until the operator polls its (one) batch and xAI has counted the batch's requests."""
    deadline = time.monotonic() + 10
    while not operator.submitted_batch_ids or not calls(
        emulator, "GET", f"/v1/batches/{operator.submitted_batch_ids[0]}"
    ):
        assert time.monotonic() < deadline, "the operator never started waiting"
        time.sleep(0.02)
    [batch_id] = operator.submitted_batch_ids
    wait_until_counted(emulator, batch_id)
    return batch_id


def test_killing_a_waiting_task_cancels_its_batch_and_fails_the_wait(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str
) -> None:
    emulator.configure(batch_seconds=3600)
    operator = submit_operator(output_uri, PROMPTS[:3], wait_for_completion=True, deferrable=False, poll_interval=0.1)
    worker, outcome = run_in_thread(operator, make_context("submit"))
    batch_id = wait_until_polling(emulator, operator)

    operator.on_kill()
    worker.join(10)

    assert not worker.is_alive()
    error = outcome["error"]
    assert isinstance(error, AirflowFailException)  # a cancelled batch is not retried
    assert isinstance(error.__cause__, XaiBatchRefusedError)
    batch = emulator.backend.get_batch(batch_id)
    assert str(error).endswith(f"3 cancelled, 0 pending of 3; cancelled at {batch['cancel_time']}")
    assert batch["state"]["num_cancelled"] == 3
    assert len(calls(emulator, "POST", f"/v1/batches/{batch_id}:cancel")) == 1


def test_killing_a_retry_that_reconnected_cancels_the_batch_of_the_earlier_try(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str
) -> None:
    emulator.configure(batch_seconds=3600)
    store = FakeStateStore()
    batch_id = submit_operator(output_uri, PROMPTS[:5]).execute(make_context("submit", state_store=store))
    retry = submit_operator(output_uri, PROMPTS[:5], wait_for_completion=True, deferrable=False, poll_interval=0.1)
    worker, outcome = run_in_thread(retry, make_context("submit", state_store=store))
    assert wait_until_polling(emulator, retry) == batch_id  # reconnected, not a new batch

    retry.on_kill()
    worker.join(10)

    assert isinstance(outcome["error"], AirflowFailException)
    assert batches_created(emulator) == 1
    assert len(calls(emulator, "POST", f"/v1/batches/{batch_id}:cancel")) == 1, (
        "the reconnected batch was not cancelled"
    )
    assert emulator.backend.get_batch(batch_id)["state"]["num_cancelled"] == 5
