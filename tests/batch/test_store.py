"""Storing a finished batch job's images to moto S3, in-process against the emulator over HTTP.

A JSONL batch of 150 prompts read back in two result pages (``limit``), with failures in the three
shapes xAI reports them (error object, error string, ``error_message``) listed under ``errors``,
counted against max_failed_fraction, and nothing stored or billed twice by a second run; the same
layout and manifest as XaiGenerateImagesOperator; expired result URLs named as such while the
other images are stored; and the polling wait of XaiBatchGenerateImagesOperator failing clearly
(without retries when xAI refused or expired the batch) and on its own timeout.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from batch_support import (
    EMULATED_FAILURE,
    EMULATED_FAILURE_CODED,
    EXPIRED_MESSAGE,
    IMAGE_NAME,
    JPEG_MAGIC,
    REFUSED_MESSAGE,
    RUN_ID,
    BatchWatcher,
    calls,
    error_shape,
    expire,
    image_downloads,
    make_context,
    no_key_in,
    raw_results,
    refuse,
    submit_batch,
    wait_until_done,
)
from support.task_context import FakeStateStore

from airflow_provider_xai_image.engine.batch_results import EXPIRED_URLS_HINT
from airflow_provider_xai_image.exceptions import XaiBatchFailedError, XaiBatchRefusedError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.ledger.records import batch_fingerprint
from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator, XaiStoreBatchResultsOperator
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor
from airflow_provider_xai_image.storage.layout import safe_segment
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, XaiEmulator

FAILED = {7, 70, 140}
PROMPTS = [f"Label artwork {i}" + (f" {BATCH_FAILURE_MARKER}" if i in FAILED else "") for i in range(150)]
#: Half of the emulator's $0.05 per image of grok-imagine-image-quality (the Batch API's price).
BATCH_PRICE_TICKS = 250_000_000


def submit(output_uri: str, prompts: list[str], **kwargs: Any) -> str:
    operator = XaiBatchGenerateImagesOperator(
        task_id="submit", prompts=prompts, output_uri=output_uri, wait_for_completion=False, **kwargs
    )
    return operator.execute(make_context("submit"))


def prefix_of(task_id: str) -> str:
    return f"images/{safe_segment(RUN_ID)}/{task_id}/"


def manifest_of(moto_s3, bucket: str, task_id: str) -> dict[str, Any]:
    return json.loads(moto_s3.get_bytes(bucket, f"{prefix_of(task_id)}manifest.json"))


def stored_images(moto_s3, bucket: str, task_id: str) -> list[str]:
    prefix = prefix_of(task_id)
    return [key[len(prefix) :] for key in moto_s3.keys(bucket, prefix) if IMAGE_NAME.match(key[len(prefix) :])]


def test_a_150_prompt_batch_is_stored_from_two_result_pages_once(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    emulator.configure(batch_seconds=0.05, batch_error_shape="mixed")
    batch_id = submit(output_uri, PROMPTS)
    wait_until_done(emulator, batch_id)
    results_path = f"/v1/batches/{batch_id}/results"
    # The results page mixes successes with failures in each of the three shapes xAI uses.
    served = raw_results(emulator, batch_id)
    shapes = {int(request_id): error_shape(item) for request_id, item in served.items()}
    assert {index for index, shape in shapes.items() if shape} == FAILED
    assert sorted(shapes[index] for index in FAILED) == ["error_message", "object", "string"]
    before = len(calls(emulator, "GET", results_path))  # the raw read above is logged too
    store = XaiStoreBatchResultsOperator(task_id="store", batch_id=batch_id, output_uri=output_uri, prompts=PROMPTS)
    context = make_context("store")

    uris = store.execute(context)

    fingerprint = batch_fingerprint([batch_id])
    prefix = prefix_of("store")
    ok = [i for i in range(150) if i not in FAILED]
    names = [f"p{i:05d}-i00-{fingerprint}.jpg" for i in ok]
    assert uris == [f"s3://aws_moto@{s3_bucket}/{prefix}{name}" for name in names]
    # two pages of results, asked for with `limit` (no page_size), the second with the first's token
    pages = calls(emulator, "GET", results_path)[before:]
    assert [page.status for page in pages] == [200, 200]
    assert pages[0].query == "limit=100"
    assert re.fullmatch(r"limit=100&pagination_token=[\w=%-]+", pages[1].query)
    # every image stored once, none downloaded (b64_json is the batch default), each request billed once
    assert stored_images(moto_s3, s3_bucket, "store") == names
    assert image_downloads(emulator) == []
    assert emulator.images_billed == 147
    assert emulator.cost_usd_ticks == 147 * BATCH_PRICE_TICKS
    assert moto_s3.get_bytes(s3_bucket, f"{prefix}{names[-1]}")[:3] == JPEG_MAGIC
    record_keys = [k for k in moto_s3.keys(s3_bucket, prefix) if "/_records/" in k]
    assert len(record_keys) < 150  # saved a few requests per object
    saved = [record for key in record_keys for record in json.loads(moto_s3.get_bytes(s3_bucket, key))]
    assert sorted(record["prompt_index"] for record in saved) == list(range(150))  # one record each
    # the manifest: every image, every failure with xAI's text in whichever shape it came
    manifest = manifest_of(moto_s3, s3_bucket, "store")
    assert context["ti"].xcoms["manifest"] == f"s3://aws_moto@{s3_bucket}/{prefix}manifest.json"
    expected_error = {"object": EMULATED_FAILURE_CODED, "string": EMULATED_FAILURE, "error_message": EMULATED_FAILURE}
    assert manifest["errors"] == [
        {"prompt_index": i, "prompt": PROMPTS[i], "error": expected_error[shapes[i]]} for i in sorted(FAILED)
    ]
    assert [image["uri"] for image in manifest["images"]] == uris
    assert [image["prompt"] for image in manifest["images"]] == [PROMPTS[i] for i in ok]
    assert {image["cost_usd_ticks"] for image in manifest["images"]} == {BATCH_PRICE_TICKS}
    assert manifest["totals"]["requests"] == 150
    assert manifest["totals"]["images"] == 147
    assert manifest["totals"]["failed_requests"] == 3
    assert manifest["totals"]["cost_usd_ticks"] == emulator.cost_usd_ticks
    assert manifest["parameters"]["batch_id"] == batch_id
    no_key_in(emulator.api_key, manifest, context["ti"].xcoms)
    # the three failures count against max_failed_fraction: 3 of 150 is 0.02
    assert XaiBatchSensor(task_id="wait", batch_id=batch_id, max_failed_fraction=0.02).poke(make_context("w")).is_done
    with pytest.raises(XaiBatchFailedError, match=r"3 failed requests, over max_failed_fraction=0\.01 \(1 allowed\)"):
        XaiBatchSensor(task_id="wait", batch_id=batch_id, max_failed_fraction=0.01).poke(make_context("w"))

    # a second run (a retry, or a re-run) reads the pages again but stores and records nothing new
    again = XaiStoreBatchResultsOperator(task_id="store", batch_id=batch_id, output_uri=output_uri, prompts=PROMPTS)
    assert again.execute(make_context("store")) == uris
    assert len(calls(emulator, "GET", results_path)) == before + 4
    assert [k for k in moto_s3.keys(s3_bucket, prefix) if "/_records/" in k] == record_keys
    assert stored_images(moto_s3, s3_bucket, "store") == names
    assert emulator.images_billed == 147
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
    wait_until_done(emulator, batch_id)

    batch_uris = XaiStoreBatchResultsOperator(
        task_id="store", batch_id=batch_id, output_uri=output_uri, prompts=prompts
    ).execute(make_context("store"))
    direct_uris = XaiGenerateImagesOperator(task_id="generate", prompt=prompts, output_uri=output_uri).execute(
        make_context("generate")
    )

    def neutral(name: str) -> str:
        """A name with its fingerprint (the batch job's, or each request's) and record id taken out."""
        name = re.sub(r"-[0-9a-f]{12}\.jpg$", "-<fingerprint>.jpg", name)
        return re.sub(r"^_records/p(\d{5})-[0-9a-f]{12}\.json$", r"_records/p\1-<id>.json", name)

    assert [neutral(uri.rsplit("/", 1)[1]) for uri in batch_uris] == [
        neutral(uri.rsplit("/", 1)[1]) for uri in direct_uris
    ]
    assert len({uri.rsplit("-", 1)[1] for uri in batch_uris}) == 1  # one fingerprint: the batch job's
    assert len({uri.rsplit("-", 1)[1] for uri in direct_uris}) == 3  # one per request

    def layout(task_id: str) -> list[str]:
        return [neutral(key[len(prefix_of(task_id)) :]) for key in moto_s3.keys(s3_bucket, prefix_of(task_id))]

    assert layout("store") == layout("generate")
    from_batch, direct = manifest_of(moto_s3, s3_bucket, "store"), manifest_of(moto_s3, s3_bucket, "generate")
    assert (
        from_batch.keys()
        == direct.keys()
        == {"task_instance", "images", "errors", "superseded", "totals", "parameters"}
    )
    assert (from_batch["task_instance"]["task_id"], direct["task_instance"]["task_id"]) == ("store", "generate")
    assert from_batch["totals"].keys() == direct["totals"].keys()

    def comparable(image: dict[str, Any]) -> dict[str, Any]:
        # the same image (same bytes: the emulator draws from the prompt) at half the price
        return {**image, "uri": None, "cost_usd_ticks": None}

    assert [comparable(image) for image in from_batch["images"]] == [comparable(image) for image in direct["images"]]
    assert [image["cost_usd_ticks"] * 2 for image in from_batch["images"]] == [
        image["cost_usd_ticks"] for image in direct["images"]
    ]


def test_expired_result_urls_fail_the_store_naming_the_loss_and_the_rest_are_stored(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    # A job of two batches with temporary URLs: the first finished over an hour ago (its URLs are
    # gone), the second just now.
    emulator.configure(batch_seconds=0, batch_validation_seconds=0)
    prompts = [f"Poster {i}" for i in range(6)]
    early = submit_batch(hook, prompts[:3], name="early", response_format="url")
    wait_until_done(emulator, early)
    emulator.expire_images()
    late = submit_batch(hook, prompts[3:], name="late", first_index=3, response_format="url")
    wait_until_done(emulator, late)
    store = XaiStoreBatchResultsOperator(
        task_id="store", batch_id=f"{early},{late}", output_uri=output_uri, prompts=prompts
    )

    with pytest.raises(XaiBatchFailedError) as failure:
        store.execute(make_context("store"))

    message = str(failure.value)
    assert message.startswith(
        "3 result(s) of 6 that xAI reports as succeeded could not be read or stored. "
        f"3 of them because their temporary URLs expired ({EXPIRED_URLS_HINT}). The rest are stored;"
    )
    assert "1 hour after the batch completes" in message
    for index in range(3):
        assert re.search(
            rf"{index}/image 0: temporary image URL xai-tmp-imgen-\S+ is expired or gone \(HTTP 403\)", message
        )
    fingerprint = batch_fingerprint([early, late])
    assert stored_images(moto_s3, s3_bucket, "store") == [f"p{i:05d}-i00-{fingerprint}.jpg" for i in range(3, 6)]
    assert not any(key.endswith("manifest.json") for key in moto_s3.keys(s3_bucket))
    assert sorted(r.status for r in image_downloads(emulator)) == [200, 200, 200, 403, 403, 403]


def test_a_retry_of_the_store_stores_images_whose_download_failed(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    emulator.configure(batch_seconds=0, batch_validation_seconds=0)
    prompts = [f"Poster {i}" for i in range(3)]
    batch_id = submit_batch(hook, prompts, response_format="url")
    wait_until_done(emulator, batch_id)
    # one image comes cut short on the download and on its retry (max_retries=1): it is lost for this try
    emulator.configure(truncated_images=2)
    store = XaiStoreBatchResultsOperator(
        task_id="store", batch_id=batch_id, output_uri=output_uri, prompts=prompts, max_concurrency=1
    )
    with pytest.raises(XaiBatchFailedError, match=r"^1 result\(s\) of 3 .*could not be read or stored\. The rest are"):
        store.execute(make_context("store"))
    assert len(stored_images(moto_s3, s3_bucket, "store")) == 2

    uris = XaiStoreBatchResultsOperator(
        task_id="store", batch_id=batch_id, output_uri=output_uri, prompts=prompts
    ).execute(make_context("store"))

    fingerprint = batch_fingerprint([batch_id])
    assert stored_images(moto_s3, s3_bucket, "store") == [f"p{i:05d}-i00-{fingerprint}.jpg" for i in range(3)]
    assert len(uris) == 3
    manifest = manifest_of(moto_s3, s3_bucket, "store")
    assert manifest["errors"] == []
    assert manifest["totals"]["images"] == 3
    assert manifest["totals"]["cost_usd_ticks"] == emulator.cost_usd_ticks == 3 * BATCH_PRICE_TICKS
    # a later run reads both tries' records: the image stored once, its cost counted once
    XaiStoreBatchResultsOperator(task_id="store", batch_id=batch_id, output_uri=output_uri, prompts=prompts).execute(
        make_context("store")
    )
    later = manifest_of(moto_s3, s3_bucket, "store")
    assert [image["uri"] for image in later["images"]] == uris
    assert (later["errors"], later["totals"]["cost_usd_ticks"]) == ([], 3 * BATCH_PRICE_TICKS)


@pytest.mark.parametrize(
    ("action", "message"),
    [(refuse, f"xAI cancelled it: {REFUSED_MESSAGE}"), (expire, f"xAI cancelled it: {EXPIRED_MESSAGE}")],
    ids=["refused", "expired"],
)
def test_polling_operator_fails_without_retry_when_xai_cancels_the_batch(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str, action, message: str
) -> None:
    emulator.configure(batch_seconds=3600)
    operator = XaiBatchGenerateImagesOperator(
        task_id="generate", prompts=["a", "b", "c"], output_uri=output_uri, deferrable=False, poll_interval=0.1
    )

    with BatchWatcher(emulator, "generate", action), pytest.raises(AirflowFailException) as failure:
        operator.execute(make_context("generate"))

    [batch_id] = operator.submitted_batch_ids
    assert isinstance(failure.value.__cause__, XaiBatchRefusedError)
    assert str(failure.value) == (
        f"XaiBatchRefusedError: batch {batch_id}: 0 succeeded, 0 failed, 3 cancelled, 0 pending of 3; {message}"
    )
    assert moto_s3.keys(s3_bucket) == []  # nothing stored, no manifest
    assert emulator.images_billed == 0


def test_polling_operator_times_out(hook: XaiHook, emulator: XaiEmulator, output_uri: str) -> None:
    emulator.configure(batch_seconds=3600, batch_validation_seconds=0)
    operator = XaiBatchGenerateImagesOperator(
        task_id="generate", prompts=["a"], output_uri=output_uri, deferrable=False, poll_interval=0.1, timeout=0.3
    )

    started = time.monotonic()
    with pytest.raises(XaiBatchFailedError, match=r"^Timed out after 0\.3 s: batch \S+: .*1 pending of 1$"):
        operator.execute(make_context("generate"))

    assert 0.3 <= time.monotonic() - started < 5
    [batch_id] = operator.submitted_batch_ids
    assert len(calls(emulator, "GET", f"/v1/batches/{batch_id}")) >= 2


def test_polling_operator_waits_while_xai_validates_the_input_file(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    emulator.configure(batch_validation_seconds=0.6, batch_seconds=0.1)
    store = FakeStateStore()
    operator = XaiBatchGenerateImagesOperator(
        task_id="generate", prompts=["a", "b"], output_uri=output_uri, deferrable=False, poll_interval=0.1
    )

    uris = operator.execute(make_context("generate", state_store=store))

    [batch_id] = operator.submitted_batch_ids
    [create] = calls(emulator, "POST", "/v1/batches")
    polls = calls(emulator, "GET", f"/v1/batches/{batch_id}")
    # polls while every counter was 0 (validation lasts 0.6 s from the creation) did not end the wait
    assert len([poll for poll in polls if poll.time < create.time + 0.5]) >= 3
    assert len(uris) == 2
    assert len(stored_images(moto_s3, s3_bucket, "generate")) == 2


def test_store_refuses_a_batch_that_is_still_validating_or_pending(
    hook: XaiHook, emulator: XaiEmulator, output_uri: str, moto_s3, s3_bucket: str
) -> None:
    emulator.configure(batch_seconds=60, batch_validation_seconds=0.5)
    batch_id = submit(output_uri, PROMPTS[:3])
    store = XaiStoreBatchResultsOperator(task_id="store", batch_id=batch_id, output_uri=output_uri)

    with pytest.raises(XaiBatchFailedError, match=rf"^Batch {batch_id} is not finished \(0 pending of 0\).*Sensor"):
        store.execute(make_context("store"))
    time.sleep(0.6)
    with pytest.raises(XaiBatchFailedError, match=rf"^Batch {batch_id} is not finished \(3 pending of 3\).*Sensor"):
        store.execute(make_context("store"))

    assert calls(emulator, "GET", f"/v1/batches/{batch_id}/results") == []
    assert moto_s3.keys(s3_bucket) == []
