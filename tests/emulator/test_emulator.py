"""The xAI emulator over real HTTP: models, generation, edits, faults, controls and the server itself."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest
import requests
from emulator_support import (
    IMAGINE_PRICE,
    INPUT_PRICE,
    INVALID_ARGUMENT,
    QUALITY_PRICE,
    b64_bytes,
    call,
    data_uri,
    decode,
    edit,
    generate,
    image_bytes,
    upload,
)

from airflow_provider_xai_image.testing import MODERATION_MARKER, XaiEmulator

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


def test_models_are_listed_with_prices_pricing_and_aliases(xai_emulator: XaiEmulator) -> None:
    listed = call(xai_emulator, "GET", "image-generation-models").json()
    models = {model["id"]: model for model in listed["models"]}

    assert set(listed) == {"models"}
    assert set(models) == {"grok-imagine-image-quality", "grok-imagine-image", "grok-imagine-image-2.0"}
    assert models["grok-imagine-image-quality"]["image_price"] == QUALITY_PRICE
    assert models["grok-imagine-image-quality"]["aliases"] == ["grok-imagine-image-pro"]
    assert models["grok-imagine-image"]["image_price"] == IMAGINE_PRICE
    assert models["grok-imagine-image-2.0"]["image_price"] == 500_000_000
    assert sorted(models["grok-imagine-image-2.0"]["pricing"], key=lambda tier: tier["price_per_image"]) == [
        {"quality": "low", "resolution": "1k", "price_per_image": 200_000_000},
        {"quality": "low", "resolution": "2k", "price_per_image": 400_000_000},
        {"quality": "medium", "resolution": "1k", "price_per_image": 500_000_000},
        {"quality": "medium", "resolution": "2k", "price_per_image": 800_000_000},
    ]
    assert "pricing" not in models["grok-imagine-image"]
    assert "pricing" not in models["grok-imagine-image-quality"]


@pytest.mark.parametrize(
    ("name", "status", "model_id"),
    [
        ("grok-imagine-image-pro", 200, "grok-imagine-image-quality"),
        ("grok-imagine-image-2.0", 200, "grok-imagine-image-2.0"),
        ("grok-2-image", 404, None),
        ("grok-2-image-1212", 404, None),
        ("grok-nope", 404, None),
    ],
)
def test_one_model_by_id_or_alias(xai_emulator: XaiEmulator, name: str, status: int, model_id: str | None) -> None:
    response = call(xai_emulator, "GET", f"image-generation-models/{name}")

    assert response.status_code == status
    if model_id is not None:
        assert response.json()["id"] == model_id


# Generation ------------------------------------------------------------------------------------


def test_generate_returns_temporary_urls_of_real_jpegs(xai_emulator: XaiEmulator) -> None:
    response = generate(xai_emulator, n=2, model="grok-imagine-image")
    payload = response.json()

    assert response.status_code == 200
    assert payload["model"] == "grok-imagine-image"
    assert payload["block_reason"] is None
    assert payload["usage"] == {"cost_in_usd_ticks": 2 * IMAGINE_PRICE}
    assert len(payload["data"]) == 2
    for item in payload["data"]:
        assert "/tmp-images/xai-tmp-imgen-" in item["url"]
        assert item["url"].endswith(".jpeg")
        assert item["b64_json"] is None
        assert item["mime_type"] == "image/jpeg"
        assert item["respect_moderation"] is True
        assert "revised_prompt" not in item
        download = requests.get(item["url"], timeout=10)
        assert download.headers["Content-Type"] == "image/jpeg"
        assert decode(download.content).format == "JPEG"
    assert xai_emulator.images_billed == 2


def test_default_model_is_quality_and_pro_is_its_alias(xai_emulator: XaiEmulator) -> None:
    default = generate(xai_emulator).json()
    pro = generate(xai_emulator, model="grok-imagine-image-pro").json()

    assert default["model"] == pro["model"] == "grok-imagine-image-quality"
    assert default["usage"]["cost_in_usd_ticks"] == pro["usage"]["cost_in_usd_ticks"] == QUALITY_PRICE
    assert xai_emulator.cost_usd_ticks == 2 * QUALITY_PRICE


@pytest.mark.parametrize(
    ("body", "price"),
    [
        ({}, 500_000_000),
        ({"quality": "low"}, 200_000_000),
        ({"quality": "low", "resolution": "2k"}, 400_000_000),
        ({"quality": "medium", "resolution": "1k"}, 500_000_000),
        ({"resolution": "2k"}, 800_000_000),
    ],
)
def test_model_2_0_bills_by_quality_and_resolution(xai_emulator: XaiEmulator, body: dict[str, Any], price: int) -> None:
    payload = generate(xai_emulator, model="grok-imagine-image-2.0", n=2, **body).json()

    assert payload["model"] == "grok-imagine-image-2.0"
    assert payload["usage"]["cost_in_usd_ticks"] == 2 * price
    assert xai_emulator.cost_usd_ticks == 2 * price


def test_other_models_ignore_quality_but_high_is_refused(xai_emulator: XaiEmulator) -> None:
    low = generate(xai_emulator, model="grok-imagine-image", quality="low", resolution="2k").json()
    high = [
        generate(xai_emulator, model=model, quality="high")
        for model in ("grok-imagine-image", "grok-imagine-image-2.0")
    ]

    assert low["usage"]["cost_in_usd_ticks"] == IMAGINE_PRICE
    for response in high:
        assert response.status_code == 400
        assert "quality" in response.json()["error"]
        assert response.json()["code"] == INVALID_ARGUMENT
    assert xai_emulator.images_billed == 1


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("absent", None), ("empty", ""), ("text", "A detailed rendering of: a lighthouse at dusk")],
)
def test_revised_prompt_is_absent_unless_configured(
    xai_emulator: XaiEmulator, setting: str, expected: str | None
) -> None:
    if setting != "absent":
        xai_emulator.configure(revised_prompt=setting)
    item = generate(xai_emulator).json()["data"][0]

    assert item.get("revised_prompt", None) == expected
    assert ("revised_prompt" in item) == (expected is not None)


def test_generate_b64_json_inline_with_and_without_data_uri_prefix(xai_emulator: XaiEmulator) -> None:
    plain = generate(xai_emulator, response_format="b64_json").json()["data"][0]
    xai_emulator.configure(b64_data_uri_prefix=True)
    prefixed = generate(xai_emulator, response_format="b64_json").json()["data"][0]

    assert plain["url"] is None
    assert decode(base64.b64decode(plain["b64_json"], validate=True)).format == "JPEG"
    assert prefixed["b64_json"].startswith("data:image/jpeg;base64,")
    assert b64_bytes(prefixed["b64_json"]) == b64_bytes(plain["b64_json"])


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


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        ({"n": 11}, 422, "n"),
        ({"n": 0}, 422, "n"),
        ({"n": "2"}, 422, "n"),
        ({"aspect_ratio": "5:4"}, 422, "aspect_ratio"),
        ({"resolution": "4k"}, 422, "resolution"),
        ({"quality": "high"}, 400, "quality"),
        ({"quality": 1}, 422, "quality"),
        ({"response_format": "png"}, 422, "response_format"),
        ({"size": "1024x1024"}, 422, "size"),
        ({"style": "vivid"}, 422, "style"),
        ({"prompt": "   "}, 422, "prompt"),
        ({"model": "grok-nope"}, 404, "grok-nope"),
        ({"model": "grok-2-image"}, 404, "grok-2-image"),
    ],
)
def test_invalid_generate_requests_are_rejected(
    xai_emulator: XaiEmulator, body: dict[str, Any], status: int, mentions: str
) -> None:
    response = generate(xai_emulator, **body)

    assert response.status_code == status
    assert mentions in response.json()["error"]
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

    assert per_image["block_reason"] is None
    assert [item["respect_moderation"] for item in per_image["data"]] == [False, False]
    assert all(item["url"] is None and item["b64_json"] is None for item in per_image["data"])
    assert blocked["block_reason"]
    assert blocked["data"] == []
    assert per_image["usage"]["cost_in_usd_ticks"] == blocked["usage"]["cost_in_usd_ticks"] == 0
    assert xai_emulator.images_billed == 0


# Edits -----------------------------------------------------------------------------------------


def test_edit_with_one_data_uri_keeps_the_source_aspect_and_bills_the_input(xai_emulator: XaiEmulator) -> None:
    source = {"type": "image_url", "url": data_uri(300, 100)}
    response = edit(
        xai_emulator, model="grok-imagine-image", image=source, aspect_ratio="9:16", response_format="b64_json"
    )
    payload = response.json()

    assert response.status_code == 200
    assert decode(base64.b64decode(payload["data"][0]["b64_json"])).size == (1024, 341)
    assert payload["usage"]["cost_in_usd_ticks"] == IMAGINE_PRICE + INPUT_PRICE


def test_multi_image_edit_uses_aspect_ratio_and_bills_each_input(xai_emulator: XaiEmulator) -> None:
    sources = [
        {"type": "image_url", "url": data_uri(50, 50, "JPEG")},
        {"url": "https://example.com/cat.png"},
        {"url": data_uri(20, 10, "WEBP")},
    ]
    payload = edit(
        xai_emulator, model="grok-imagine-image", images=sources, aspect_ratio="2:1", response_format="b64_json"
    ).json()

    assert decode(base64.b64decode(payload["data"][0]["b64_json"])).size == (1024, 512)
    assert payload["usage"]["cost_in_usd_ticks"] == IMAGINE_PRICE + 3 * INPUT_PRICE


def test_edit_source_may_be_an_uploaded_file(xai_emulator: XaiEmulator) -> None:
    png = upload(xai_emulator, image_bytes(100, 300), filename="source.png", purpose="image").json()["id"]
    text = upload(xai_emulator, b"not an image", filename="notes.txt").json()["id"]
    by_file = edit(xai_emulator, image={"file_id": png}, response_format="b64_json")
    by_file_typed = edit(xai_emulator, images=[{"file_id": png}, {"type": "image_url", "file_id": png}])
    not_an_image = edit(xai_emulator, images=[{"file_id": png}, {"file_id": text}])
    unknown = edit(xai_emulator, image={"file_id": "file_nope"})

    assert by_file.status_code == 200
    assert decode(b64_bytes(by_file.json()["data"][0]["b64_json"])).size == (341, 1024)
    assert by_file.json()["usage"]["cost_in_usd_ticks"] == QUALITY_PRICE + INPUT_PRICE
    assert by_file_typed.status_code == 200
    assert not_an_image.status_code == 400
    assert "images.1" in not_an_image.json()["error"]
    assert unknown.status_code == 404
    assert "file_nope" in unknown.json()["error"]
    assert xai_emulator.images_billed == 2


def test_edits_of_different_sources_differ(xai_emulator: XaiEmulator) -> None:
    def edited(source: str) -> bytes:
        payload = edit(xai_emulator, image={"url": source}, response_format="b64_json").json()
        return b64_bytes(payload["data"][0]["b64_json"])

    assert edited(data_uri(64, 64)) != edited(data_uri(64, 64, "JPEG"))


@pytest.mark.parametrize(
    "sources",
    [
        {"image": "https://example.com/a.png"},
        {"images": ["https://example.com/a.png"]},
        {"image": {"type": "image_url", "url": "ftp://example.com/a.png"}},
        {"image": {"type": "input_image", "url": "https://example.com/a.png"}},
        {"image": {"image_url": "https://example.com/a.png"}},
        {"image": {"type": "image_url"}},
        {"image": {"url": "https://example.com/a.png", "file_id": "file_x"}},
        {"images": [{"url": "https://example.com/a.png"}] * 4},
        {"image": {"url": "https://example.com/a.png"}, "images": []},
        {},
    ],
)
def test_malformed_edit_sources_are_422(xai_emulator: XaiEmulator, sources: dict[str, Any]) -> None:
    response = call(xai_emulator, "POST", "images/edits", {"prompt": "edit", **sources})

    assert response.status_code == 422
    assert response.json()["code"] == INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("sources", "named"),
    [
        ({"image": {"url": "data:image/png;base64," + base64.b64encode(b"not an image").decode()}}, "image"),
        ({"image": {"url": "data:image/png;base64,@@@"}}, "image"),
        ({"image": {"url": data_uri(8, 8, "GIF")}}, "image"),
        ({"images": [{"url": data_uri(8, 8)}, {"url": data_uri(8, 8, "BMP")}]}, "images.1"),
    ],
)
def test_source_images_xai_cannot_take_are_400_naming_the_source(
    xai_emulator: XaiEmulator, sources: dict[str, Any], named: str
) -> None:
    response = call(xai_emulator, "POST", "images/edits", {"prompt": "edit", **sources})

    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{named}:")
    assert xai_emulator.images_billed == 0


def test_source_images_over_10_mib_are_400(xai_emulator: XaiEmulator) -> None:
    def padded_png(total: int) -> str:
        png = image_bytes(8, 8)
        return "data:image/png;base64," + base64.b64encode(png + b"\0" * (total - len(png))).decode()

    at_limit = edit(xai_emulator, image={"url": padded_png(10 * 1024 * 1024)})
    over = edit(xai_emulator, image={"url": padded_png(10 * 1024 * 1024 + 1)})

    assert at_limit.status_code == 200
    assert over.status_code == 400
    assert over.json()["error"].startswith("image:")


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


def test_a_generation_is_billed_even_when_the_client_timed_out(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(latency=0.4)
    with pytest.raises(requests.ReadTimeout):
        requests.post(
            f"{xai_emulator.base_url}/images/generations",
            json={"prompt": "slow", "n": 2},
            headers={"Authorization": f"Bearer {xai_emulator.api_key}"},
            timeout=0.1,
        )
    time.sleep(0.6)

    assert xai_emulator.images_billed == 2


def test_status_script_answers_the_next_calls_in_order(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(status_script=[429, 503, 500], retry_after=3)
    first, second, third, fourth = (generate(xai_emulator) for _ in range(4))

    assert [r.status_code for r in (first, second, third, fourth)] == [429, 503, 500, 200]
    assert first.headers["Retry-After"] == "3"
    assert "Retry-After" not in second.headers
    assert first.json()["error"]
    assert xai_emulator.config.status_script == []
    assert xai_emulator.images_billed == 1


def test_generation_status_script_answers_only_generate_and_edit_calls(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(generation_status_script=[429, 500], retry_after=2)

    key = call(xai_emulator, "GET", "api-key")
    first, second, third = (generate(xai_emulator) for _ in range(3))

    assert [r.status_code for r in (key, first, second, third)] == [200, 429, 500, 200]
    assert first.headers["Retry-After"] == "2"
    assert xai_emulator.config.generation_status_script == []
    assert xai_emulator.images_billed == 1


def test_scripted_errors_can_quote_the_authorization_header(xai_emulator: XaiEmulator) -> None:
    key = 'xai-odd"key/with+chars'
    with XaiEmulator(api_key=key, echo_authorization=True) as emulator:
        emulator.configure(status_script=[502])
        quoting = generate(emulator)
    xai_emulator.configure(status_script=[502])
    plain = generate(xai_emulator)

    header = f"Bearer {key}"
    for form in (header, quote(header, safe=""), json.dumps(header)):
        assert form in quoting.json()["error"]
    assert xai_emulator.api_key not in plain.text  # not unless asked to


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


def test_truncated_image_download_is_cut_short_of_its_length(xai_emulator: XaiEmulator) -> None:
    url = generate(xai_emulator).json()["data"][0]["url"]
    xai_emulator.configure(truncated_images=1)

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=10)
    assert decode(requests.get(url, timeout=10).content).format == "JPEG"


def test_truncated_image_without_length_just_ends_early(xai_emulator: XaiEmulator) -> None:
    url = generate(xai_emulator).json()["data"][0]["url"]
    full = requests.get(url, timeout=10)
    xai_emulator.configure(truncated_images_no_length=1)
    cut = requests.get(url, timeout=10)
    after = requests.get(url, timeout=10)

    assert full.headers["Content-Length"] == str(len(full.content))
    assert cut.status_code == 200
    assert "Content-Length" not in cut.headers
    assert cut.content == full.content[: len(full.content) // 2]
    with pytest.raises(OSError, match=r"(?i)truncated"):
        decode(cut.content)
    assert after.content == full.content
    assert xai_emulator.config.truncated_images_no_length == 0


def test_truncated_b64_sends_half_of_each_inline_image(xai_emulator: XaiEmulator) -> None:
    def images(**body: Any) -> list[bytes]:
        payload = generate(xai_emulator, prompt="a kite", n=2, **body).json()
        return [b64_bytes(item["b64_json"]) for item in payload["data"]]

    whole = images(response_format="b64_json")
    xai_emulator.configure(truncated_b64=1)
    by_url = generate(xai_emulator, prompt="a kite").json()  # does not use the fault up
    cut = images(response_format="b64_json")
    again = images(response_format="b64_json")

    assert by_url["data"][0]["url"]
    assert cut == [image[: len(image) // 2] for image in whole]
    assert again == whole
    assert xai_emulator.images_billed == 7


def test_empty_responses_answer_200_with_no_data_and_bill_nothing(xai_emulator: XaiEmulator) -> None:
    xai_emulator.configure(empty_responses=2)
    empty_generation = generate(xai_emulator, n=3)
    empty_edit = edit(xai_emulator, image={"url": data_uri(10, 10)})
    after = generate(xai_emulator)

    for response in (empty_generation, empty_edit):
        assert response.status_code == 200
        assert response.json()["data"] == []
        assert response.json()["block_reason"] is None
        assert response.json()["usage"]["cost_in_usd_ticks"] == 0
    assert len(after.json()["data"]) == 1
    assert xai_emulator.images_billed == 1
    assert xai_emulator.cost_usd_ticks == QUALITY_PRICE


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
    with pytest.raises(ValueError, match="results_shape"):
        emulator.configure(results_shape="results")
    with pytest.raises(ValueError, match="status_script"):
        emulator.configure(status_script=[200])
    with pytest.raises(ValueError, match="latency"):
        emulator.configure(latency=(2, 1))
    with pytest.raises(ValueError, match="batch_error_shape"):
        emulator.configure(batch_error_shape="succeeded_failed")


# Controls, log, server ---------------------------------------------------------------------------


def test_control_endpoints_configure_inspect_and_reset(xai_emulator: XaiEmulator) -> None:
    control = f"{xai_emulator.url}/_emulator"
    configured = requests.post(f"{control}/config", json={"status_script": [503], "image_ttl": 5}, timeout=10)
    invalid = requests.post(f"{control}/config", json={"revised_prompt": "invented"}, timeout=10)
    unavailable = generate(xai_emulator)
    generate(xai_emulator, n=3)
    upload(xai_emulator, b"{}\n")
    stats = requests.get(f"{control}/stats", timeout=10).json()
    reset = requests.post(f"{control}/reset", timeout=10)
    after = requests.get(f"{control}/stats", timeout=10).json()
    config = requests.get(f"{control}/config", timeout=10).json()

    assert configured.json()["status_script"] == [503]
    assert invalid.status_code == 422
    assert unavailable.status_code == 503
    assert stats == {
        "images_billed": 3,
        "cost_usd_ticks": 3 * QUALITY_PRICE,
        "requests": 3,
        "files_uploaded": 1,
        "batches_created": 0,
        "temporary_images": 3,
        "rate_limited": 0,
    }
    assert reset.status_code == 200
    assert after["images_billed"] == after["requests"] == after["files_uploaded"] == 0
    assert config["image_ttl"] == 3600.0
    assert config["revised_prompt"] == "absent"
    assert config["batch_error_shape"] == "mixed"
    assert config["expire_time_format"] == "date"
    assert config["batch_validation_seconds"] == 0.2


def test_expire_images_control_endpoint(xai_emulator: XaiEmulator) -> None:
    url = generate(xai_emulator).json()["data"][0]["url"]
    requests.post(f"{xai_emulator.url}/_emulator/expire-images", timeout=10)

    assert requests.get(url, timeout=10).status_code == 403


def test_request_log_records_calls_without_the_key(xai_emulator: XaiEmulator) -> None:
    generate(xai_emulator, n=1)
    big = {"prompt": "edit", "image": {"type": "image_url", "url": "data:image/png;base64," + "A" * 70_000}}
    call(xai_emulator, "POST", "images/edits", big)
    call(xai_emulator, "GET", "batches", params={"limit": 5})
    log = xai_emulator.requests_log

    assert [(record.method, record.path, record.status) for record in log] == [
        ("POST", "/v1/images/generations", 200),
        ("POST", "/v1/images/edits", 400),
        ("GET", "/v1/batches", 200),
    ]
    assert log[0].json == {"prompt": "a lighthouse at dusk", "n": 1}
    assert log[1].json is None
    assert log[1].body_size > 70_000
    assert log[2].query == "limit=5"
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
        [
            sys.executable,
            "-m",
            "airflow_provider_xai_image.testing",
            "--port",
            "0",
            "--api-key",
            "xai-cli-key",
            "--batch-validation-seconds",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().strip().split("=", 1) for _ in range(3))
        response = requests.get(
            f"{lines['XAI_BASE_URL']}/api-key", headers={"Authorization": "Bearer xai-cli-key"}, timeout=10
        )
        root = lines["XAI_BASE_URL"].removesuffix("/v1")
        config = requests.get(f"{root}/_emulator/config", timeout=10).json()
        assert lines["XAI_API_KEY"] == "xai-cli-key"
        assert json.loads(lines["AIRFLOW_CONN_XAI_DEFAULT"])["host"] == lines["XAI_BASE_URL"]
        assert response.status_code == 200
        assert config["batch_validation_seconds"] == 0.5
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
