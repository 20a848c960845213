"""Helpers of the rate-limit tests: a connection to the emulator with chosen extras."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_xai_image.testing import XaiEmulator


def connect(monkeypatch: pytest.MonkeyPatch, emulator: XaiEmulator, **extra: Any) -> None:
    """Make ``xai_default`` a connection to ``emulator`` with ``extra`` (default ``max_retries=0``: any 429
    a request retried on its own, not through the pacing, would fail it)."""
    conn = {
        "conn_type": "xai",
        "password": emulator.api_key,
        "host": emulator.base_url,
        "extra": {"max_retries": 0, "timeout": 20, **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_XAI_DEFAULT", json.dumps(conn))
