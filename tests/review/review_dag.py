"""The DAG of the review tests: 4 images (2 prompts x 2, one prompt carrying Markdown that would load an
image from elsewhere), their review, and a task that gets the approved URIs only.

``XAI_REVIEW_OUTPUT_URI``: where images go; ``XAI_REVIEW_PUBLISH_URI``: where approved images go (one
folder per run).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, XComArg, task

from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.operators.review import XaiReviewImagesOperator

DAG_ID = "xai_review_test"
#: A prompt a browser must not act on when it shows the form.
MARKUP_PROMPT = "A kite ![x](http://elsewhere.invalid/x.png) <img src=http://elsewhere.invalid/y.png> *bold*"

with DAG(dag_id=DAG_ID, schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    generate = XaiGenerateImagesOperator(
        task_id="generate",
        prompt=["A lighthouse at dusk", MARKUP_PROMPT],
        n=2,
        output_uri=os.environ["XAI_REVIEW_OUTPUT_URI"],
    )
    review = XaiReviewImagesOperator(
        task_id="review",
        manifest=XComArg(generate, key="manifest"),
        publish_uri=os.environ["XAI_REVIEW_PUBLISH_URI"] + "{{ run_id }}/",
        response_timeout=timedelta(hours=1),
    )

    @task
    def use_approved(uris: list[str]) -> list[str]:
        """Gets exactly the approved URIs."""
        return list(uris)

    use_approved(review.output)
