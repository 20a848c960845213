"""Fixtures of the fault tests: an emulator behind ``xai_default`` and a local output folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults_support import conn_json

from airflow_provider_xai_image.testing import XaiEmulator


@pytest.fixture
def emulator(xai_emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> XaiEmulator:
    """The plugin's emulator as ``xai_default``; 429s ask for ``Retry-After: 0``."""
    xai_emulator.configure(retry_after=0)
    monkeypatch.setenv("AIRFLOW_CONN_XAI_DEFAULT", conn_json(xai_emulator))
    return xai_emulator


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def output_uri(out: Path) -> str:
    return f"file://{out}"
