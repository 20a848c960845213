"""Storing a finished batch's images to moto S3, in-process: every results page in both documented
shapes, failed requests under ``errors``, nothing downloaded twice by a second run, and the same layout
and manifest as XaiGenerateImagesOperator. Also the polling wait of XaiBatchGenerateImagesOperator
failing clearly on an expired batch and on its own timeout.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from batch_support import (
    EMULATED_FAILURE,
    EXPIRED_MESSAGE,
    RUN_ID,
    BatchWatcher,
    calls,
    expire,
    image_downloads,
    make_context,
    no_key_in,
)

from airflow_provider_xai_image.exceptions import XaiBatchFailedError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator, XaiStoreBatchResultsOperator
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.storage import safe_segment
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, XaiEmulator

FAILED = {7, 70, 140}
PROMPTS = [f"Label artwork {i}" + (f" {BATCH_FAILURE_MARKER}" if i in FAILED else "") for i in range(150)]


def submit(output_uri: str, prompts: list[str]) -> str:
    operator = XaiBatchGenerateImagesOperator(
        task_id="submit", prompts=prompts, output_uri=output_uri, wait_for_completion=False
    )
    return operator.execute(make_context("submit"))


def wait_until_done(hook: XaiHook, batch_id: str) -> None:
    deadline = time.monotonic() + 30
    while not hook.get_batch(batch_id).is_done:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def manifest_of(moto_s3, bucket: str, task_id: str) -> dict[str, Any]:
    return json.loads(moto_s3.get_bytes(bucket, f"images/{safe_segment(RUN_ID)}/{task_id}/manifest.json"))


@pytest.mark.parametrize("shape", ["results", "succeeded_failed"])
def test_store_pages_through_all_results_and_a_second_run_downloads_nothing(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str, shape: str
) -> None:
    emulator.configure(results_shape=shape, batch_seconds=0.05)
    batch_id = submit(output_uri, PROMPTS)
    wait_until_done(hook, batch_id)
    results_path = f"/v1/batches/{batch_id}/results"
    store = XaiStoreBatchResultsOperator(task_id="store", batch_id=batch_id, output_uri=output_uri, prompts=PROMPTS)
    context = make_context("store")

    uris = store.execute(context)

    prefix = f"images/{safe_segment(RUN_ID)}/store/"
    ok = [i for i in range(150) if i not in FAILED]
    assert uris == [f"s3://aws_moto@{s3_bucket}/{prefix}p{i:05d}-i00.jpg" for i in ok]
    assert len(calls(emulator, "GET", results_path)) == 2  # pages of 100 and 50
    assert len(image_downloads(emulator)) == 147
    keys = moto_s3.keys(s3_bucket, prefix)
    assert [k for k in keys if k.endswith(".jpg")] == [f"{prefix}p{i:05d}-i00.jpg" for i in ok]
    record_keys = [k for k in keys if "/_records/" in k]
    assert len(record_keys) < 150  # saved a few requests per object
    saved = [json.loads(moto_s3.get_bytes(s3_bucket, key)) for key in record_keys]
    assert sorted(record["prompt_index"] for records in saved for record in records) == list(range(150))
    assert moto_s3.get_bytes(s3_bucket, f"{prefix}p00149-i00.jpg")[:3] == b"\xff\xd8\xff"
    manifest = manifest_of(moto_s3, s3_bucket, "store")
    assert context["ti"].xcoms["manifest"] == f"s3://aws_moto@{s3_bucket}/{prefix}manifest.json"
    assert manifest["errors"] == [
        {"prompt_index": i, "prompt": PROMPTS[i], "error": EMULATED_FAILURE} for i in sorted(FAILED)
    ]
    assert [image["uri"] for image in manifest["images"]] == uris
    assert [image["prompt"] for image in manifest["images"]] == [PROMPTS[i] for i in ok]
    assert manifest["totals"]["requests"] == 150
    assert manifest["totals"]["images"] == 147
    assert manifest["totals"]["failed_requests"] == 3
    assert manifest["totals"]["cost_usd_ticks"] == emulator.cost_usd_ticks
    assert manifest["parameters"]["batch_id"] == batch_id
    no_key_in(emulator.api_key, manifest, context["ti"].xcoms)

    # a second run (a retry, or a re-run) reads the pages again but downloads nothing
    again = XaiStoreBatchResultsOperator(task_id="store", batch_id=batch_id, output_uri=output_uri, prompts=PROMPTS)
    assert again.execute(make_context("store")) == uris
    assert len(calls(emulator, "GET", results_path)) == 4
    assert len(image_downloads(emulator)) == 147
    rewritten = manifest_of(moto_s3, s3_bucket, "store")
    assert rewritten["images"] == manifest["images"]
    assert rewritten["errors"] == manifest["errors"]
    assert {**rewritten["totals"], "elapsed_seconds": 0} == {**manifest["totals"], "elapsed_seconds": 0}


def test_store_writes_the_same_layout_and_manifest_as_the_generate_operator(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    emulator.configure(batch_seconds=0.05)
    prompts = ["a teapot", "a lamp", "a chair"]
    batch_id = submit(output_uri, prompts)
    wait_until_done(hook, batch_id)

    batch_uris = XaiStoreBatchResultsOperator(
        task_id="store", batch_id=batch_id, output_uri=output_uri, prompts=prompts
    ).execute(make_context("store"))
    direct_uris = XaiGenerateImagesOperator(task_id="generate", prompt=prompts, output_uri=output_uri).execute(
        make_context("generate")
    )

    assert [uri.replace("/store/", "/generate/") for uri in batch_uris] == direct_uris
    run = f"images/{safe_segment(RUN_ID)}"

    def layout(task_id: str) -> list[str]:
        names = [key.replace(f"{run}/{task_id}/", "") for key in moto_s3.keys(s3_bucket, f"{run}/{task_id}/")]
        return [re.sub(r"^_records/p(\d{5})-[0-9a-f]{12}\.json$", r"_records/p\1-<id>.json", name) for name in names]

    assert layout("store") == layout("generate")
    from_batch, direct = manifest_of(moto_s3, s3_bucket, "store"), manifest_of(moto_s3, s3_bucket, "generate")
    assert from_batch.keys() == direct.keys() == {"images", "errors", "totals", "parameters"}
    assert from_batch["totals"].keys() == direct["totals"].keys()

    def comparable(image: dict[str, Any]) -> dict[str, Any]:
        # the same image (same bytes: the emulator draws from the prompt) at half the price
        return {**image, "uri": image["uri"].replace("/store/", "/generate/"), "cost_usd_ticks": None}

    assert [comparable(image) for image in from_batch["images"]] == [
        {**image, "cost_usd_ticks": None} for image in direct["images"]
    ]
    assert [image["cost_usd_ticks"] * 2 for image in from_batch["images"]] == [
        image["cost_usd_ticks"] for image in direct["images"]
    ]


def test_polling_operator_fails_clearly_when_xai_expires_the_batch(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    emulator.configure(batch_seconds=3600)
    operator = XaiBatchGenerateImagesOperator(
        task_id="generate", prompts=["a", "b", "c"], output_uri=output_uri, deferrable=False, poll_interval=0.1
    )

    with BatchWatcher(emulator, "generate", expire), pytest.raises(XaiBatchFailedError) as failure:
        operator.execute(make_context("generate"))

    message = str(failure.value)
    assert message.startswith(f"batch {operator.submitted_batch_id}: 0 succeeded, 0 failed, 3 cancelled, 0 pending")
    assert message.endswith(f"cancelled: {EXPIRED_MESSAGE}")
    assert moto_s3.keys(s3_bucket) == []  # nothing stored, no manifest


def test_polling_operator_times_out(hook: XaiHook, emulator: XaiEmulator, output_uri: str) -> None:
    emulator.configure(batch_seconds=3600)
    operator = XaiBatchGenerateImagesOperator(
        task_id="generate", prompts=["a"], output_uri=output_uri, deferrable=False, poll_interval=0.1, timeout=0.3
    )

    started = time.monotonic()
    with pytest.raises(XaiBatchFailedError, match=r"^Timed out after 0\.3 s: batch .*1 pending of 1"):
        operator.execute(make_context("generate"))

    assert 0.3 <= time.monotonic() - started < 5
    assert len(calls(emulator, "GET", f"/v1/batches/{operator.submitted_batch_id}")) >= 2


def test_store_refuses_a_batch_that_is_still_pending(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    emulator.configure(batch_seconds=60)
    batch_id = submit(output_uri, PROMPTS[:3])
    store = XaiStoreBatchResultsOperator(task_id="store", batch_id=batch_id, output_uri=output_uri)

    with pytest.raises(XaiBatchFailedError, match=r"still has 3 pending request\(s\).*XaiBatchSensor"):
        store.execute(make_context("store"))

    assert calls(emulator, "GET", f"/v1/batches/{batch_id}/results") == []
    assert moto_s3.keys(s3_bucket) == []
