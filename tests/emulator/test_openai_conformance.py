"""The official OpenAI SDK, pointed at the emulator, parses its image responses."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
import requests
from openai import AuthenticationError, OpenAI
from PIL import Image

from airflow_provider_xai_image.testing import XaiEmulator


@pytest.fixture
def client(xai_emulator: XaiEmulator) -> Iterator[OpenAI]:
    with OpenAI(base_url=xai_emulator.base_url, api_key=xai_emulator.api_key, max_retries=0) as client:
        yield client


def test_sdk_generates_b64_images(client: OpenAI) -> None:
    response = client.images.generate(
        model="grok-imagine-image", prompt="a lighthouse", n=2, response_format="b64_json"
    )

    assert response.data is not None
    assert len(response.data) == 2
    for item in response.data:
        assert item.b64_json is not None
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).format == "JPEG"
        assert item.revised_prompt is None  # not populated since revision 2


def test_sdk_generates_url_images(client: OpenAI) -> None:
    response = client.images.generate(model="grok-imagine-image", prompt="a harbour", response_format="url")

    assert response.data is not None
    assert response.data[0].url is not None
    download = requests.get(response.data[0].url, timeout=10)
    assert Image.open(io.BytesIO(download.content)).format == "JPEG"


def test_sdk_passes_aspect_ratio_through_extra_body(client: OpenAI, xai_emulator: XaiEmulator) -> None:
    response = client.images.generate(
        model="grok-imagine-image",
        prompt="a wide beach",
        response_format="b64_json",
        extra_body={"aspect_ratio": "16:9"},
    )

    assert response.data is not None
    assert response.data[0].b64_json is not None
    assert Image.open(io.BytesIO(base64.b64decode(response.data[0].b64_json))).size == (1024, 576)
    assert xai_emulator.requests_log[-1].json["aspect_ratio"] == "16:9"


def test_sdk_reads_a_configured_revised_prompt(client: OpenAI, xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(revised_prompt="empty")
    response = client.images.generate(model="grok-imagine-image", prompt="a lighthouse")

    assert response.data is not None
    assert response.data[0].revised_prompt == ""


def test_sdk_uploads_a_batch_input_file(client: OpenAI, xai_emulator: XaiEmulator) -> None:
    content = b'{"custom_id": "a", "method": "POST", "url": "/v1/images/generations", "body": {"prompt": "x"}}\n'
    uploaded = client.files.create(file=("batch.jsonl", content), purpose="batch")
    created = requests.post(
        f"{xai_emulator.base_url}/batches",
        json={"name": "sdk", "input_file_id": uploaded.id},
        headers={"Authorization": f"Bearer {xai_emulator.api_key}"},
        timeout=10,
    )

    assert uploaded.id.startswith("file_")
    assert uploaded.bytes == len(content)
    assert uploaded.filename == "batch.jsonl"
    assert uploaded.purpose == "batch"
    assert created.status_code == 200
    assert created.json()["state"]["num_requests"] == 0  # still validating when created


def test_sdk_sees_the_wrong_key_as_an_authentication_error(xai_emulator: XaiEmulator) -> None:
    client = OpenAI(base_url=xai_emulator.base_url, api_key="xai-wrong-key-000000", max_retries=0)

    with client, pytest.raises(AuthenticationError):
        client.images.generate(model="grok-imagine-image", prompt="x")
