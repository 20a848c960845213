"""The DAG of the gallery tests: image tasks (one mapped) writing to ``XAI_GALLERY_OUTPUT_URI``, and a
task that is not an image task."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.testing import MODERATION_MARKER

OUTPUT_URI = os.environ["XAI_GALLERY_OUTPUT_URI"]

with DAG(dag_id="xai_gallery_test", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    XaiGenerateImagesOperator(
        task_id="generate",
        prompt=["A red <b>kite</b> & a blue sky", f"A storm at sea {MODERATION_MARKER}", "A lighthouse at dusk"],
        n=2,
        output_uri=OUTPUT_URI,
        on_moderation="skip",
    )
    XaiGenerateImagesOperator(task_id="other", prompt="A green teapot", output_uri=OUTPUT_URI)
    XaiGenerateImagesOperator.partial(task_id="mapped", output_uri=OUTPUT_URI).expand(
        prompt=["A yellow boat", "A purple hat"]
    )

    @task
    def no_images() -> str:
        """A task of another kind: no manifest."""
        return "nothing to see"

    no_images()
