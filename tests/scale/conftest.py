"""Fixtures of the scale tests: an emulator behind ``xai_default`` (for DAG subprocesses too) and a fresh
moto S3 output folder."""

from __future__ import annotations

import json

import pytest

from airflow_provider_xai_image.testing import XaiEmulator


@pytest.fixture
def emulator(xai_emulator: XaiEmulator) -> XaiEmulator:
    """The plugin's emulator; batch requests complete 0.3 s after validation; creations unthrottled."""
    xai_emulator.configure(batch_seconds=0.3, batch_create_per_second=None, retry_after=0)
    return xai_emulator


@pytest.fixture
def dag_env(emulator: XaiEmulator) -> dict[str, str]:
    """The environment of a DAG subprocess: ``xai_default`` on the emulator (moto's connection is in
    ``os.environ`` already)."""
    conn = {"conn_type": "xai", "password": emulator.api_key, "host": emulator.base_url, "extra": {"max_retries": 1}}
    return {"AIRFLOW_CONN_XAI_DEFAULT": json.dumps(conn)}


@pytest.fixture
def output_uri(moto_s3, s3_bucket: str) -> str:
    """``s3://aws_moto@<fresh bucket>/images/``."""
    return moto_s3.url(s3_bucket, "images/")
