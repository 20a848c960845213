"""Dynamic task mapping: one mapped task instance per prompt, and per set of keyword arguments."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG
from xai_example_utils import OUTPUT_URI, check_images

from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator

with DAG(
    dag_id="xai_generate_mapped",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["xai", "example"],
    doc_md=__doc__,
):
    by_prompt = XaiGenerateImagesOperator.partial(
        task_id="by_prompt", output_uri=OUTPUT_URI, aspect_ratio="1:1"
    ).expand(prompt=["A lighthouse at dusk", "A lighthouse at dawn", "A lighthouse in fog"])

    by_kwargs = XaiGenerateImagesOperator.partial(task_id="by_kwargs", output_uri=OUTPUT_URI).expand_kwargs(
        [
            {"prompt": "A banner of mountain peaks", "aspect_ratio": "20:9"},
            {"prompt": "A phone wallpaper of a forest", "aspect_ratio": "9:19.5", "n": 2},
        ]
    )

    check_images.override(task_id="count_by_prompt")(by_prompt.output)
    check_images.override(task_id="count_by_kwargs")(by_kwargs.output)
