"""The API key never leaves the Authorization header to xAI: not in logs, errors, reprs, or image downloads."""

from __future__ import annotations

import io
import json
import logging
import secrets as secrets_module
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest
from airflow.providers.common.compat.sdk import redact
from PIL import Image

from airflow_provider_xai_image.exceptions import XaiAuthError, XaiConnectionConfigError, XaiServerError
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

    emulator.configure(reset_connections=1)
    hook.list_image_models()  # a free call: the dropped connection is retried
    emulator.configure(status_script=[503, 429])
    result = hook.generate_images("a secretive cat", model="grok-imagine-image-pro")
    url = result.images[0].url
    assert url is not None
    hook.download(url, io.BytesIO())
    assert hook.test_connection()[0] is True
    assert wrong.test_connection()[0] is False
    with pytest.raises(XaiAuthError):
        wrong.generate_images("a cat")

    assert [r.status for r in emulator.requests_log if r.path.startswith("/v1/images")] == [503, 429, 200, 401]
    assert [r.status for r in emulator.requests_log if r.path == "/v1/image-generation-models"] == [None, 200]
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


# -- keys as people paste them ---------------------------------------------------------------------


@pytest.mark.parametrize("around", [("", "\n"), ("", "\r\n"), ("  ", " \n")], ids=["lf", "crlf", "spaces"])
def test_a_key_with_surrounding_whitespace_works(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator, around: tuple[str, str]
) -> None:
    """A key read from a file or pasted from a terminal often ends in a line break: it is stripped."""
    before, after = around
    hook = set_connection(api_key=f"{before}{emulator.api_key}{after}", max_retries=0)

    ok, message = hook.test_connection()
    result = hook.generate_images("a tidy cat")

    assert ok, message
    assert len(result.images) == 1
    assert hook.settings.api_key.get_secret_value() == emulator.api_key
    assert hook.get_conn().headers["Authorization"] == f"Bearer {emulator.api_key}"
    assert [r.status for r in emulator.requests_log] == [200, 200]


@pytest.mark.parametrize("inner", ["\n", "\r\n", " ", "\t", "\x00"], ids=["lf", "crlf", "space", "tab", "nul"])
def test_a_key_with_an_inner_break_is_refused_before_any_request_without_showing_it(
    set_connection: Callable[..., XaiHook],
    emulator: XaiEmulator,
    hook_logs: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    inner: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = emulator.api_key
    broken = f"{key[:20]}{inner}{key[20:]}"
    secrets = (broken, key, key[:20], key[20:])
    hook = set_connection(api_key=broken, max_retries=0)

    errors: list[XaiConnectionConfigError] = []
    calls: list[Callable[[], object]] = [
        lambda: hook.generate_images("a cat"),
        hook.check_api_key,
        hook.list_image_models,
        hook.get_conn,
    ]
    for call in calls:
        with pytest.raises(XaiConnectionConfigError) as raised:
            call()
        errors.append(raised.value)
    ok, message = hook.test_connection()

    assert ok is False
    assert "Connection 'xai_default'" in message
    assert "line break, a space or a control character" in message
    for error in errors:
        assert "Connection 'xai_default'" in str(error)
    texts = [message, repr(hook), str(hook), *(f"{error!s} {error!r} {error.args!r}" for error in errors)]
    text = all_text(hook_logs, caplog, *texts)
    for secret in secrets:
        assert secret not in text
    assert emulator.requests_log == []  # refused before any request: nothing to leak on the wire


async def test_a_key_with_an_inner_break_is_refused_by_the_async_client(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    key = emulator.api_key
    hook = set_connection(api_key=f"{key[:20]}\n{key[20:]}")

    with pytest.raises(XaiConnectionConfigError, match="Connection 'xai_default'") as raised:
        async with hook.async_client():
            pass

    for secret in (key[:20], key[20:]):
        assert secret not in str(raised.value)
    assert emulator.requests_log == []


# -- Airflow's secrets masker ----------------------------------------------------------------------


def test_the_key_is_registered_with_airflows_secrets_masker(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    key = emulator.api_key  # new for each test: nothing has masked it yet
    line = f"Authorization: Bearer {key}"
    assert redact(line) == line
    hook = set_connection(api_key=f"{key}\n")

    hook.test_connection()

    assert redact(line) == "Authorization: Bearer ***"
    assert redact({"headers": {"X-Key": key}}) == {"headers": {"X-Key": "***"}}


async def test_the_key_is_registered_with_the_secrets_masker_by_a_trigger_too(
    set_connection: Callable[..., XaiHook],
) -> None:
    key = f"xai-trigger-only-{secrets_module.token_hex(12)}"
    hook = set_connection("xai_trigger", api_key=key)
    assert redact(key) == key

    await hook.aload_settings()  # how triggers read the connection

    assert redact(f"key={key}") == "key=***"


# -- answers that quote the key ----------------------------------------------------------------------


class _EchoingProxy(BaseHTTPRequestHandler):
    """A careless proxy: answers every request 502 with an HTML page quoting its Authorization header."""

    def _echo(self) -> None:
        header = self.headers.get("Authorization", "")
        body = f"<html><pre>Authorization: {header}\nencoded: {quote(header, safe='')}</pre></html>".encode()
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _echo

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echoing_proxy() -> Iterator[str]:
    """The base URL of an :class:`_EchoingProxy` on loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingProxy)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_an_html_error_page_quoting_the_key_is_scrubbed_sync_and_async(
    echoing_proxy: str,
    monkeypatch: pytest.MonkeyPatch,
    hook_logs: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "xai-proxied/key+with&odd=chars"
    conn = {"conn_type": "xai", "password": key, "host": echoing_proxy, "extra": {"max_retries": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_XAI_PROXIED", json.dumps(conn))
    hook = XaiHook(xai_conn_id="xai_proxied")

    with pytest.raises(XaiServerError) as sync_error:
        hook.generate_images("a cat")
    async with hook.async_client() as client:
        with pytest.raises(XaiServerError) as async_error:
            await hook.acall(client, "GET", "api-key")

    errors = [sync_error.value, async_error.value]
    for error in errors:
        assert "Authorization: Bearer ***" in error.detail  # the page reached the error, scrubbed
    text = all_text(hook_logs, caplog, *(f"{error!s} {error!r} {error.detail}" for error in errors))
    assert "retry 1 of 1" in text  # the free call's retry was logged with the page's text
    for form in (key, quote(key, safe=""), quote(key)):
        assert form not in text
