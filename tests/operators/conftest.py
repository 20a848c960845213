"""Fixtures of the XaiGenerateImagesOperator tests run in-process (DAG tests start their own emulators)."""

from __future__ import annotations

import pytest
from operators_support import conn_json

from airflow_provider_xai_image.testing import XaiEmulator


@pytest.fixture
def emulator(xai_emulator: XaiEmulator) -> XaiEmulator:
    """The plugin's emulator, 429s asking for ``Retry-After: 0``."""
    xai_emulator.configure(retry_after=0)
    return xai_emulator


@pytest.fixture
def xai_conn(emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> XaiEmulator:
    """``xai_default`` (as ``AIRFLOW_CONN_XAI_DEFAULT``) pointing at the emulator, ``max_retries`` 1."""
    monkeypatch.setenv("AIRFLOW_CONN_XAI_DEFAULT", conn_json(emulator))
    return emulator
