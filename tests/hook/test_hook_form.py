"""The connection form: its extra fields start empty, so a connection saved from the UI without
touching them follows the provider's defaults (also the defaults of a later version)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_xai_image import get_provider_info
from airflow_provider_xai_image.api.images import DEFAULT_MODEL
from airflow_provider_xai_image.connection import (
    CONN_FIELDS,
    DEFAULT_MAX_AMBIGUOUS_RETRIES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUESTS_PER_SECOND,
    UI_FIELD_BEHAVIOUR,
)
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator


def test_form_fields_have_no_default_but_show_it_as_a_placeholder() -> None:
    (connection_type,) = get_provider_info()["connection-types"]
    for name, field in connection_type["conn-fields"].items():
        assert "default" not in field["schema"], f"{name} would be written into every connection saved from the UI"
        assert UI_FIELD_BEHAVIOUR["placeholders"][name], f"{name} shows no default"
    assert set(CONN_FIELDS) == {
        "timeout",
        "max_retries",
        "max_ambiguous_retries",
        "requests_per_second",
        "default_model",
    }


@pytest.mark.parametrize("empty", [None, ""])
def test_a_ui_style_connection_without_extras_uses_the_defaults(
    xai_emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch, empty: Any
) -> None:
    extra = {name: empty for name in CONN_FIELDS}
    conn = {"conn_type": "xai", "password": xai_emulator.api_key, "host": xai_emulator.base_url, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_XAI_UI", json.dumps(conn))
    hook = XaiHook(xai_conn_id="xai_ui")
    settings = hook.settings
    assert settings.read_timeout is None
    assert settings.timeout(image_request=True) == (10.0, 900.0)
    assert (settings.max_retries, settings.max_ambiguous_retries) == (
        DEFAULT_MAX_RETRIES,
        DEFAULT_MAX_AMBIGUOUS_RETRIES,
    )
    assert settings.requests_per_second == DEFAULT_REQUESTS_PER_SECOND == 5.0
    assert settings.default_model == DEFAULT_MODEL
    assert hook.generate_images("a lighthouse").model == DEFAULT_MODEL
