"""The hook against the emulator, through what it takes from Airflow: the connection, the secret masker,
and the extras the connection form writes.

The async path (``aget_connection``) needs a task's or the triggerer's supervisor before Airflow 3.3: the
deferrable example DAGs (test_compat_example_dags.py) run it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import redact

from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator


def connect(
    monkeypatch: pytest.MonkeyPatch, emulator: XaiEmulator, conn_id: str = "xai_compat", **extra: Any
) -> XaiHook:
    conn = {"conn_type": "xai", "password": emulator.api_key, "host": emulator.base_url, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return XaiHook(xai_conn_id=conn_id)


def test_hook_reads_the_connection_and_generates(xai_emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = connect(monkeypatch, xai_emulator, max_retries=1)

    ok, message = hook.test_connection()
    assert ok, message
    assert xai_emulator.api_key not in message
    assert hook.list_image_models()
    result = hook.generate_images("a lighthouse at dusk", n=2)
    assert len(result.images) == 2
    assert xai_emulator.images_billed == 2
    # The key is registered with Airflow's secret masker, so task logs never show it.
    assert xai_emulator.api_key not in str(redact(f"key: {xai_emulator.api_key}"))


def test_hook_reads_what_the_connection_form_writes(xai_emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The form stores its extra fields prefixed; before Airflow 3.2 (wtforms fields) a number is a string."""
    hook = connect(
        monkeypatch,
        xai_emulator,
        extra__xai__timeout="7.5",
        extra__xai__max_retries=1,
        extra__xai__max_ambiguous_retries=None,
        extra__xai__default_model="",
    )

    settings = hook.settings
    assert (settings.read_timeout, settings.max_retries, settings.max_ambiguous_retries) == (7.5, 1, 0)
    assert hook.generate_images("a form").model == settings.default_model
