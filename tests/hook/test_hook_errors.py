"""Every typed error of the hook, what is retried and what is not, via the emulator's faults."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_xai_image.exceptions import (
    XaiApiError,
    XaiAuthError,
    XaiBadRequestError,
    XaiConnectionConfigError,
    XaiError,
    XaiPermanentError,
    XaiPossiblyBilledError,
    XaiRateLimitError,
    XaiRequestValidationError,
    XaiServerError,
    XaiTransientError,
)
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator


def statuses(emulator: XaiEmulator) -> list[int | None]:
    return [record.status for record in emulator.requests_log]


# -- client errors: typed, not retried ------------------------------------------------------------


def test_wrong_key_is_an_auth_error_and_not_retried(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    hook = set_connection(api_key="xai-this-key-is-wrong-42424242", max_retries=2)

    with pytest.raises(XaiAuthError) as raised:
        hook.generate_images("a cat")

    error = raised.value
    assert (error.method, error.path, error.status) == ("POST", "images/generations", 401)
    assert str(error).startswith("xAI POST /images/generations failed (HTTP 401): ")
    assert "Incorrect API key provided" in error.detail
    assert statuses(emulator) == [401]


def test_403_is_an_auth_error(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(status_script=[403])

    with pytest.raises(XaiAuthError, match=r"GET /image-generation-models failed \(HTTP 403\): .*Emulated 403"):
        hook.list_image_models()
    assert statuses(emulator) == [403]


def test_invalid_field_sent_raw_is_a_422_bad_request_not_retried(hook: XaiHook, emulator: XaiEmulator) -> None:
    with pytest.raises(XaiBadRequestError) as raised:
        hook.call("POST", "images/generations", json_body={"prompt": "a cat", "size": "1024x1024"})

    error = raised.value
    assert error.status == 422
    assert "POST /images/generations" in str(error)
    assert "HTTP 422" in str(error)
    assert "size: Extra inputs are not permitted" in str(error)
    assert statuses(emulator) == [422]


@pytest.mark.parametrize("model", ["grok-9-image", "grok-2-image"], ids=["unknown", "retired"])
def test_unknown_or_retired_model_is_a_404_bad_request(hook: XaiHook, emulator: XaiEmulator, model: str) -> None:
    with pytest.raises(XaiBadRequestError) as raised:
        hook.generate_images("a cat", model=model)

    assert raised.value.status == 404
    assert f"The model {model} does not exist" in str(raised.value)
    assert statuses(emulator) == [404]


def test_unknown_batch_is_a_404_bad_request(hook: XaiHook, emulator: XaiEmulator) -> None:
    with pytest.raises(XaiBadRequestError) as raised:
        hook.get_batch("batch_does-not-exist")

    assert raised.value.status == 404
    assert str(raised.value) == (
        "xAI GET /batches/batch_does-not-exist failed (HTTP 404): "
        "Some requested entity was not found: Batch batch_does-not-exist not found."
    )
    assert statuses(emulator) == [404]


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_client_errors_are_bad_requests_sent_once(hook: XaiHook, emulator: XaiEmulator, status: int) -> None:
    emulator.configure(status_script=[status])

    with pytest.raises(XaiBadRequestError, match=f"HTTP {status}"):
        hook.create_batch("x", "file_x")
    assert statuses(emulator) == [status]


# -- transient errors: retried, then typed --------------------------------------------------------


def test_rate_limit_error_after_the_retries_run_out(
    hook: XaiHook, emulator: XaiEmulator, hook_logs: list[dict[str, Any]]
) -> None:
    emulator.configure(status_script=[429] * 5)

    with pytest.raises(XaiRateLimitError) as raised:
        hook.generate_images("a cat")

    assert statuses(emulator) == [429, 429, 429]  # max_retries=2: 1 + 2 attempts
    assert emulator.config.status_script == [429, 429]  # the rest was never asked for
    assert raised.value.status == 429
    assert raised.value.retry_after == 0
    assert "POST /images/generations failed (HTTP 429)" in str(raised.value)
    assert "Emulated 429 error" in str(raised.value)
    retries = [event["event"] for event in hook_logs if "; retry " in event["event"]]
    assert len(retries) == 2
    assert retries[0].endswith("retry 1 of 2 in 0.00 s")


def test_retry_after_is_honoured_before_the_retry(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(status_script=[429], retry_after=1)

    result = hook.generate_images("a patient cat")

    assert len(result.images) == 1
    first, second = emulator.requests_log
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 1.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_after_the_retries_run_out(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator, status: int
) -> None:
    hook = set_connection(max_retries=1)
    emulator.configure(status_script=[status] * 3)

    with pytest.raises(XaiServerError) as raised:
        hook.list_image_models()

    assert raised.value.status == status
    assert f"GET /image-generation-models failed (HTTP {status})" in str(raised.value)
    assert f"Emulated {status} error" in str(raised.value)
    assert statuses(emulator) == [status, status]


def test_dropped_connections_of_a_free_call_are_a_server_error_after_the_retries(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    hook = set_connection(max_retries=1)
    emulator.configure(reset_connections=2)

    with pytest.raises(XaiServerError) as raised:
        hook.list_image_models()

    assert not isinstance(raised.value, XaiPossiblyBilledError)  # a free call: retried, nothing billed
    assert raised.value.status is None
    assert "GET /image-generation-models failed (no response)" in str(raised.value)
    assert "ConnectionError" in str(raised.value)
    assert statuses(emulator) == [None, None]


def test_a_dropped_connection_of_a_paid_call_is_possibly_billed_and_not_resent(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    hook = set_connection(max_retries=3)
    emulator.configure(reset_connections=2)

    with pytest.raises(XaiPossiblyBilledError) as raised:
        hook.generate_images("a cat")

    error = raised.value
    assert (error.method, error.path, error.status) == ("POST", "images/generations", None)
    assert error.maybe_processed is True
    assert str(error).startswith("xAI POST /images/generations failed (no response): ConnectionError")
    assert str(error).endswith("the request may have been billed")
    assert statuses(emulator) == [None]
    assert emulator.config.reset_connections == 1  # the second drop was never asked for


def test_unreachable_host_is_a_server_error(emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "xai", "password": "xai-key-for-a-closed-port", "host": "http://127.0.0.1:9/v1"}
    monkeypatch.setenv("AIRFLOW_CONN_XAI_CLOSED", json.dumps({**conn, "extra": {"max_retries": 0}}))

    with pytest.raises(XaiServerError, match=r"GET /api-key failed \(no response\): ConnectionError"):
        XaiHook(xai_conn_id="xai_closed").call("GET", "api-key")


def test_invalid_json_is_a_server_error_after_the_retries(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    hook = set_connection(max_retries=1)
    emulator.configure(invalid_json=2)

    with pytest.raises(XaiServerError) as raised:
        hook.get_batch("batch_x")

    assert raised.value.status == 200
    assert "response is not valid JSON: '<html>" in str(raised.value)
    assert statuses(emulator) == [200, 200]


@pytest.mark.parametrize(
    "fault",
    [
        {"status_script": [503]},
        {"status_script": [500]},
        {"status_script": [429]},
        {"reset_connections": 1},
        {"invalid_json": 1},
    ],
    ids=["503", "500", "429", "reset", "invalid_json"],
)
def test_one_transient_error_of_a_free_call_is_recovered_from(
    hook: XaiHook, emulator: XaiEmulator, fault: dict[str, Any]
) -> None:
    emulator.configure(**fault)

    models = hook.list_image_models()

    assert "grok-imagine-image" in {model.id for model in models}
    assert len(emulator.requests_log) == 2
    assert statuses(emulator)[-1] == 200


@pytest.mark.parametrize("status", [503, 429])
def test_an_unserved_paid_request_is_retried_and_billed_once(hook: XaiHook, emulator: XaiEmulator, status: int) -> None:
    emulator.configure(status_script=[status])

    result = hook.generate_images("a resilient cat")

    assert len(result.images) == 1
    assert statuses(emulator) == [status, 200]
    assert emulator.images_billed == 1  # the failed try was not billed


@pytest.mark.parametrize(
    "fault",
    [{"status_script": [500]}, {"status_script": [504]}, {"reset_connections": 1}, {"invalid_json": 1}],
    ids=["500", "504", "reset", "invalid_json"],
)
def test_an_ambiguous_failure_of_a_batch_creation_is_possibly_billed(
    hook: XaiHook, emulator: XaiEmulator, fault: dict[str, Any]
) -> None:
    file_id = hook.upload_batch_file("one.jsonl", json.dumps(hook.build_request("x").batch_line("0")).encode())
    emulator.configure(**fault)

    with pytest.raises(XaiPossiblyBilledError, match="may have been billed"):
        hook.create_batch("ambiguous", file_id)

    assert len([r for r in emulator.requests_log if r.path == "/v1/batches"]) == 1


def test_max_retries_zero_means_a_single_attempt(set_connection: Callable[..., XaiHook], emulator: XaiEmulator) -> None:
    hook = set_connection(max_retries=0)
    emulator.configure(status_script=[503])

    with pytest.raises(XaiServerError) as raised:
        hook.generate_images("a cat")
    assert not isinstance(raised.value, XaiPossiblyBilledError)  # a 503 was not served
    assert raised.value.maybe_processed is False
    assert statuses(emulator) == [503]


def test_error_hierarchy() -> None:
    assert issubclass(XaiRateLimitError, XaiTransientError)
    assert issubclass(XaiServerError, XaiTransientError)
    assert issubclass(XaiTransientError, XaiApiError)
    assert not issubclass(XaiBadRequestError, XaiTransientError)
    assert not issubclass(XaiAuthError, XaiTransientError)
    assert issubclass(XaiConnectionConfigError, XaiError)
    assert issubclass(XaiPossiblyBilledError, XaiServerError)
    for permanent in (XaiAuthError, XaiBadRequestError, XaiConnectionConfigError, XaiRequestValidationError):
        assert issubclass(permanent, XaiPermanentError)
    assert not issubclass(XaiTransientError, XaiPermanentError)
    assert issubclass(XaiRequestValidationError, ValueError)


# -- connection configuration ---------------------------------------------------------------------


def test_missing_connection_says_how_to_create_it(emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_XAI_NOWHERE", raising=False)
    hook = XaiHook(xai_conn_id="xai_nowhere")

    with pytest.raises(XaiConnectionConfigError) as raised:
        hook.generate_images("a cat")

    message = str(raised.value)
    assert "Airflow connection 'xai_nowhere' does not exist" in message
    assert "airflow connections add xai_nowhere --conn-type xai --conn-password <API key>" in message
    assert "AIRFLOW_CONN_XAI_NOWHERE=" in message
    assert "Admin > Connections" in message
    assert emulator.requests_log == []


def test_missing_connection_makes_test_connection_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_XAI_NOWHERE", raising=False)

    ok, message = XaiHook(xai_conn_id="xai_nowhere").test_connection()

    assert ok is False
    assert "does not exist" in message


@pytest.mark.parametrize("password", [None, ""])
def test_connection_without_an_api_key_is_a_config_error(
    emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch, password: str | None
) -> None:
    conn: dict[str, Any] = {"conn_type": "xai", "host": emulator.base_url}
    if password is not None:
        conn["password"] = password
    monkeypatch.setenv("AIRFLOW_CONN_XAI_NOKEY", json.dumps(conn))

    with pytest.raises(XaiConnectionConfigError) as raised:
        XaiHook(xai_conn_id="xai_nokey").list_image_models()

    assert "Connection 'xai_nokey' has no API key (the password field)" in str(raised.value)
    assert "airflow connections add xai_nokey" in str(raised.value)
    assert emulator.requests_log == []


def test_malformed_extra_is_a_config_error_naming_the_field(
    emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {"conn_type": "xai", "password": emulator.api_key, "host": emulator.base_url, "extra": {"timeout": "fast"}}
    monkeypatch.setenv("AIRFLOW_CONN_XAI_BADEXTRA", json.dumps(conn))

    with pytest.raises(XaiConnectionConfigError, match="timeout"):
        XaiHook(xai_conn_id="xai_badextra").list_image_models()
    assert emulator.requests_log == []
