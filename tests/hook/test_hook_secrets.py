"""The API key never leaves the Authorization header to xAI: not in logs, errors, reprs, or image downloads."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from airflow_provider_xai_image.exceptions import XaiAuthError, XaiServerError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator


def all_text(hook_logs: list[dict[str, Any]], caplog: pytest.LogCaptureFixture, *outputs: str) -> str:
    """Everything logged (structlog events with their fields, stdlib records) and printed."""
    structlog_lines = [json.dumps(event, default=repr) for event in hook_logs]
    stdlib_lines = [
        f"{record.name} {record.getMessage()} {record.args!r} {record.exc_text}" for record in caplog.records
    ]
    return "\n".join([*structlog_lines, *stdlib_lines, caplog.text, *outputs])


class _HeaderRecorder(BaseHTTPRequestHandler):
    """Serves one small JPEG at any path and records the headers of each request."""

    image = b""
    seen: list[dict[str, str]] = []  # replaced per server in the fixture

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers.items()))
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.image)))
        self.end_headers()
        self.wfile.write(self.image)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def image_host() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A plain HTTP server on loopback standing in for xAI's temporary image host: ``(url, headers seen)``."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buffer, format="JPEG")
    seen: list[dict[str, str]] = []
    handler = type("Recorder", (_HeaderRecorder,), {"image": buffer.getvalue(), "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/xai-tmp-imgen-1234.jpeg", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_key_is_in_no_log_line_across_retries_failures_and_downloads(
    set_connection: Callable[..., XaiHook],
    emulator: XaiEmulator,
    hook_logs: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    key = emulator.api_key
    hook = set_connection(max_retries=3)
    wrong_key = "xai-wrong-key-leak-check-99999999"
    wrong = set_connection("xai_wrong", api_key=wrong_key, max_retries=3)

    emulator.configure(status_script=[503, 429], reset_connections=1)
    result = hook.generate_images("a secretive cat", model="grok-imagine-image-pro")
    url = result.images[0].url
    assert url is not None
    hook.download(url, io.BytesIO())
    assert hook.test_connection()[0] is True
    assert wrong.test_connection()[0] is False
    with pytest.raises(XaiAuthError):
        wrong.generate_images("a cat")

    assert [r.status for r in emulator.requests_log if r.path.startswith("/v1/images")] == [None, 503, 429, 200, 401]
    out, err = capfd.readouterr()
    text = all_text(hook_logs, caplog, out, err)
    assert "retry 1 of 3" in text  # the retries were logged...
    assert 'HTTP/1.1" 401' in text  # ...and so was the 401 (urllib3 at DEBUG)
    assert key not in text
    assert wrong_key not in text
    assert key not in repr(emulator.requests_log)


def test_key_is_in_no_exception_text(set_connection: Callable[..., XaiHook], emulator: XaiEmulator) -> None:
    wrong_key = "xai-another-wrong-key-77777777"
    auth_hook = set_connection("xai_wrong", api_key=wrong_key)
    hook = set_connection(max_retries=0)

    with pytest.raises(XaiAuthError) as auth:
        auth_hook.list_image_models()
    emulator.configure(reset_connections=1)
    with pytest.raises(XaiServerError) as dropped:
        hook.list_image_models()

    for error, secret in ((auth.value, wrong_key), (dropped.value, emulator.api_key)):
        for text in (str(error), repr(error), repr(error.args), error.detail):
            assert secret not in text
            assert emulator.api_key not in text
        assert error.__cause__ is None


def test_key_is_not_in_connection_error_to_an_unreachable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "xai-key-for-an-unreachable-host-5555"
    conn = {"conn_type": "xai", "password": key, "host": "http://127.0.0.1:9/v1", "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_XAI_CLOSED", json.dumps(conn))
    hook = XaiHook(xai_conn_id="xai_closed")

    with pytest.raises(XaiServerError) as raised:
        hook.generate_images("a cat")
    ok, message = hook.test_connection()

    assert ok is False
    for text in (str(raised.value), repr(raised.value), message):
        assert "127.0.0.1" in text or "no response" in text
        assert key not in text


def test_key_is_not_in_reprs_of_the_hook_or_its_settings(hook: XaiHook, emulator: XaiEmulator) -> None:
    settings = hook.settings
    key = emulator.api_key

    assert settings.api_key.get_secret_value() == key  # the key is there...
    for text in (repr(hook), str(hook), repr(settings), str(settings), repr(settings.api_key), str(settings.api_key)):
        assert key not in text  # ...but never shown
    assert repr(hook) == "XaiHook(xai_conn_id='xai_default')"
    assert emulator.base_url in repr(settings)


def test_download_session_carries_no_key_and_downloads_without_it(hook: XaiHook, emulator: XaiEmulator) -> None:
    assert hook.get_conn().headers["Authorization"] == f"Bearer {emulator.api_key}"
    assert "Authorization" not in hook._download_session.headers

    url = hook.generate_images("a cat").images[0].url
    assert url is not None
    assert hook.download(url, io.BytesIO()).size > 0
    assert "Authorization" not in hook._download_session.headers


def test_image_host_never_receives_the_key(
    hook: XaiHook, emulator: XaiEmulator, image_host: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = image_host
    hook.generate_images("warm up the API session")  # the key-carrying session exists and has been used

    verified = hook.download(url, io.BytesIO())

    assert verified.image_type.extension == "jpg"
    [headers] = seen
    assert not {name.lower() for name in headers} & {"authorization", "cookie", "proxy-authorization"}
    assert emulator.api_key not in json.dumps(headers)
    assert headers["User-Agent"].startswith("airflow-provider-xai-image/")


async def test_key_is_in_no_log_line_of_the_async_client(
    set_connection: Callable[..., XaiHook],
    emulator: XaiEmulator,
    hook_logs: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # Airflow sets httpx to WARNING
    hook = set_connection(max_retries=2)
    wrong_key = "xai-async-wrong-key-31313131"
    wrong = set_connection("xai_wrong", api_key=wrong_key)
    emulator.configure(status_script=[503])

    async with hook.async_client() as client:
        await hook.acall(client, "GET", "api-key")
    async with wrong.async_client() as client:
        with pytest.raises(XaiAuthError) as raised:
            await wrong.acall(client, "GET", "api-key")

    text = all_text(hook_logs, caplog, str(raised.value), repr(raised.value))
    assert "retry 1 of 2" in text
    assert "httpx" in text  # httpx's own request log was captured
    assert emulator.api_key not in text
    assert wrong_key not in text
