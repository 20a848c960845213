"""
The Batch API with submit / sense / fetch: submit prompts as one batch (cheaper, not rate limited),
wait for it with a deferrable sensor that holds no worker, then store the images in shares, one mapped
task per share (on as many workers at once), write the job's one manifest from theirs, and use the paths.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, XComArg
from xai_example_utils import OUTPUT_URI, POLL_INTERVAL, check_images

from airflow_provider_xai_image.operators.batch import (
    XaiAssembleManifestOperator,
    XaiBatchGenerateImagesOperator,
    XaiStoreBatchResultsOperator,
)
from airflow_provider_xai_image.sensors.batch import XaiBatchSensor

PROMPTS = [f"Catalogue photo of item {sku}: a wooden toy, white background" for sku in range(1, 21)]
BATCH_ID = "{{ ti.xcom_pull(task_ids='submit', key='batch_id') }}"
#: Mapped store tasks, each storing a disjoint share of the results (prompt index % SHARES).
SHARES = 4

with DAG(
    dag_id="xai_batch_images",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["xai", "example"],
    doc_md=__doc__,
):
    submit = XaiBatchGenerateImagesOperator(
        task_id="submit",
        prompts=PROMPTS,
        output_uri=OUTPUT_URI,
        resolution="1k",
        wait_for_completion=False,
    )
    wait = XaiBatchSensor(
        task_id="wait",
        batch_id=BATCH_ID,
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        max_failed_fraction=0.05,
    )
    store = XaiStoreBatchResultsOperator.partial(
        task_id="store",
        batch_id=BATCH_ID,
        output_uri=OUTPUT_URI,
        prompts=PROMPTS,
        shares=SHARES,
    ).expand(share=list(range(SHARES)))
    manifest = XaiAssembleManifestOperator(
        task_id="manifest",
        batch_id=BATCH_ID,
        output_uri=OUTPUT_URI,
        share_manifests=XComArg(store, key="manifest"),
    )

    submit >> wait >> store
    check_images(manifest.output)
