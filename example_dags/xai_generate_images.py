"""
Generate images from a list of prompts, check every stored path, edit each image, and build a gallery.

The images land under ``XAI_EXAMPLE_OUTPUT_URI`` (default ``./demo-output/``); downstream tasks get
their paths through XCom, never the bytes.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, ObjectStoragePath, XComArg, task
from xai_example_utils import OUTPUT_URI, check_images, every_item, write_gallery

from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator

PROMPTS = [
    "A ceramic coffee mug on a walnut desk, soft morning light, product photo",
    "A pair of red running shoes on a white background, studio lighting",
    "A minimalist desk lamp in brushed brass, catalogue shot",
]

with DAG(
    dag_id="xai_generate_images",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["xai", "example"],
    doc_md=__doc__,
):
    generate = XaiGenerateImagesOperator(
        task_id="generate",
        prompt=PROMPTS,
        output_uri=OUTPUT_URI,
        n=2,
        aspect_ratio="4:3",
        resolution="1k",
        max_cost_usd=1.00,
    )

    edit = XaiGenerateImagesOperator.partial(
        task_id="edit",
        prompt="The same object as a loose watercolour sketch",
        output_uri=OUTPUT_URI,
    ).expand(source_images=generate.output)

    @task
    def gallery(generate_manifest: str, edit_manifests: list[str]) -> str:
        """Write index.html beside the images: each edit beside its source, prompts, revised prompts (when xAI
        sent any) and cost."""
        return write_gallery([generate_manifest, *every_item(edit_manifests)], ObjectStoragePath(OUTPUT_URI))

    check_images(generate.output) >> edit
    check_images.override(task_id="check_edits")(edit.output) >> gallery(
        XComArg(generate, key="manifest"), XComArg(edit, key="manifest")
    )
