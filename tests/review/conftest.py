"""Fixture of the review tests: Airflow's services with the review test DAG and the review example DAG
(whose review times out unanswered), the emulator and moto S3."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from review_support import DAG_ID, REVIEW_TESTS, AirflowServices

from airflow_provider_xai_image.testing import XaiEmulator

EXAMPLE_DAGS = REVIEW_TESTS.parents[1] / "example_dags"
EXAMPLE_FILES = ("xai_review_images.py", "xai_example_utils.py", ".airflowignore")
#: Nobody answers the example's review: it times out after this long. The timeout resumes the task as a
#: response does, so it must come after the parked worker's exit has reached the scheduler (see
#: ``AirflowServices.wait_for_input``): that exit comes up to a worker heartbeat interval (5 s) after the
#: task parked, later on a loaded machine.
EXAMPLE_REVIEW_TIMEOUT_SECONDS = 20


@pytest.fixture(scope="package")
def review_services(moto_s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The services (always stopped at the end), an emulator, and the bucket images and approvals go to."""
    workdir = tmp_path_factory.mktemp("review")
    bucket = moto_s3.create_bucket("review")
    with XaiEmulator() as emulator:
        services = AirflowServices.start(
            workdir,
            [REVIEW_TESTS / "review_dag.py", *(EXAMPLE_DAGS / name for name in EXAMPLE_FILES)],
            {
                "AIRFLOW_CONN_XAI_DEFAULT": emulator.connection_uri(),
                "XAI_REVIEW_OUTPUT_URI": f"s3://aws_moto@{bucket}/images/",
                "XAI_REVIEW_PUBLISH_URI": f"s3://aws_moto@{bucket}/approved/",
                "XAI_EXAMPLE_OUTPUT_URI": f"s3://aws_moto@{bucket}/examples/",
                "XAI_EXAMPLE_REVIEW_TIMEOUT_SECONDS": str(EXAMPLE_REVIEW_TIMEOUT_SECONDS),
            },
            denied_dag_id=DAG_ID,
        )
        try:
            yield SimpleNamespace(services=services, emulator=emulator, bucket=bucket, moto_s3=moto_s3)
        finally:
            services.stop()
