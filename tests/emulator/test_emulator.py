"""The xAI emulator over real HTTP: the contract of xai-api.md, faults, batches and controls."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from PIL import Image

from airflow_provider_xai_image.models import (
    BATCH_REQUEST_KIND,
    FALLBACK_PRICE_USD_TICKS_PER_IMAGE,
    decode_b64_image,
    parse_batch_results_page,
    parse_image_response,
)
from airflow_provider_xai_image.testing import BATCH_FAILURE_MARKER, MODERATION_MARKER, XaiEmulator
from airflow_provider_xai_image.testing.catalog import BATCH_PRICE_FACTOR, INPUT_IMAGE_PRICE_USD_TICKS

INVALID_ARGUMENT = "Client specified an invalid argument"


def call(
    emulator: XaiEmulator, method: str, path: str, body: Any = None, *, key: str | None = None, **kwargs: Any
) -> requests.Response:
    """One API call to ``emulator`` with its key (or ``key``)."""
    headers = {"Authorization": f"Bearer {key or emulator.api_key}"}
    return requests.request(method, f"{emulator.base_url}/{path}", json=body, headers=headers, timeout=10, **kwargs)


def generate(emulator: XaiEmulator, **body: Any) -> requests.Response:
    return call(emulator, "POST", "images/generations", {"prompt": "a lighthouse at dusk", **body})


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def data_uri(width: int, height: int, image_format: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buffer, format=image_format)
    return f"data:image/{image_format.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def batch_entry(request_id: str, prompt: str, **body: Any) -> dict[str, Any]:
    return {"batch_request_id": request_id, "batch_request": {BATCH_REQUEST_KIND: {"prompt": prompt, **body}}}


def wait_until_done(emulator: XaiEmulator, batch_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch = call(emulator, "GET", f"batches/{batch_id}").json()
        if batch["state"]["num_pending"] == 0 or time.monotonic() > deadline:
            return batch
        time.sleep(0.02)


# Auth, models, key ---------------------------------------------------------------------------


def test_requests_without_a_valid_key_are_rejected_without_echoing_it(xai_emulator: XaiEmulator) -> None:
    missing = requests.get(f"{xai_emulator.base_url}/api-key", timeout=10)
    wrong_key = "xai-this-is-a-wrong-key-0123456789"
    wrong = call(xai_emulator, "GET", "api-key", key=wrong_key)
    right = call(xai_emulator, "GET", "api-key")

    assert missing.status_code == wrong.status_code == 401
    for response in (missing, wrong):
        assert response.json()["error"].startswith("Incorrect API key provided: ")
        assert response.json()["code"]
    assert wrong_key not in wrong.text
    assert "***" in wrong.json()["error"]
    assert right.status_code == 200
    assert right.json()["redacted_api_key"] != xai_emulator.api_key
    assert xai_emulator.api_key not in right.text


def test_models_are_listed_with_prices_and_aliases_resolve(xai_emulator: XaiEmulator) -> None:
    models = {model["id"]: model for model in call(xai_emulator, "GET", "image-generation-models").json()["models"]}
    by_alias = call(xai_emulator, "GET", "image-generation-models/grok-2-image-1212")
    unknown = call(xai_emulator, "GET", "image-generation-models/grok-nope")

    assert set(models) == {"grok-imagine-image-quality", "grok-imagine-image", "grok-imagine-image-pro", "grok-2-image"}
    assert models["grok-imagine-image-quality"]["image_price"] == FALLBACK_PRICE_USD_TICKS_PER_IMAGE
    assert models["grok-2-image"]["aliases"] == ["grok-2-image-1212"]
    assert by_alias.json()["id"] == "grok-2-image"
    assert unknown.status_code == 404


# Generation ------------------------------------------------------------------------------------


def test_generate_returns_temporary_urls_of_real_jpegs(xai_emulator: XaiEmulator) -> None:
    response = generate(xai_emulator, n=2, model="grok-imagine-image")
    payload = response.json()

    assert response.status_code == 200
    assert payload["model"] == "grok-imagine-image"
    assert payload["block_reason"] is None
    assert payload["usage"]["cost_in_usd_ticks"] == 2 * FALLBACK_PRICE_USD_TICKS_PER_IMAGE
    assert len(payload["data"]) == 2
    for item in payload["data"]:
        assert "/tmp-images/xai-tmp-imgen-" in item["url"]
        assert item["url"].endswith(".jpeg")
        assert item["b64_json"] is None
        assert item["mime_type"] == "image/jpeg"
        assert item["revised_prompt"] == "A detailed rendering of: a lighthouse at dusk"
        download = requests.get(item["url"], timeout=10)
        assert download.headers["Content-Type"] == "image/jpeg"
        assert download.content[:3] == b"\xff\xd8\xff"
        assert decode(download.content).format == "JPEG"
    assert xai_emulator.images_billed == 2


def test_generate_b64_json_inline_with_and_without_data_uri_prefix(xai_emulator: XaiEmulator) -> None:
    plain = generate(xai_emulator, response_format="b64_json").json()["data"][0]
    xai_emulator.configure(b64_data_uri_prefix=True)
    prefixed = generate(xai_emulator, response_format="b64_json").json()["data"][0]

    assert plain["url"] is None
    assert decode(base64.b64decode(plain["b64_json"], validate=True)).format == "JPEG"
    assert prefixed["b64_json"].startswith("data:image/jpeg;base64,")
    assert decode_b64_image(prefixed["b64_json"]) == decode_b64_image(plain["b64_json"])


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size"),
    [
        ("1:1", "1k", (1024, 1024)),
        ("16:9", "2k", (2048, 1152)),
        ("9:16", "1k", (576, 1024)),
        ("19.5:9", "1k", (1024, 473)),
        ("auto", "2k", (2048, 2048)),
        (None, None, (1024, 1024)),
    ],
)
def test_image_size_follows_aspect_ratio_and_resolution(
    xai_emulator: XaiEmulator, aspect_ratio: str | None, resolution: str | None, size: tuple[int, int]
) -> None:
    body = {"response_format": "b64_json", "aspect_ratio": aspect_ratio, "resolution": resolution}
    payload = generate(xai_emulator, **{key: value for key, value in body.items() if value}).json()

    assert decode(base64.b64decode(payload["data"][0]["b64_json"])).size == size


def test_content_is_deterministic_and_differs_per_prompt_and_index(xai_emulator: XaiEmulator) -> None:
    def images(prompt: str) -> list[bytes]:
        payload = generate(xai_emulator, prompt=prompt, n=2, response_format="b64_json").json()
        return [base64.b64decode(item["b64_json"]) for item in payload["data"]]

    first, again, other = images("a red fox"), images("a red fox"), images("a blue whale")

    assert first == again
    assert first[0] != first[1]
    assert set(first).isdisjoint(other)


def test_model_alias_is_resolved_and_priced(xai_emulator: XaiEmulator) -> None:
    payload = generate(xai_emulator, model="grok-2-image-1212").json()
    models = {model["id"]: model for model in call(xai_emulator, "GET", "image-generation-models").json()["models"]}

    assert payload["model"] == "grok-2-image"
    assert payload["usage"]["cost_in_usd_ticks"] == models["grok-2-image"]["image_price"]


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        ({"n": 11}, 422, "n"),
        ({"n": "2"}, 422, "n"),
        ({"aspect_ratio": "5:4"}, 422, "aspect_ratio"),
        ({"resolution": "4k"}, 422, "resolution"),
        ({"response_format": "png"}, 422, "response_format"),
        ({"size": "1024x1024"}, 422, "size"),
        ({"prompt": "   "}, 422, "prompt"),
        ({"model": "grok-nope"}, 404, "grok-nope"),
    ],
)
def test_invalid_generate_requests_are_rejected(
    xai_emulator: XaiEmulator, body: dict[str, Any], status: int, mentions: str
) -> None:
    response = generate(xai_emulator, **body)

    assert response.status_code == status
    assert mentions in response.json()["error"]
    if status == 422:
        assert response.json()["code"] == INVALID_ARGUMENT
    assert xai_emulator.images_billed == 0


def test_malformed_json_is_400_and_missing_prompt_is_422(xai_emulator: XaiEmulator) -> None:
    headers = {"Authorization": f"Bearer {xai_emulator.api_key}", "Content-Type": "application/json"}
    malformed = requests.post(
        f"{xai_emulator.base_url}/images/generations", data=b'{"prompt": ', headers=headers, timeout=10
    )
    missing = call(xai_emulator, "POST", "images/generations", {"n": 1})

    assert malformed.status_code == 400
    assert missing.status_code == 422
    assert "prompt" in missing.json()["error"]


def test_moderated_prompt_yields_filtered_images_that_are_not_billed(xai_emulator: XaiEmulator) -> None:
    per_image = generate(xai_emulator, prompt=f"something {MODERATION_MARKER}", n=2).json()
    xai_emulator.configure(moderation_style="block_reason")
    blocked = generate(xai_emulator, prompt=f"something {MODERATION_MARKER}").json()

    assert [item["respect_moderation"] for item in per_image["data"]] == [False, False]
    assert all(item["url"] is None and item["b64_json"] is None for item in per_image["data"])
    assert all(image.filtered for image in parse_image_response(per_image, "m").images)
    assert blocked["block_reason"]
    assert blocked["data"] == []
    assert per_image["usage"]["cost_in_usd_ticks"] == blocked["usage"]["cost_in_usd_ticks"] == 0
    assert xai_emulator.images_billed == 0


# Edits -----------------------------------------------------------------------------------------


def test_edit_with_one_data_uri_keeps_the_source_aspect_and_bills_the_input(xai_emulator: XaiEmulator) -> None:
    body = {"prompt": "make it snow", "image": {"type": "image_url", "url": data_uri(300, 100)}}
    response = call(
        xai_emulator, "POST", "images/edits", {**body, "aspect_ratio": "9:16", "response_format": "b64_json"}
    )
    payload = response.json()

    assert response.status_code == 200
    assert decode(base64.b64decode(payload["data"][0]["b64_json"])).size == (1024, 341)
    assert payload["usage"]["cost_in_usd_ticks"] == FALLBACK_PRICE_USD_TICKS_PER_IMAGE + INPUT_IMAGE_PRICE_USD_TICKS


def test_multi_image_edit_uses_aspect_ratio_and_bills_each_input(xai_emulator: XaiEmulator) -> None:
    sources = [
        {"type": "image_url", "url": data_uri(50, 50, "JPEG")},
        {"type": "image_url", "url": "https://example.com/cat.png"},
    ]
    body = {"prompt": "combine", "images": sources, "aspect_ratio": "2:1", "response_format": "b64_json"}
    payload = call(xai_emulator, "POST", "images/edits", body).json()

    assert decode(base64.b64decode(payload["data"][0]["b64_json"])).size == (1024, 512)
    assert payload["usage"]["cost_in_usd_ticks"] == FALLBACK_PRICE_USD_TICKS_PER_IMAGE + 2 * INPUT_IMAGE_PRICE_USD_TICKS


@pytest.mark.parametrize(
    "sources",
    [
        {"image": {"type": "image_url", "url": "data:image/png;base64," + base64.b64encode(b"not an image").decode()}},
        {"image": {"type": "image_url", "url": "data:image/png;base64,@@@"}},
        {"image": {"type": "image_url", "url": "ftp://example.com/a.png"}},
        {"images": [{"type": "image_url", "url": "https://example.com/a.png"}] * 4},
        {"image": {"type": "image_url", "url": "https://example.com/a.png"}, "images": []},
        {},
    ],
)
def test_invalid_edit_sources_are_422(xai_emulator: XaiEmulator, sources: dict[str, Any]) -> None:
    response = call(xai_emulator, "POST", "images/edits", {"prompt": "edit", **sources})

    assert response.status_code == 422
    assert response.json()["code"] == INVALID_ARGUMENT


# Faults ----------------------------------------------------------------------------------------


def test_fixed_and_random_latency_delay_api_calls(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(latency=0.3)
    started = time.monotonic()
    call(xai_emulator, "GET", "api-key")
    fixed = time.monotonic() - started
    xai_emulator.configure(latency=(0.1, 0.2))
    started = time.monotonic()
    call(xai_emulator, "GET", "api-key")
    ranged = time.monotonic() - started

    assert 0.3 <= fixed < 1.0
    assert 0.1 <= ranged < 0.8


def test_latency_is_per_request_not_serialised(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(latency=0.5)
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda number: generate(xai_emulator, prompt=f"p{number}").status_code, range(16)))
    elapsed = time.monotonic() - started

    assert statuses == [200] * 16
    assert elapsed < 2.0  # 16 x 0.5 s would take 8 s if serialised


def test_status_script_answers_the_next_calls_in_order(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(status_script=[429, 503, 500], retry_after=3)
    first, second, third, fourth = (generate(xai_emulator) for _ in range(4))

    assert [r.status_code for r in (first, second, third, fourth)] == [429, 503, 500, 200]
    assert first.headers["Retry-After"] == "3"
    assert "Retry-After" not in second.headers
    assert first.json()["error"]
    assert xai_emulator.config.status_script == []
    assert xai_emulator.images_billed == 1


def test_status_script_429_can_omit_retry_after(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(status_script=[429], retry_after=None)
    response = generate(xai_emulator)

    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_reset_connections_close_without_a_response(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(reset_connections=2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            generate(xai_emulator)
    after = generate(xai_emulator)

    assert after.status_code == 200
    assert [record.status for record in xai_emulator.requests_log] == [None, None, 200]
    assert xai_emulator.images_billed == 1


def test_invalid_json_fault_sends_200_with_a_non_json_body(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(invalid_json=1)
    broken = generate(xai_emulator)
    after = generate(xai_emulator)

    assert broken.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        broken.json()
    assert after.json()["data"]


def test_truncated_image_download_is_cut_short(xai_emulator: XaiEmulator) -> None:
    url = generate(xai_emulator).json()["data"][0]["url"]
    xai_emulator.configure(truncated_images=1)

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=10)
    assert decode(requests.get(url, timeout=10).content).format == "JPEG"


def test_slow_image_download_is_paced(xai_emulator: XaiEmulator) -> None:
    url = generate(xai_emulator, aspect_ratio="1:1").json()["data"][0]["url"]
    size = len(requests.get(url, timeout=10).content)
    xai_emulator.configure(slow_image_bytes_per_second=size * 2)
    started = time.monotonic()
    slow = requests.get(url, timeout=10).content

    assert len(slow) == size
    assert time.monotonic() - started >= 0.45


def test_png_image_format(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(image_format="png")
    item = generate(xai_emulator).json()["data"][0]
    download = requests.get(item["url"], timeout=10)

    assert item["mime_type"] == "image/png"
    assert item["url"].endswith(".png")
    assert download.content.startswith(b"\x89PNG")
    assert decode(download.content).format == "PNG"


def test_temporary_images_expire_after_their_ttl(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(image_ttl=0.3)
    url = generate(xai_emulator).json()["data"][0]["url"]
    fresh = requests.get(url, timeout=10)
    time.sleep(0.35)
    expired = requests.get(url, timeout=10)
    unknown = requests.get(url.rsplit("/", 1)[0] + "/xai-tmp-imgen-nope.jpeg", timeout=10)

    assert fresh.status_code == 200
    assert expired.status_code == 403
    assert "expired" in expired.json()["error"]
    assert unknown.status_code == 404


def test_expire_images_expires_every_url_now(xai_emulator: XaiEmulator) -> None:
    urls = [item["url"] for item in generate(xai_emulator, n=2).json()["data"]]
    xai_emulator.expire_images()

    assert [requests.get(url, timeout=10).status_code for url in urls] == [403, 403]
    assert requests.get(generate(xai_emulator).json()["data"][0]["url"], timeout=10).status_code == 200


def test_rate_limit_applies_to_generation_only(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(rate_limit_rps=2)
    statuses = [generate(xai_emulator) for _ in range(3)]
    models = call(xai_emulator, "GET", "image-generation-models")

    assert [response.status_code for response in statuses] == [200, 200, 429]
    assert int(statuses[2].headers["Retry-After"]) >= 1
    assert models.status_code == 200
    assert xai_emulator.images_billed == 2


def test_unknown_fault_fields_and_bad_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="no_such_setting"):
        XaiEmulator(no_such_setting=1)
    emulator = XaiEmulator()
    with pytest.raises(ValueError, match="status_script"):
        emulator.configure(status_script=[200])
    with pytest.raises(ValueError, match="latency"):
        emulator.configure(latency=(2, 1))


# Batches ---------------------------------------------------------------------------------------


@pytest.fixture
def batches(xai_emulator: XaiEmulator) -> XaiEmulator:
    """An emulator whose batch requests complete fast and which allows many batch creations."""
    xai_emulator.configure(batch_seconds=0.05, batch_create_per_second=None)
    return xai_emulator


def create_batch(emulator: XaiEmulator, name: str = "nightly") -> str:
    response = call(emulator, "POST", "batches", {"name": name})
    assert response.status_code == 200, response.text
    return str(response.json()["batch_id"])


def add(emulator: XaiEmulator, batch_id: str, *entries: dict[str, Any]) -> requests.Response:
    return call(emulator, "POST", f"batches/{batch_id}/requests", {"batch_requests": list(entries)})


def all_results(emulator: XaiEmulator, batch_id: str, page_size: int) -> tuple[list[dict[str, Any]], int]:
    pages, token = [], None
    while True:
        params = {"page_size": page_size, **({"pagination_token": token} if token else {})}
        page = call(emulator, "GET", f"batches/{batch_id}/results", params=params).json()
        pages.append(page)
        token = page.get("pagination_token")
        if not token:
            return pages, len(pages)


@pytest.mark.parametrize("shape", ["results", "succeeded_failed"])
def test_batch_lifecycle_with_paged_results(batches: XaiEmulator, shape: str) -> None:
    batches.configure(results_shape=shape)
    batch_id = create_batch(batches)
    entries = [batch_entry(f"req-{number}", f"prompt {number}") for number in range(4)]
    entries.append(batch_entry("req-fail", f"prompt {BATCH_FAILURE_MARKER}"))
    entries.append(batch_entry("req-b64", "inline", n=2, response_format="b64_json"))

    added = add(batches, batch_id, *entries)
    pending = call(batches, "GET", f"batches/{batch_id}").json()
    done = wait_until_done(batches, batch_id)
    pages, page_count = all_results(batches, batch_id, page_size=2)

    assert added.status_code == 200
    assert pending["state"]["num_requests"] == 6
    assert pending["state"]["num_pending"] == 6
    assert done["state"] == {"num_requests": 6, "num_pending": 0, "num_success": 5, "num_error": 1, "num_cancelled": 0}
    assert page_count == 3
    assert all(shape in page or "succeeded" in page for page in pages)
    results = {result.batch_request_id: result for page in pages for result in parse_batch_results_page(page, "m")[0]}
    assert set(results) == {entry["batch_request_id"] for entry in entries}
    assert results["req-fail"].error == "Image generation failed (emulated failure)."
    assert results["req-fail"].result is None
    assert [decode(image.data or b"").format for image in results["req-b64"].result.images] == ["JPEG", "JPEG"]
    url = results["req-0"].result.images[0].url
    assert decode(requests.get(url, timeout=10).content).format == "JPEG"
    expected_cost = round(6 * FALLBACK_PRICE_USD_TICKS_PER_IMAGE * BATCH_PRICE_FACTOR)
    assert done["cost_breakdown"]["total_cost_usd_ticks"] == expected_cost
    assert sum(result.result.cost_usd_ticks for result in results.values() if result.result) == expected_cost


def test_batch_images_are_billed_exactly_once(batches: XaiEmulator) -> None:
    batch_id = create_batch(batches)
    add(batches, batch_id, batch_entry("a", "one", n=3), batch_entry("b", f"two {MODERATION_MARKER}"))
    time.sleep(0.1)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: call(batches, "GET", f"batches/{batch_id}/results"), range(8)))
    wait_until_done(batches, batch_id)

    assert batches.images_billed == 3
    assert batches.stats()["images_billed"] == 3


def test_batch_requests_stay_pending_until_batch_seconds(batches: XaiEmulator) -> None:
    batches.configure(batch_seconds=0.4)
    batch_id = create_batch(batches)
    add(batches, batch_id, batch_entry("a", "one"))
    early = call(batches, "GET", f"batches/{batch_id}/results").json()
    time.sleep(0.45)
    late = call(batches, "GET", f"batches/{batch_id}/results").json()

    assert early["results"] == []
    assert "pagination_token" not in early
    assert [item["batch_request_id"] for item in late["results"]] == ["a"]


def test_duplicate_request_ids_are_400(batches: XaiEmulator) -> None:
    batch_id = create_batch(batches)
    same_call = add(batches, batch_id, batch_entry("x", "one"), batch_entry("x", "two"))
    first = add(batches, batch_id, batch_entry("y", "one"))
    again = add(batches, batch_id, batch_entry("y", "two"))

    assert same_call.status_code == 400
    assert first.status_code == 200
    assert again.status_code == 400
    assert "y" in again.json()["error"]
    assert call(batches, "GET", f"batches/{batch_id}").json()["state"]["num_requests"] == 1


@pytest.mark.parametrize(
    "entry",
    [
        batch_entry("a", ""),
        batch_entry("a", "ok", n=0),
        {"batch_request_id": "a", "batch_request": {"chat_get_completion": {"prompt": "x"}}},
        {"batch_request_id": "", "batch_request": {BATCH_REQUEST_KIND: {"prompt": "x"}}},
    ],
)
def test_invalid_batch_requests_are_422_and_nothing_is_added(batches: XaiEmulator, entry: dict[str, Any]) -> None:
    batch_id = create_batch(batches)
    response = add(batches, batch_id, batch_entry("good", "fine"), entry)

    assert response.status_code == 422
    assert call(batches, "GET", f"batches/{batch_id}").json()["state"]["num_requests"] == 0


def test_unknown_batch_is_404_everywhere(batches: XaiEmulator) -> None:
    responses = [
        call(batches, "GET", "batches/batch_nope"),
        call(batches, "GET", "batches/batch_nope/results"),
        call(batches, "POST", "batches/batch_nope:cancel"),
        add(batches, "batch_nope", batch_entry("a", "x")),
    ]

    assert [response.status_code for response in responses] == [404] * 4


def test_cancel_cancels_pending_requests_and_closes_the_batch(batches: XaiEmulator) -> None:
    batches.configure(batch_seconds=60)
    batch_id = create_batch(batches)
    add(batches, batch_id, batch_entry("a", "one"), batch_entry("b", "two"))
    cancelled = call(batches, "POST", f"batches/{batch_id}:cancel")
    late_add = add(batches, batch_id, batch_entry("c", "three"))

    assert cancelled.status_code == 200
    assert cancelled.json()["cancel_time"]
    assert cancelled.json()["state"]["num_cancelled"] == 2
    assert cancelled.json()["state"]["num_pending"] == 0
    assert late_add.status_code == 400
    assert batches.images_billed == 0


def test_expire_batch_marks_it_cancelled_by_xai(batches: XaiEmulator) -> None:
    batches.configure(batch_seconds=60)
    first, second = create_batch(batches), create_batch(batches)
    add(batches, first, batch_entry("a", "one"))
    add(batches, second, batch_entry("a", "one"))
    expired = batches.expire_batch(first)
    by_control = requests.post(
        f"{batches.url}/_emulator/batches/{second}:expire", json={"message": "Ran out of time"}, timeout=10
    ).json()

    assert expired["cancel_by_xai_message"] == "Batch expired"
    assert expired["state"]["num_cancelled"] == 1
    assert by_control["cancel_by_xai_message"] == "Ran out of time"
    assert call(batches, "GET", f"batches/{second}").json()["cancel_time"]


def test_batch_creation_is_limited_per_second(xai_emulator: XaiEmulator) -> None:
    first = call(xai_emulator, "POST", "batches", {"name": "a"})
    second = call(xai_emulator, "POST", "batches", {"name": "b"})
    missing_name = call(xai_emulator, "POST", "batches", {})

    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "1"
    assert missing_name.status_code == 422


def test_add_calls_are_limited_in_size_and_pace(batches: XaiEmulator) -> None:
    batch_id = create_batch(batches)
    batches.configure(batch_add_max_bytes=500, batch_add_max_calls=2, batch_add_window_seconds=30)
    too_big = add(batches, batch_id, batch_entry("big", "x" * 600))
    ok = [add(batches, batch_id, batch_entry(f"r{number}", "x")) for number in range(2)]
    over_pace = add(batches, batch_id, batch_entry("r2", "x"))

    assert too_big.status_code == 413
    assert [response.status_code for response in ok] == [200, 200]
    assert over_pace.status_code == 429
    assert 1 <= int(over_pace.headers["Retry-After"]) <= 30


def test_batches_are_listed_with_pagination(batches: XaiEmulator) -> None:
    ids = [create_batch(batches, f"b{number}") for number in range(3)]
    first = call(batches, "GET", "batches", params={"page_size": 2}).json()
    second = call(batches, "GET", "batches", params={"page_size": 2, "pagination_token": first["pagination_token"]})
    bad_token = call(batches, "GET", "batches", params={"pagination_token": "garbage"})
    bad_size = call(batches, "GET", "batches", params={"page_size": "0"})

    assert [batch["batch_id"] for batch in first["batches"] + second.json()["batches"]] == ids
    assert "pagination_token" not in second.json()
    assert bad_token.status_code == 400
    assert bad_size.status_code == 422


# Controls, log, server ---------------------------------------------------------------------------


def test_control_endpoints_configure_inspect_and_reset(xai_emulator: XaiEmulator) -> None:
    control = f"{xai_emulator.url}/_emulator"
    configured = requests.post(f"{control}/config", json={"status_script": [503], "image_ttl": 5}, timeout=10)
    invalid = requests.post(f"{control}/config", json={"results_shape": "sideways"}, timeout=10)
    unavailable = generate(xai_emulator)
    generate(xai_emulator, n=3)
    stats = requests.get(f"{control}/stats", timeout=10).json()
    reset = requests.post(f"{control}/reset", timeout=10)
    after = requests.get(f"{control}/stats", timeout=10).json()
    config = requests.get(f"{control}/config", timeout=10).json()

    assert configured.json()["status_script"] == [503]
    assert invalid.status_code == 422
    assert unavailable.status_code == 503
    assert stats == {
        "images_billed": 3,
        "cost_usd_ticks": 3 * FALLBACK_PRICE_USD_TICKS_PER_IMAGE,
        "requests": 2,
        "batches_created": 0,
        "temporary_images": 3,
    }
    assert reset.status_code == 200
    assert after["images_billed"] == after["requests"] == 0
    assert config["image_ttl"] == 3600.0


def test_expire_images_control_endpoint(xai_emulator: XaiEmulator) -> None:
    url = generate(xai_emulator).json()["data"][0]["url"]
    requests.post(f"{xai_emulator.url}/_emulator/expire-images", timeout=10)

    assert requests.get(url, timeout=10).status_code == 403


def test_request_log_records_calls_without_the_key(xai_emulator: XaiEmulator) -> None:
    generate(xai_emulator, n=1)
    big = {"prompt": "edit", "image": {"type": "image_url", "url": "data:image/png;base64," + "A" * 70_000}}
    call(xai_emulator, "POST", "images/edits", big)
    call(xai_emulator, "GET", "batches", params={"page_size": 5})
    log = xai_emulator.requests_log

    assert [(record.method, record.path, record.status) for record in log] == [
        ("POST", "/v1/images/generations", 200),
        ("POST", "/v1/images/edits", 422),
        ("GET", "/v1/batches", 200),
    ]
    assert log[0].json == {"prompt": "a lighthouse at dusk", "n": 1}
    assert log[1].json is None
    assert log[1].body_size > 70_000
    assert log[2].query == "page_size=5"
    assert log[0].time <= log[1].time <= log[2].time
    assert xai_emulator.api_key not in repr(log)


def test_connection_uri_is_an_airflow_connection(xai_emulator: XaiEmulator) -> None:
    connection = json.loads(xai_emulator.connection_uri())

    assert connection == {"conn_type": "xai", "password": xai_emulator.api_key, "host": xai_emulator.base_url}
    assert xai_emulator.base_url.startswith("http://127.0.0.1:")
    assert xai_emulator.base_url.endswith("/v1")


def test_emulator_stops_and_refuses_connections() -> None:
    with XaiEmulator() as emulator:
        base_url = emulator.base_url
        assert call(emulator, "GET", "api-key").status_code == 200

    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base_url}/api-key", timeout=2)
    with pytest.raises(RuntimeError):
        emulator.base_url  # noqa: B018


def test_cli_serves_until_terminated() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_xai_image.testing", "--port", "0", "--api-key", "xai-cli-key"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
        response = requests.get(
            f"{lines['XAI_BASE_URL']}/api-key", headers={"Authorization": "Bearer xai-cli-key"}, timeout=10
        )
        assert lines["XAI_API_KEY"] == "xai-cli-key"
        assert json.loads(lines["AIRFLOW_CONN_XAI_DEFAULT"])["host"] == lines["XAI_BASE_URL"]
        assert response.status_code == 200
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
