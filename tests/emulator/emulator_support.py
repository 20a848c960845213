"""Helpers for the emulator's tests: real HTTP calls, and request bodies written out literally.

Wire values (paths, field names, prices) are spelled here as ``docs/xai-api.md`` gives them, never taken
from the emulator's ``contract`` module: a test must fail when the emulator drifts from the contract.
"""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import requests
from PIL import Image

from airflow_provider_xai_image.testing import XaiEmulator

INVALID_ARGUMENT = "Client specified an invalid argument"
#: Prices from the contract, in ticks (1e-10 USD).
QUALITY_PRICE = 500_000_000
IMAGINE_PRICE = 200_000_000
#: The emulator's price of each source image of an edit (the contract does not say how much).
INPUT_PRICE = 20_000_000
BATCH_OBJECT_KEYS = {"batch_id", "name", "create_time", "expire_time", "cancel_time", "cancel_by_xai_message", "state"}
ALL_ZERO_STATE = {"num_requests": 0, "num_pending": 0, "num_success": 0, "num_error": 0, "num_cancelled": 0}


def call(
    emulator: XaiEmulator, method: str, path: str, body: Any = None, *, key: str | None = None, **kwargs: Any
) -> requests.Response:
    """One API call to ``emulator`` with its key (or ``key``); ``path`` is relative to ``/v1``."""
    headers = {"Authorization": f"Bearer {key or emulator.api_key}"}
    return requests.request(method, f"{emulator.base_url}/{path}", json=body, headers=headers, timeout=10, **kwargs)


def generate(emulator: XaiEmulator, **body: Any) -> requests.Response:
    return call(emulator, "POST", "images/generations", {"prompt": "a lighthouse at dusk", **body})


def edit(emulator: XaiEmulator, **body: Any) -> requests.Response:
    return call(emulator, "POST", "images/edits", {"prompt": "make it snow", **body})


def control(emulator: XaiEmulator, path: str, body: Any = None) -> requests.Response:
    """A POST to the key-less ``/_emulator`` control API."""
    return requests.post(f"{emulator.url}/_emulator/{path}", json=body, timeout=10)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def b64_bytes(value: str) -> bytes:
    """The bytes of a ``b64_json`` value, with or without a ``data:...;base64,`` prefix."""
    return base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value, validate=True)


def image_bytes(width: int, height: int, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format=image_format)
    return buffer.getvalue()


def data_uri(width: int, height: int, image_format: str = "PNG") -> str:
    payload = base64.b64encode(image_bytes(width, height, image_format)).decode()
    return f"data:image/{image_format.lower()};base64,{payload}"


def upload(emulator: XaiEmulator, content: bytes, filename: str = "batch.jsonl", **fields: str) -> requests.Response:
    """``POST /v1/files`` the way public clients do: the form fields first, then the part ``file``."""
    return requests.post(
        f"{emulator.base_url}/files",
        data=fields,
        files={"file": (filename, content, "application/jsonl")},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=10,
    )


def multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    """A hand-made multipart body of ``(name, filename or None, data)`` parts in this order, and its type."""
    boundary = "emulator-test-boundary"
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def line(custom_id: str, prompt: str, url: str = "/v1/images/generations", **body: Any) -> dict[str, Any]:
    """One line of a batch input file."""
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"prompt": prompt, **body}}


def jsonl(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in lines)


def create_file_batch(emulator: XaiEmulator, content: bytes, name: str = "nightly") -> dict[str, Any]:
    """Upload ``content`` and create a batch from it; the Batch object."""
    uploaded = upload(emulator, content)
    assert uploaded.status_code == 200, uploaded.text
    created = call(emulator, "POST", "batches", {"name": name, "input_file_id": uploaded.json()["id"]})
    assert created.status_code == 200, created.text
    return dict(created.json())


def batch_entry(request_id: str, prompt: str, **body: Any) -> dict[str, Any]:
    """One entry of ``batch_requests`` on the inline route."""
    return {"batch_request_id": request_id, "batch_request": {"image_generation": {"prompt": prompt, **body}}}


def get_batch(emulator: XaiEmulator, batch_id: str) -> dict[str, Any]:
    return dict(call(emulator, "GET", f"batches/{batch_id}").json())


def wait_until_done(emulator: XaiEmulator, batch_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll until the batch is done by the contract's rule (``num_requests > 0``, nothing pending) or cancelled."""
    deadline = time.monotonic() + timeout
    while True:
        batch = get_batch(emulator, batch_id)
        state = batch["state"]
        if (state["num_requests"] > 0 and state["num_pending"] == 0) or batch["cancel_time"]:
            return batch
        assert time.monotonic() < deadline, f"batch still running: {batch}"
        time.sleep(0.02)


def result_pages(emulator: XaiEmulator, batch_id: str, limit: int) -> list[dict[str, Any]]:
    """Every results page, following ``pagination_token`` while it is non-empty."""
    pages, token = [], None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"pagination_token": token} if token else {})}
        response = call(emulator, "GET", f"batches/{batch_id}/results", params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        token = response.json().get("pagination_token")
        if not token:
            return pages


def results_by_id(emulator: XaiEmulator, batch_id: str, limit: int = 100) -> dict[str, dict[str, Any]]:
    return {
        item["batch_request_id"]: item for page in result_pages(emulator, batch_id, limit) for item in page["results"]
    }
