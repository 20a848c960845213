"""Fixtures of the batch tests: an emulator, its ``xai_default`` connection, and a moto S3 output folder.

Everything goes over real HTTP: the emulator (``xai_emulator``, from this package's pytest plugin) on
loopback, S3 through the session's moto server (``s3://aws_moto@<bucket>/...``). In-process tests get
the connection as ``AIRFLOW_CONN_XAI_DEFAULT``; DAG subprocesses get it through ``batch_support.dag_env``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from batch_support import conn_json

from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator


@pytest.fixture
def emulator(xai_emulator: XaiEmulator) -> XaiEmulator:
    """The plugin's emulator; batch requests complete 1 s after the input file was validated (0.2 s);
    creations unthrottled."""
    xai_emulator.configure(batch_seconds=1.0, batch_create_per_second=None, retry_after=0)
    return xai_emulator


@pytest.fixture
def hook(emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> XaiHook:
    """``xai_default`` pointing at the emulator (set as ``AIRFLOW_CONN_XAI_DEFAULT``), and a hook on it."""
    monkeypatch.setenv("AIRFLOW_CONN_XAI_DEFAULT", conn_json(emulator))
    return XaiHook()


@pytest.fixture
def output_uri(moto_s3, s3_bucket: str) -> str:
    """``s3://aws_moto@<fresh bucket>/images/``."""
    return moto_s3.url(s3_bucket, "images/")


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every batch input file uploaded in this process (still sent to the emulator): ``(filename, lines)``."""
    sent: list[tuple[str, list[dict[str, Any]]]] = []
    original = XaiHook.upload_batch_file

    def recording(self: XaiHook, filename: str, content: bytes) -> str:
        sent.append((filename, [json.loads(line) for line in content.splitlines()]))
        return original(self, filename, content)

    monkeypatch.setattr(XaiHook, "upload_batch_file", recording)
    return sent
