"""
Review before publishing: generate catalogue images, let a person approve them in the Airflow UI, go on
with the approved images only, and generate the rejected prompts once more.

The review task waits in the UI's "Required actions" (Airflow 3.3+: the task's "awaiting input"
state; Airflow 3.1 and 3.2: deferred) until someone ticks the images that pass, or for
``XAI_EXAMPLE_REVIEW_TIMEOUT_SECONDS`` (default two days), after which every image counts as rejected.
Approved images are copied under ``<XAI_EXAMPLE_OUTPUT_URI>/approved/<run_id>/``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.sdk import DAG, ObjectStoragePath, XComArg, task
from xai_example_utils import OUTPUT_URI, check_images

from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.operators.review import REJECTED_XCOM_KEY, XaiReviewImagesOperator

#: How long the review waits for a decision.
REVIEW_TIMEOUT = timedelta(seconds=float(os.environ.get("XAI_EXAMPLE_REVIEW_TIMEOUT_SECONDS", 2 * 86400)))
PROMPTS = [
    "A ceramic coffee mug on a walnut desk, soft morning light, product photo",
    "A pair of red running shoes on a white background, studio lighting",
]

with DAG(
    dag_id="xai_review_images",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["xai", "example", "review"],
    doc_md=__doc__,
):
    generate = XaiGenerateImagesOperator(task_id="generate", prompt=PROMPTS, output_uri=OUTPUT_URI, n=2)

    review = XaiReviewImagesOperator(
        task_id="review",
        manifest=XComArg(generate, key="manifest"),
        publish_uri=OUTPUT_URI + "approved/{{ run_id }}/",
        response_timeout=REVIEW_TIMEOUT,
        defaults="Reject all",  # nothing is published when nobody decides in time
    )

    @task
    def rejected_prompts(manifest_uri: str, rejected: list[str]) -> list[str]:
        """The prompts of the rejected images, each once (skipped when every image passed)."""
        images = json.loads(ObjectStoragePath(manifest_uri).read_text())["images"]
        prompts = list(dict.fromkeys(image["prompt"] for image in images if image["uri"] in rejected))
        if not prompts:
            raise AirflowSkipException("No image was rejected.")
        return prompts

    regenerate = XaiGenerateImagesOperator(
        task_id="regenerate",
        prompt=rejected_prompts(XComArg(generate, key="manifest"), XComArg(review, key=REJECTED_XCOM_KEY)),
        output_uri=OUTPUT_URI,
    )

    check_images.override(task_id="use_approved")(review.output)
