"""A batch job's results stored by mapped tasks, each a share, and one manifest for the job written last:
``airflow dags test`` of a DAG with ``XaiStoreBatchResultsOperator.partial(...).expand(share=...)`` and
``XaiAssembleManifestOperator``, against the emulator over HTTP and the moto S3 server; then one share
run again after a crash (``airflow tasks test --map-index``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_xai_image.exceptions import XaiRequestValidationError
from airflow_provider_xai_image.ledger.records import batch_fingerprint
from airflow_provider_xai_image.operators.batch import XaiAssembleManifestOperator, XaiStoreBatchResultsOperator
from airflow_provider_xai_image.storage.layout import safe_segment
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, XaiEmulator

pytestmark = pytest.mark.dag

SHARES = 3
FAILED = (4, 31)  # both in share 1
PROMPTS = [f"Poster {i}" + (f" {BATCH_FAILURE_MARKER}" if i in FAILED else "") for i in range(60)]
MAPPED_STORE_DAG = """
from datetime import datetime

from airflow.sdk import DAG, XComArg

from airflow_provider_xai_image.operators.batch import (
    XaiAssembleManifestOperator,
    XaiBatchGenerateImagesOperator,
    XaiStoreBatchResultsOperator,
)
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor

OUTPUT = %(output_uri)r
PROMPTS = %(prompts)r
BATCH_ID = "{{ ti.xcom_pull(task_ids='submit', key='batch_id') }}"

