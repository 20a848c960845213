"""``connection``: the connection settings, their defaults and the errors that name a bad field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk import Connection

from airflow_provider_xai_image.api.images import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
)
from airflow_provider_xai_image.connection import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IMAGE_READ_TIMEOUT,
    DEFAULT_MAX_AMBIGUOUS_RETRIES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    XaiConnectionSettings,
)
from airflow_provider_xai_image.exceptions import XaiConnectionConfigError


def settings(host: str | None = "https://api.x.ai/v1", password: str | None = "xai-k", **extra: Any):
    conn = Connection(conn_id="xai_unit", conn_type="xai", host=host, password=password, extra=json.dumps(extra))
    return XaiConnectionSettings.from_connection(conn)


def test_defaults() -> None:
    parsed = settings(host=None)

    assert parsed.base_url == DEFAULT_BASE_URL
    assert (parsed.connect_timeout, parsed.read_timeout) == (DEFAULT_CONNECT_TIMEOUT, None)
    assert parsed.timeout(image_request=True) == (DEFAULT_CONNECT_TIMEOUT, DEFAULT_IMAGE_READ_TIMEOUT) == (10.0, 900.0)
    assert parsed.timeout() == (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT) == (10.0, 120.0)
    assert parsed.max_retries == DEFAULT_MAX_RETRIES
    assert parsed.max_ambiguous_retries == DEFAULT_MAX_AMBIGUOUS_RETRIES == 0
    assert parsed.default_model == DEFAULT_MODEL
    assert parsed.api_key.get_secret_value() == "xai-k"


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (30, (DEFAULT_CONNECT_TIMEOUT, 30.0)),
        (2.5, (DEFAULT_CONNECT_TIMEOUT, 2.5)),
        ("45", (DEFAULT_CONNECT_TIMEOUT, 45.0)),
        ([3, 60], (3.0, 60.0)),
        (["1.5", "20"], (1.5, 20.0)),
        (None, (DEFAULT_CONNECT_TIMEOUT, None)),
        ("", (DEFAULT_CONNECT_TIMEOUT, None)),
    ],
)
def test_timeout_as_a_number_or_connect_read_pair(timeout: Any, expected: tuple[float, float | None]) -> None:
    parsed = settings(timeout=timeout)

    assert (parsed.connect_timeout, parsed.read_timeout) == expected
    if expected[1] is not None:  # a timeout the connection sets applies to every call
        assert parsed.timeout() == parsed.timeout(image_request=True) == expected


@pytest.mark.parametrize("value", ["fast", [1, 2, 3], {"read": 5}])
def test_a_malformed_timeout_is_a_config_error(value: Any) -> None:
    with pytest.raises(XaiConnectionConfigError, match="'xai_unit': extra 'timeout' must be seconds"):
        settings(timeout=value)


@pytest.mark.parametrize(("value", "expected"), [(3, 3), ("2", 2), (0, 0), (None, 0)])
def test_max_ambiguous_retries(value: Any, expected: int) -> None:
    assert settings(max_ambiguous_retries=value).max_ambiguous_retries == expected


@pytest.mark.parametrize("value", [-1, "many", 1.5, True])
def test_a_bad_retry_count_is_a_config_error(value: Any) -> None:
    with pytest.raises(XaiConnectionConfigError, match="'max_ambiguous_retries' must be a whole number >= 0"):
        settings(max_ambiguous_retries=value)


@pytest.mark.parametrize(("value", "expected"), [(20, 20.0), ("12.5", 12.5), (0.5, 0.5), (None, 5.0), ("", 5.0)])
def test_requests_per_second(value: Any, expected: float) -> None:
    assert settings(requests_per_second=value).requests_per_second == expected


@pytest.mark.parametrize("value", [0, -5, "fast", True, float("inf"), float("nan"), [5]])
def test_a_bad_requests_per_second_is_a_config_error(value: Any) -> None:
    with pytest.raises(XaiConnectionConfigError, match="'requests_per_second' must be requests per second > 0"):
        settings(requests_per_second=value)


def test_prefixed_extras_of_the_ui_form() -> None:
    parsed = settings(
        extra__xai__timeout=12, extra__xai__max_retries="3", extra__xai__default_model="grok-imagine-image"
    )

    assert (parsed.read_timeout, parsed.max_retries, parsed.default_model) == (12.0, 3, "grok-imagine-image")


def test_plain_extras_win_over_prefixed_ones() -> None:
    parsed = settings(timeout=5, extra__xai__timeout=99, max_retries=0, extra__xai__max_retries=7)

    assert (parsed.read_timeout, parsed.max_retries) == (5.0, 0)


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("api.x.ai/v1", "https://api.x.ai/v1"),
        ("https://api.x.ai/v1/", "https://api.x.ai/v1"),
        ("http://127.0.0.1:8010/v1", "http://127.0.0.1:8010/v1"),
        ("proxy.internal:8443/xai/v1", "https://proxy.internal:8443/xai/v1"),
        ("", DEFAULT_BASE_URL),
    ],
)
def test_base_url_from_host_with_or_without_scheme(host: str, base_url: str) -> None:
    assert settings(host=host).base_url == base_url


@pytest.mark.parametrize(
    ("uri", "base_url"),
    [
        ("xai://:xai-k@api.x.ai/v1", "https://api.x.ai/v1"),
        ("xai://:xai-k@proxy.internal:8443/v1", "https://proxy.internal:8443/v1"),
    ],
)
def test_base_url_from_the_uri_form_keeps_port_and_path(uri: str, base_url: str) -> None:
    conn = Connection.from_uri(uri, conn_id="xai_unit")

    assert XaiConnectionSettings.from_connection(conn).base_url == base_url


@pytest.mark.parametrize("password", [None, ""])
def test_no_api_key_is_a_config_error(password: str | None) -> None:
    with pytest.raises(XaiConnectionConfigError, match="'xai_unit' has no API key"):
        settings(password=password)


def test_settings_repr_masks_the_key() -> None:
    parsed = settings(password="xai-very-secret-key-123")

    assert "xai-very-secret-key-123" not in repr(parsed)
    assert "xai-very-secret-key-123" not in repr(parsed.api_key)


@pytest.mark.parametrize("password", ["xai-k-123456\n", "  xai-k-123456 ", "\txai-k-123456\r\n"])
def test_whitespace_around_the_key_is_stripped(password: str) -> None:
    assert settings(password=password).api_key.get_secret_value() == "xai-k-123456"


@pytest.mark.parametrize("password", ["xai-k-12\n3456", "xai-k 123456", "xai-k-12\x003456", "xai-k-\u00e9123456"])
def test_a_key_no_header_can_carry_is_refused_without_being_shown(password: str) -> None:
    with pytest.raises(XaiConnectionConfigError) as raised:
        settings(password=password)

    message = str(raised.value)
    assert "'xai_unit'" in message
    assert "API key" in message
    for part in (password, password.strip(), "xai-k-12", "3456", "123456"):
        assert part not in message
