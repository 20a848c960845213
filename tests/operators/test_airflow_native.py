"""Airflow-native outputs: Asset events only when images exist, users' outlets left alone, a templated
connection id, hook-level lineage and OpenLineage datasets."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.lineage import HookLineageCollector
from operators_support import conn_env, make_context, write_dag
from support.images import jpeg_file

from airflow_provider_xai_image.operators import lineage
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.testing import XaiEmulator

NATIVE_DAG = """
    from datetime import datetime

    from airflow.sdk import DAG, Asset
    from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator
    from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator

    OUT = "file://{{ params.out }}/"

    with DAG(
        dag_id="xai_native",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        params={"out": "/tmp", "conn": "xai_default"},
    ):
        XaiBatchGenerateImagesOperator(
            task_id="submit",
            prompts=["a fox", "a hare"],
            output_uri=OUT,
            xai_conn_id="{{ params.conn }}",
            wait_for_completion=False,
        )
        XaiGenerateImagesOperator(
            task_id="generate",
            prompt="a heron",
            output_uri=OUT,
            xai_conn_id="{{ params.conn }}",
            outlets=[Asset("s3://catalogue/herons", extra={"owner": "birds team"})],
        )
"""


@pytest.mark.dag
def test_events_only_with_images_and_user_outlets_untouched(run_dag_test: Any, tmp_path: Path) -> None:
    with XaiEmulator() as emulator:
        result = run_dag_test(
            write_dag(tmp_path / "dags", "xai_native", NATIVE_DAG),
            env=conn_env("xai_templated", emulator),  # only reachable through the templated conn id
            conf={"out": str(tmp_path / "out"), "conn": "xai_templated"},
        )
    assert result.task_states == {"submit": "success", "generate": "success"}
    events = [(event.source_task_id, event.asset_uri.rstrip("/"), event.extra) for event in result.asset_events]
    manifest = result.xcom("generate", key="manifest")
    assert sorted(events) == sorted(
        [
            ("generate", "s3://catalogue/herons", {}),  # the user's outlet: its event extra is not ours to set
            ("generate", f"file://{tmp_path}/out", {"images": 1, "manifest": manifest}),
        ]
    )  # and nothing for "submit": a submitted batch has no images yet


def test_lineage_reports_sources_in_and_the_task_folder_out(
    xai_conn: XaiEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = HookLineageCollector()
    monkeypatch.setattr(lineage, "get_hook_lineage_collector", lambda: collector)
    source = jpeg_file(tmp_path / "in" / "mug.jpg")
    operator = XaiGenerateImagesOperator(
        task_id="generate",
        prompt="as a watercolour",
        output_uri=f"file://{tmp_path}/out",
        source_images=[f"file://{source}", f"data:image/jpeg;base64,{base64.b64encode(source.read_bytes()).decode()}"],
    )
    ctx = make_context()
    operator.execute(ctx)
    folder = ctx["ti"].xcoms["manifest"].rsplit("/", 1)[0]
    collected = collector.collected_assets
    assert [asset.asset.uri for asset in collected.inputs] == [f"file://{source}"]
    assert [asset.asset.uri for asset in collected.outputs] == [folder]
    facets = operator.get_openlineage_facets_on_complete(task_instance=None)
    assert [(dataset.namespace, dataset.name) for dataset in facets.inputs] == [("file", str(source))]
    assert [(dataset.namespace, dataset.name) for dataset in facets.outputs] == [
        ("file", folder.removeprefix("file://"))
    ]
    assert json.dumps([dataset.name for dataset in facets.outputs])  # plain, serialisable names
