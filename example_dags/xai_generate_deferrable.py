"""Deferrable generation: requests run on the triggerer and the worker is free while xAI works."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG
from xai_example_utils import OUTPUT_URI, check_images

from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator

with DAG(
    dag_id="xai_generate_deferrable",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["xai", "example"],
    doc_md=__doc__,
):
    generate = XaiGenerateImagesOperator(
        task_id="generate",
        prompt=[f"Thumbnail for article {number}: an abstract geometric illustration" for number in range(6)],
        output_uri=OUTPUT_URI,
        resolution="1k",
        deferrable=True,
    )

    check_images(generate.output)
