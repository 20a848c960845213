"""XaiHook's async methods (httpx) via the emulator: same requests, same retries, same typed errors."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from airflow_provider_xai_image.api.batches import BatchState
from airflow_provider_xai_image.exceptions import (
    XaiAuthError,
    XaiBadRequestError,
    XaiConnectionConfigError,
    XaiPossiblyBilledError,
    XaiRateLimitError,
    XaiServerError,
)
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.testing import XaiEmulator


def statuses(emulator: XaiEmulator) -> list[int | None]:
    return [record.status for record in emulator.requests_log]


async def test_arun_image_request_generates(hook: XaiHook, emulator: XaiEmulator) -> None:
    request = hook.build_request("two owls", n=2, response_format="b64_json", aspect_ratio="3:2")

    async with hook.async_client() as client:
        result = await hook.arun_image_request(client, request)

    assert len(result.images) == 2
    for image in result.images:
        assert image.data is not None
        assert Image.open(io.BytesIO(image.data)).size == (1024, 683)
    assert result.model == "grok-imagine-image-quality"
    [sent] = emulator.requests_log
    assert (sent.method, sent.path, sent.status) == ("POST", "/v1/images/generations", 200)
    assert sent.json == request.body()


async def test_arun_image_request_edits_and_warns_on_a_deprecated_model(
    hook: XaiHook, emulator: XaiEmulator, hook_logs: list[dict[str, Any]]
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 0, 255)).save(buffer, format="JPEG")
    source = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    request = hook.build_request("add a hat", model="grok-imagine-image-pro", source_images=[source])

    async with hook.async_client() as client:
        result = await hook.arun_image_request(client, request)

    assert result.images[0].url is not None
    assert emulator.requests_log[0].path == "/v1/images/edits"
    assert emulator.requests_log[0].json["image"]["url"] == source
    assert any("grok-imagine-image-quality" in event["event"] for event in hook_logs)


async def test_aget_batch_sees_the_validation_then_the_counted_requests(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(batch_validation_seconds=0.5, batch_seconds=3600)
    lines = [hook.build_request(prompt).batch_line(custom_id) for custom_id, prompt in (("a", "one"), ("b", "two"))]
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    created = hook.create_batch("async-batch", hook.upload_batch_file("async.jsonl", content))

    async with hook.async_client() as client:
        validating = await hook.aget_batch(client, created.batch_id)
        batch = validating
        for _ in range(200):
            if batch.state.num_requests:
                break
            await asyncio.sleep(0.05)
            batch = await hook.aget_batch(client, created.batch_id)

    assert (validating.batch_id, validating.name) == (created.batch_id, "async-batch")
    assert validating.is_validating
    assert validating.state == BatchState()
    assert (batch.state.num_requests, batch.state.num_pending) == (2, 2)
    assert not batch.is_validating
    assert emulator.requests_log[-1].path == f"/v1/batches/{created.batch_id}"


async def test_acall_retries_a_503_then_returns_the_result(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(status_script=[503])

    async with hook.async_client() as client:
        payload = await hook.acall(client, "GET", "image-generation-models")

    assert {model["id"] for model in payload["models"]} >= {"grok-imagine-image", "grok-imagine-image-2.0"}
    assert statuses(emulator) == [503, 200]


async def test_acall_rate_limit_error_after_the_retries_run_out(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(status_script=[429] * 5)

    async with hook.async_client() as client:
        with pytest.raises(XaiRateLimitError) as raised:
            await hook.acall(client, "GET", "api-key")

    assert statuses(emulator) == [429, 429, 429]  # max_retries=2: three attempts
    assert raised.value.status == 429
    assert raised.value.retry_after == 0
    assert "GET /api-key" in str(raised.value)


async def test_acall_server_error_after_dropped_connections(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(reset_connections=3)

    async with hook.async_client() as client:
        with pytest.raises(XaiServerError) as raised:
            await hook.acall(client, "GET", "api-key")

    assert raised.value.status is None
    assert "no response" in str(raised.value)
    assert statuses(emulator) == [None, None, None]


async def test_acall_invalid_json_is_a_server_error(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    hook = set_connection(max_retries=0)
    emulator.configure(invalid_json=1)

    async with hook.async_client() as client:
        with pytest.raises(XaiServerError, match="not valid JSON"):
            await hook.acall(client, "GET", "api-key")


async def test_acall_does_not_retry_client_errors(hook: XaiHook, emulator: XaiEmulator) -> None:
    async with hook.async_client() as client:
        with pytest.raises(XaiBadRequestError) as not_found:
            await hook.aget_batch(client, "batch_missing")
        with pytest.raises(XaiBadRequestError) as invalid:
            await hook.acall(client, "POST", "images/generations", json_body={"prompt": "x", "style": "noir"})

    assert not_found.value.status == 404
    assert "Batch batch_missing not found" in str(not_found.value)
    assert invalid.value.status == 422
    assert "style" in str(invalid.value)
    assert statuses(emulator) == [404, 422]


async def test_acall_with_a_wrong_key_is_an_auth_error(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    hook = set_connection(api_key="xai-not-the-right-key-000000")

    async with hook.async_client() as client:
        with pytest.raises(XaiAuthError) as raised:
            await hook.acall(client, "GET", "api-key")

    assert raised.value.status == 401
    assert "xai-not-the-right-key-000000" not in str(raised.value)
    assert statuses(emulator) == [401]


async def test_async_client_without_a_connection_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_XAI_ASYNC_MISSING", raising=False)
    hook = XaiHook(xai_conn_id="xai_async_missing")

    with pytest.raises(XaiConnectionConfigError, match="airflow connections add xai_async_missing"):
        async with hook.async_client():
            pass


async def test_acheck_api_key_checks_the_key_once_per_hook(hook: XaiHook, emulator: XaiEmulator) -> None:
    async with hook.async_client() as client:
        await hook.acheck_api_key(client)
        await hook.acheck_api_key(client)
    hook.check_api_key()  # the sync twin shares what the hook knows

    assert [(r.method, r.path, r.status) for r in emulator.requests_log] == [("GET", "/v1/api-key", 200)]


async def test_acheck_api_key_with_a_wrong_key_is_an_auth_error_each_time(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator
) -> None:
    hook = set_connection(api_key="xai-async-refused-key-1212121212")

    async with hook.async_client() as client:
        for _ in range(2):  # a refusal is not remembered as a success
            with pytest.raises(XaiAuthError, match="the API key was refused"):
                await hook.acheck_api_key(client)

    assert [(r.method, r.path, r.status) for r in emulator.requests_log] == [("GET", "/v1/api-key", 401)] * 2


@pytest.mark.parametrize("fault", [{"reset_connections": 1}, {"status_script": [500]}, {"invalid_json": 1}])
async def test_arun_image_request_does_not_resend_an_ambiguous_failure(
    hook: XaiHook, emulator: XaiEmulator, fault: dict[str, Any]
) -> None:
    emulator.configure(**fault)

    async with hook.async_client() as client:
        with pytest.raises(XaiPossiblyBilledError, match="may have been billed"):
            await hook.arun_image_request(client, hook.build_request("a costly owl"))

    assert len(emulator.requests_log) == 1


async def test_arun_image_request_retries_what_was_surely_not_served(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(status_script=[503, 429])

    async with hook.async_client() as client:
        result = await hook.arun_image_request(client, hook.build_request("a patient owl"))

    assert len(result.images) == 1
    assert statuses(emulator) == [503, 429, 200]
    assert emulator.images_billed == 1
