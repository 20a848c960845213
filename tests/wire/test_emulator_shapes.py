"""The emulator's answers have the shapes of real wire messages (``tests/fixtures/xai/``): the same keys
with the same JSON types, so a client tested against the emulator reads what xAI sends.

Keys the emulator adds must be documented fields (``docs/xai-api.md``) that the fixture happens to lack;
keys of a fixture the emulator leaves out are listed here, with the reason, so the gap stays visible.
Calls are plain HTTP (``requests``): nothing of the provider is used on either side.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
import requests
from wire_support import response

from airflow_provider_xai_image.testing import XaiEmulator

#: Documented fields (docs/xai-api.md) that some fixtures lack: the emulator may send them.
DOCUMENTED_EXTRAS = {
    "b64_json",
    "url",
    "mime_type",
    "num_requests",
    "num_pending",
    "num_success",
    "num_error",
    "num_cancelled",
    "respect_moderation",
    "revised_prompt",
    "model",
    "block_reason",
    "usage",
    "pagination_token",
    "expires_at",
    "pricing",
    "image_price",
    "input_modalities",
    "output_modalities",
    "fingerprint",
    "created",
    "object",
    "owned_by",
    "version",
    "aliases",
}
#: Fixture fields the emulator does not send, and why that is safe.
NOT_EMULATED = {
    "create_api_key_id": "an opaque id no client reads",
    "input_file_id": "not in docs/xai-api.md's Batch object; no client reads it",
    "max_prompt_length": "not read by clients",
    "revised_prompt": "no longer populated by xAI (rev. 2); the emulator omits it by default",
    "prompt_text_token_price": "token prices of models, not used for images",
    "prompt_image_token_price": "token prices of models, not used for images",
    "generated_image_token_price": "token prices of models, not used for images",
    "error": "success results of some clients carry {code: 0, message: ''}; the emulator omits it",
    "error_message": "the emulator sends one error shape per failed item",
}


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_same_shape(real: Any, emulated: Any, where: str = "$") -> None:
    if real is None or emulated is None:  # null stands for any type in both
        return
    assert kind(real) == kind(emulated), f"{where}: xAI sends {kind(real)}, the emulator {kind(emulated)}"
    if isinstance(real, dict):
        for key, value in real.items():
            if key not in emulated:
                assert key in NOT_EMULATED, f"{where}.{key}: sent by xAI, missing from the emulator"
                continue
            assert_same_shape(value, emulated[key], f"{where}.{key}")
        for key in emulated.keys() - real.keys():
            assert key in DOCUMENTED_EXTRAS, f"{where}.{key}: sent by the emulator, not a documented field"
    elif isinstance(real, list) and real and emulated:
        assert_same_shape(real[0], emulated[0], f"{where}[0]")


def call(emulator: XaiEmulator, method: str, path: str, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    answer = requests.request(method, f"{emulator.base_url}/{path}", headers=headers, timeout=10, **kwargs)
    return answer.status_code, answer.json()


def image_request(prompt: str, **body: Any) -> dict[str, Any]:
    return {"json": {"prompt": prompt, "model": "grok-imagine-image", **body}}


@pytest.mark.parametrize(
    ("fixture", "body"),
    [
        ("generate_url", {}),
        ("generate_b64_raw", {"response_format": "b64_json"}),
        ("generate_blocked", {"response_format": "b64_json"}),
    ],
)
def test_image_answers(xai_emulator: XaiEmulator, fixture: str, body: dict[str, Any]) -> None:
    prompt = "[[moderate]] an otter" if fixture == "generate_blocked" else "an otter"
    status, answer = call(xai_emulator, "POST", "images/generations", **image_request(prompt, **body))
    assert status == 200
    assert_same_shape(response(fixture), answer)


def test_models_answer(xai_emulator: XaiEmulator) -> None:
    _, answer = call(xai_emulator, "GET", "image-generation-models")
    assert_same_shape(response("models_list_pricing"), answer)
    assert_same_shape(response("models_list"), answer)


def test_api_key_answer(xai_emulator: XaiEmulator) -> None:
    _, answer = call(xai_emulator, "GET", "api-key")
    assert_same_shape(response("api_key"), answer)


def upload(emulator: XaiEmulator, lines: list[dict[str, Any]]) -> str:
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    status, answer = call(emulator, "POST", "files", files={"file": ("batch.jsonl", io.BytesIO(content))})
    assert status == 200
    assert_same_shape(response("files_upload"), answer)
    return str(answer["id"])


def line(custom_id: str, prompt: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/images/generations",
        "body": {"prompt": prompt, "model": "grok-imagine-image", **body},
    }


def test_batch_objects_results_and_lists(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(batch_validation_seconds=0.3, batch_seconds=0.3, batch_error_shape="mixed")
    file_id = upload(
        xai_emulator,
        [line("0", "a fox", response_format="b64_json")] + [line(str(index), "[[fail]] a fox") for index in (1, 2, 3)],
    )
    _, created = call(xai_emulator, "POST", "batches", json={"name": "shapes", "input_file_id": file_id})
    assert_same_shape(response("batch_validating"), created)
    assert created["state"] == response("batch_validating")["state"]  # every counter 0 while validating
    time.sleep(0.4)
    _, running = call(xai_emulator, "GET", f"batches/{created['batch_id']}")
    assert_same_shape(response("batch_running"), running)
    time.sleep(0.4)
    _, done = call(xai_emulator, "GET", f"batches/{created['batch_id']}")
    assert_same_shape(response("batch_done"), done)
    _, page = call(xai_emulator, "GET", f"batches/{created['batch_id']}/results", params={"limit": 10})
    real_items = response("results_page")["results"]
    by_id = {item["batch_request_id"]: item for item in page["results"]}
    assert_same_shape(real_items[0], by_id["0"])  # success
    emulated_errors = [by_id[key] for key in ("1", "2", "3")]
    for real in real_items[1:]:  # error object, error string, top-level error_message: each has a twin
        assert any(_same(real, emulated) for emulated in emulated_errors), f"no emulated twin of {real}"
    _, listed = call(xai_emulator, "GET", "batches", params={"limit": 1})
    assert_same_shape(response("batch_list"), listed)


def _same(real: dict[str, Any], emulated: dict[str, Any]) -> bool:
    try:
        assert_same_shape(real, emulated)
    except AssertionError:
        return False
    return set(real) - set(NOT_EMULATED) <= set(emulated) and (
        "batch_result" not in real
        or kind(real["batch_result"].get("error")) == kind(emulated["batch_result"].get("error"))
    )


def test_batch_refused_by_xai(xai_emulator: XaiEmulator) -> None:
    file_id = upload(xai_emulator, [line("0", "a fox")])
    _, created = call(xai_emulator, "POST", "batches", json={"name": "refused", "input_file_id": file_id})
    refused = xai_emulator.refuse_batch(created["batch_id"], "JSONL file validation failed: Model grok-nope")
    assert_same_shape(response("batch_cancelled_by_xai"), refused)
    assert refused["cancel_by_xai_message"]


@pytest.mark.parametrize("fixture", ["error_400", "error_401"])
def test_error_bodies(xai_emulator: XaiEmulator, fixture: str) -> None:
    headers = {"Authorization": "Bearer xai-not-the-key"} if fixture == "error_400" else {}
    answer = requests.get(f"{xai_emulator.base_url}/api-key", headers=headers, timeout=10)
    assert answer.status_code in (400, 401)
    assert_same_shape(response(fixture), answer.json())