with DAG(dag_id="xai_scale_mapped_store", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    submit = XaiBatchGenerateImagesOperator(
        task_id="submit", prompts=PROMPTS, output_uri=OUTPUT, response_format="url", wait_for_completion=False
    )
    wait = XaiBatchSensor(task_id="wait", batch_id=BATCH_ID, poke_interval=0.2, max_failed_fraction=0.05)
    store = XaiStoreBatchResultsOperator.partial(
        task_id="store", batch_id=BATCH_ID, output_uri=OUTPUT, prompts=PROMPTS, shares=%(shares)d, max_concurrency=4
    ).expand(share=list(range(%(shares)d)))
    manifest = XaiAssembleManifestOperator(
        task_id="manifest", batch_id=BATCH_ID, output_uri=OUTPUT, share_manifests=XComArg(store, key="manifest")
    )
    submit >> wait >> store
"""


def downloads(emulator: XaiEmulator) -> int:
    return sum(1 for r in emulator.requests_log if r.method == "GET" and r.path.startswith("/tmp-images/"))


def results_pages(emulator: XaiEmulator, batch_id: str) -> int:
    return sum(1 for r in emulator.requests_log if r.method == "GET" and r.path == f"/v1/batches/{batch_id}/results")


def read_json(moto_s3: Any, bucket: str, uri: str) -> dict[str, Any]:
    return json.loads(moto_s3.get_bytes(bucket, uri.split(f"{bucket}/", 1)[1]))


def test_a_mapped_store_writes_each_image_once_and_one_manifest_and_a_share_resumes_after_a_crash(
    dag_runner, emulator: XaiEmulator, dag_env: dict[str, str], output_uri: str, moto_s3, s3_bucket: str, tmp_path: Path
) -> None:
    dag = tmp_path / "xai_scale_mapped_store.py"
    dag.write_text(MAPPED_STORE_DAG % {"output_uri": output_uri, "prompts": PROMPTS, "shares": SHARES})

    first = dag_runner.run(dag, env=dag_env)

    first.assert_task_states(
        submit="success", wait="success", manifest="success", **{f"store[{s}]": "success" for s in range(SHARES)}
    )
    batch_id = first.xcom("submit", key="batch_id")
    fingerprint = batch_fingerprint([batch_id])
    run = f"images/{safe_segment(first.run_id)}"
    stored = [i for i in range(60) if i not in FAILED]
    # each image stored once, by the share its prompt index falls in; each downloaded and billed once
    expected = {i: f"{run}/store/map-{i % SHARES}/p{i:05d}-i00-{fingerprint}.jpg" for i in stored}
    images = [key for key in moto_s3.keys(s3_bucket, f"{run}/") if key.endswith(".jpg")]
    assert sorted(images) == sorted(expected.values())
    assert downloads(emulator) == len(stored)
    assert emulator.images_billed == len(stored)
    assert results_pages(emulator, batch_id) == SHARES  # every share reads the results (one page of 60)
    # a manifest per share, its own prompts only
    for share in range(SHARES):
        manifest = read_json(moto_s3, s3_bucket, first.xcom("store", key="manifest", map_index=share))
        assert [image["prompt_index"] for image in manifest["images"]] == [i for i in stored if i % SHARES == share]
        assert manifest["parameters"]["share"] == share
        assert first.xcom("store", map_index=share) == [image["uri"] for image in manifest["images"]]
    # one manifest for the job, written last: every image once, in prompt order, and the failures
    job_uri = first.xcom("manifest", key="manifest")
    assert job_uri == moto_s3.url(s3_bucket, f"{run}/manifest/manifest.json")
    job = read_json(moto_s3, s3_bucket, job_uri)
    assert [image["uri"] for image in job["images"]] == [moto_s3.url(s3_bucket, expected[i]) for i in stored]
    assert [image["prompt"] for image in job["images"]] == [PROMPTS[i] for i in stored]
    assert first.xcom("manifest") == [image["uri"] for image in job["images"]]
    assert [error["prompt_index"] for error in job["errors"]] == list(FAILED)
    assert job["superseded"] == []
    totals = {key: job["totals"][key] for key in ("requests", "images", "failed_requests", "cost_usd_ticks")}
    assert totals == {"requests": 60, "images": 58, "failed_requests": 2, "cost_usd_ticks": emulator.cost_usd_ticks}
    assert job["parameters"]["share_manifests"] == [first.xcom("store", key="manifest", map_index=s) for s in range(3)]
    # the job's Asset event comes once, from the manifest step; the shares record none
    assert [(event.source_task_id, event.extra) for event in first.asset_events] == [
        ("manifest", {"images": 58, "manifest": job_uri})
    ]

    # Share 1's worker died: its manifest and unsaved records are gone, and two images were never published.
    share_prefix = f"{run}/store/map-1/"
    lost_images = [expected[1], expected[7]]
    for key in moto_s3.keys(s3_bucket, share_prefix):
        if key.endswith("manifest.json") or "/_records/" in key or key in lost_images:
            moto_s3.client.delete_object(Bucket=s3_bucket, Key=key)
    pages_before = results_pages(emulator, batch_id)

    rerun = dag_runner.run_task(first, "store", map_index=1, env=dag_env)

    # the stored images are recovered from storage, not downloaded (nor paid) again; the two lost ones are
    assert downloads(emulator) == len(stored) + 2
    assert emulator.images_billed == len(stored)
    assert results_pages(emulator, batch_id) == pages_before + 1
    rerun.assert_in_output("Recovered 16 stored image(s)")
    assert sorted(key for key in moto_s3.keys(s3_bucket, f"{run}/") if key.endswith(".jpg")) == sorted(
        expected.values()
    )
    assert any("/_records/" in key for key in moto_s3.keys(s3_bucket, share_prefix))  # recovered ones recorded

    again = dag_runner.run_task(first, "manifest", env=dag_env)

    rewritten = read_json(moto_s3, s3_bucket, again.xcom("manifest", key="manifest"))
    assert [image["uri"] for image in rewritten["images"]] == [image["uri"] for image in job["images"]]
    assert rewritten["errors"] == job["errors"]
    assert (rewritten["totals"]["requests"], rewritten["totals"]["images"]) == (60, 58)


def test_shares_are_checked_when_the_dag_is_parsed_and_the_assembler_takes_only_manifests() -> None:
    output = "file:///tmp/xai-scale-unused/"
    with pytest.raises(XaiRequestValidationError, match=r"share: must be 0\.\.3 \(shares=4\) \(got 4\)"):
        XaiStoreBatchResultsOperator(task_id="store", batch_id="batch-1", output_uri=output, share=4, shares=4)
    with pytest.raises(XaiRequestValidationError, match=r"shares: Input should be greater than or equal to 1"):
        XaiStoreBatchResultsOperator(task_id="store", batch_id="batch-1", output_uri=output, shares=0)
    assembler = XaiAssembleManifestOperator(
        task_id="manifest", batch_id="batch-1", output_uri=output, share_manifests=[f"{output}store/map-0/"]
    )
    with pytest.raises(AirflowFailException, match=r"share_manifests: must be the shares' manifest URIs"):
        assembler.execute({})
