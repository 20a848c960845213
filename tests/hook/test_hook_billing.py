"""What a paid request costs when things fail: never re-sent when xAI may have run it (unless the
connection allows it), always re-sent when it surely did not reach xAI. Through the emulator over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from airflow_provider_xai_image.exceptions import XaiPossiblyBilledError, XaiServerError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator


def posts(emulator: XaiEmulator) -> int:
    return sum(1 for record in emulator.requests_log if record.method == "POST")


def settle(emulator: XaiEmulator, seconds: float) -> None:
    """Let requests the client gave up on finish on the server (xAI runs them anyway)."""
    time.sleep(seconds)


def test_read_timeout_bills_once_and_says_it_may_have_billed(
    emulator: XaiEmulator, set_connection: Callable[..., XaiHook]
) -> None:
    emulator.configure(latency=1.5)
    hook = set_connection(timeout=0.5, max_retries=3)
    with pytest.raises(XaiPossiblyBilledError, match="may have been billed"):
        hook.generate_images("a lighthouse", n=1)
    settle(emulator, 1.5)
    assert posts(emulator) == 1
    assert emulator.images_billed == 1


def test_max_ambiguous_retries_allows_one_resend(emulator: XaiEmulator, set_connection: Callable[..., XaiHook]) -> None:
    emulator.configure(latency=1.0)
    hook = set_connection(timeout=0.3, max_retries=5, max_ambiguous_retries=1)
    with pytest.raises(XaiPossiblyBilledError):
        hook.generate_images("a lighthouse", n=1)
    settle(emulator, 1.5)
    assert posts(emulator) == 2
    assert emulator.images_billed == 2


def test_a_success_after_an_ambiguous_resend_says_the_earlier_send_may_have_been_billed(
    emulator: XaiEmulator, set_connection: Callable[..., XaiHook]
) -> None:
    emulator.configure(status_script=[500])
    result = set_connection(max_retries=3, max_ambiguous_retries=1).generate_images("a lighthouse")
    assert len(result.images) == 1
    assert result.possibly_billed_attempts == 1
    assert posts(emulator) == 2
    assert set_connection(max_retries=3).generate_images("a harbour").possibly_billed_attempts == 0


@pytest.mark.parametrize("fault", [{"status_script": [500]}, {"status_script": [502]}, {"reset_connections": 1}])
def test_ambiguous_failures_of_paid_requests_are_not_resent(
    emulator: XaiEmulator, set_connection: Callable[..., XaiHook], fault: dict[str, object]
) -> None:
    emulator.configure(**fault)
    hook = set_connection(max_retries=3)
    with pytest.raises(XaiPossiblyBilledError):
        hook.generate_images("a lighthouse")
    assert posts(emulator) == 1


def test_an_unreadable_200_of_a_paid_request_is_not_resent(
    emulator: XaiEmulator, set_connection: Callable[..., XaiHook]
) -> None:
    emulator.configure(invalid_json=1)
    with pytest.raises(XaiPossiblyBilledError, match="not valid JSON"):
        set_connection(max_retries=3).generate_images("a lighthouse")
    assert posts(emulator) == 1


@pytest.mark.parametrize("retry_after", [None, 0])
def test_429_with_or_without_retry_after_is_retried(
    emulator: XaiEmulator, set_connection: Callable[..., XaiHook], retry_after: int | None
) -> None:
    emulator.configure(status_script=[429], retry_after=retry_after)
    result = set_connection(max_retries=2).generate_images("a lighthouse")
    assert len(result.images) == 1
    assert posts(emulator) == 2
    assert emulator.images_billed == 1


def test_503_is_not_served_so_it_is_retried(emulator: XaiEmulator, set_connection: Callable[..., XaiHook]) -> None:
    emulator.configure(status_script=[503, 503])
    result = set_connection(max_retries=2).generate_images("a lighthouse")
    assert len(result.images) == 1
    assert emulator.images_billed == 1


def test_free_calls_retry_ambiguous_failures(emulator: XaiEmulator, set_connection: Callable[..., XaiHook]) -> None:
    emulator.configure(status_script=[500, 502], reset_connections=0)
    models = set_connection(max_retries=2).list_image_models()
    assert models
    assert sum(1 for record in emulator.requests_log if record.method == "GET") == 3


def test_a_refused_connection_is_surely_unbilled(monkeypatch: pytest.MonkeyPatch) -> None:
    closed_port = json.dumps(
        {"conn_type": "xai", "password": "xai-key", "host": "http://127.0.0.1:9/v1", "extra": {"max_retries": 1}}
    )
    monkeypatch.setenv("AIRFLOW_CONN_XAI_CLOSED", closed_port)
    with pytest.raises(XaiServerError) as raised:
        XaiHook(xai_conn_id="xai_closed").generate_images("a lighthouse")
    assert not isinstance(raised.value, XaiPossiblyBilledError)
    assert raised.value.maybe_processed is False
    assert "no connection could be made" in str(raised.value)
