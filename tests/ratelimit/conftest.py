"""Fixtures of the rate-limit tests: an emulator behind ``xai_default`` with no retries, and an output folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from ratelimit_support import connect

from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator


@pytest.fixture
def emulator(xai_emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> XaiEmulator:
    """The plugin's emulator as ``xai_default`` with ``max_retries=0``: any 429 a request retried on its
    own (not through the limiter) would fail it."""
    connect(monkeypatch, xai_emulator)
    return xai_emulator


@pytest.fixture
def hook(emulator: XaiEmulator) -> XaiHook:
    return XaiHook()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"
