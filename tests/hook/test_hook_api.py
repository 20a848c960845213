"""XaiHook's synchronous API calls (connection test, generate, edit, models, download) via the emulator."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from airflow_provider_xai_image.exceptions import XaiImageError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.image_types import ImageType
from airflow_provider_xai_image.models import FALLBACK_PRICE_USD_TICKS_PER_IMAGE
from airflow_provider_xai_image.testing import XaiEmulator
from airflow_provider_xai_image.testing.catalog import INPUT_IMAGE_PRICE_USD_TICKS


def calls(emulator: XaiEmulator, path: str | None = None) -> list[tuple[str, str, int | None]]:
    """``(method, path, status)`` of each request the emulator received (to ``path`` when given)."""
    return [(r.method, r.path, r.status) for r in emulator.requests_log if path is None or r.path == path]


def data_uri(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def download_bytes(hook: XaiHook, url: str) -> bytes:
    sink = io.BytesIO()
    hook.download(url, sink)
    return sink.getvalue()


# -- test_connection ------------------------------------------------------------------------------


def test_test_connection_names_the_key_never_shows_it(
    xai_emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_XAI_DEFAULT", xai_emulator.connection_uri())

    ok, message = XaiHook().test_connection()

    assert ok is True
    assert "'xAI emulator key'" in message
    assert xai_emulator.base_url in message
    assert xai_emulator.api_key not in message
    assert calls(xai_emulator) == [("GET", "/v1/api-key", 200)]


def test_test_connection_with_a_wrong_key_fails_with_the_401_reason(
    emulator: XaiEmulator, set_connection: Callable[..., XaiHook]
) -> None:
    wrong_key = "xai-wrong-key-0123456789abcdef"
    hook = set_connection(api_key=wrong_key, max_retries=2)

    ok, message = hook.test_connection()

    assert ok is False
    assert "HTTP 401" in message
    assert "GET /api-key" in message
    assert "Incorrect API key provided" in message
    assert wrong_key not in message
    assert emulator.api_key not in message
    assert calls(emulator) == [("GET", "/v1/api-key", 401)]  # not retried


# -- generate -------------------------------------------------------------------------------------


def test_generate_url_image_then_download_a_real_jpeg(hook: XaiHook, emulator: XaiEmulator) -> None:
    result = hook.generate_images("a lighthouse at dusk")

    assert result.model == "grok-imagine-image-quality"
    assert result.cost_usd_ticks == FALLBACK_PRICE_USD_TICKS_PER_IMAGE
    assert result.cost_usd == pytest.approx(0.02)
    [image] = result.images
    assert image.url is not None
    assert image.url.startswith(f"{emulator.url}/tmp-images/xai-tmp-imgen-")
    assert image.data is None
    assert image.filtered is False
    assert image.mime_type == "image/jpeg"
    assert image.revised_prompt == "A detailed rendering of: a lighthouse at dusk"
    sent = emulator.requests_log[0]
    assert (sent.method, sent.path) == ("POST", "/v1/images/generations")
    assert sent.json == {
        "prompt": "a lighthouse at dusk",
        "model": "grok-imagine-image-quality",
        "n": 1,
        "response_format": "url",
    }
    picture = decoded(download_bytes(hook, image.url))
    assert picture.format == "JPEG"
    assert picture.size == (1024, 1024)
    assert emulator.images_billed == 1


def test_generate_several_b64_images_in_one_request(hook: XaiHook, emulator: XaiEmulator) -> None:
    result = hook.generate_images("three foxes", n=3, response_format="b64_json", model="grok-imagine-image")

    assert len(result.images) == 3
    assert all(image.url is None and image.data is not None for image in result.images)
    assert [decoded(image.data).format for image in result.images if image.data] == ["JPEG"] * 3
    assert len({image.data for image in result.images}) == 3  # one distinct picture per index
    assert result.cost_usd_ticks == 3 * FALLBACK_PRICE_USD_TICKS_PER_IMAGE
    [sent] = emulator.requests_log
    assert sent.json["n"] == 3
    assert sent.json["response_format"] == "b64_json"
    assert emulator.images_billed == 3


def test_b64_images_with_a_data_uri_prefix_are_decoded(hook: XaiHook, emulator: XaiEmulator) -> None:
    emulator.configure(b64_data_uri_prefix=True, image_format="png")

    result = hook.generate_images("a png", response_format="b64_json")

    [image] = result.images
    assert image.data is not None
    assert image.data.startswith(b"\x89PNG")
    assert decoded(image.data).format == "PNG"


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size"),
    [
        ("16:9", None, (1024, 576)),
        ("9:16", "2k", (1152, 2048)),
        ("4:3", "1k", (1024, 768)),
        ("1:1", "2k", (2048, 2048)),
        ("auto", None, (1024, 1024)),
    ],
)
def test_aspect_ratio_and_resolution_set_the_downloaded_image_size(
    hook: XaiHook, emulator: XaiEmulator, aspect_ratio: str, resolution: str | None, size: tuple[int, int]
) -> None:
    result = hook.generate_images("a wide beach", aspect_ratio=aspect_ratio, resolution=resolution, quality="low")

    url = result.images[0].url
    assert url is not None
    assert decoded(download_bytes(hook, url)).size == size
    sent = emulator.requests_log[0].json
    assert sent["aspect_ratio"] == aspect_ratio
    assert sent["quality"] == "low"
    assert sent.get("resolution") == resolution


def test_edit_with_one_data_uri_source_sends_image_and_keeps_its_proportions(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    source = data_uri(300, 200)

    result = hook.generate_images("make it night", source_images=[source], response_format="b64_json")

    [sent] = emulator.requests_log
    assert (sent.method, sent.path, sent.status) == ("POST", "/v1/images/edits", 200)
    assert sent.json["image"] == {"type": "image_url", "url": source}
    assert "images" not in sent.json
    assert result.images[0].data is not None
    assert decoded(result.images[0].data).size == (1024, 683)  # 3:2 like the source
    assert result.cost_usd_ticks == FALLBACK_PRICE_USD_TICKS_PER_IMAGE + INPUT_IMAGE_PRICE_USD_TICKS


def test_edit_with_three_sources_sends_images_and_uses_the_aspect_ratio(hook: XaiHook, emulator: XaiEmulator) -> None:
    sources = [data_uri(100, 100), data_uri(120, 80), "https://example.com/cat.jpg"]

    result = hook.generate_images("combine them", source_images=sources, aspect_ratio="2:1", n=2)

    [sent] = emulator.requests_log
    assert sent.path == "/v1/images/edits"
    assert sent.json["images"] == [{"type": "image_url", "url": url} for url in sources]
    assert "image" not in sent.json
    assert sent.json["aspect_ratio"] == "2:1"
    assert len(result.images) == 2
    assert result.images[0].url is not None
    assert decoded(download_bytes(hook, result.images[0].url)).size == (1024, 512)
    assert result.cost_usd_ticks == 2 * FALLBACK_PRICE_USD_TICKS_PER_IMAGE + 3 * INPUT_IMAGE_PRICE_USD_TICKS


def test_moderated_prompt_comes_back_filtered(hook: XaiHook, emulator: XaiEmulator) -> None:
    from airflow_provider_xai_image.testing import MODERATION_MARKER

    result = hook.generate_images(f"something {MODERATION_MARKER}", n=2)

    assert [image.filtered for image in result.images] == [True, True]
    assert all(image.url is None and image.data is None for image in result.images)
    assert emulator.images_billed == 0


def test_deprecated_model_logs_a_warning_naming_its_replacement(
    hook: XaiHook, emulator: XaiEmulator, hook_logs: list[dict[str, Any]]
) -> None:
    result = hook.generate_images("a castle", model="grok-imagine-image-pro")

    warnings = [event["event"] for event in hook_logs if event["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "grok-imagine-image-pro" in warnings[0]
    assert "deprecated" in warnings[0]
    assert "grok-imagine-image-quality" in warnings[0]
    assert emulator.requests_log[0].json["model"] == "grok-imagine-image-pro"  # still served
    assert result.model == "grok-imagine-image-pro"


def test_current_model_logs_no_deprecation_warning(hook: XaiHook, hook_logs: list[dict[str, Any]]) -> None:
    hook.generate_images("a castle", model="grok-imagine-image")

    assert not [event for event in hook_logs if "deprecated" in event["event"]]


def test_default_model_comes_from_the_connection_extra(
    emulator: XaiEmulator, set_connection: Callable[..., XaiHook]
) -> None:
    hook = set_connection(default_model="grok-imagine-image", max_retries=1)

    defaulted = hook.generate_images("a tree")
    explicit = hook.generate_images("a tree", model="grok-2-image")

    assert [r.json["model"] for r in emulator.requests_log] == ["grok-imagine-image", "grok-2-image"]
    assert defaulted.model == "grok-imagine-image"
    assert explicit.model == "grok-2-image"
    assert hook.build_request("a tree").model == "grok-imagine-image"


def test_json_connection_with_all_extras(emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "xai",
        "password": emulator.api_key,
        "host": emulator.base_url,
        "extra": {"timeout": 5, "max_retries": 2, "default_model": "grok-imagine-image"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_XAI_EXTRAS", json.dumps(conn))
    hook = XaiHook(xai_conn_id="xai_extras")

    settings = hook.settings
    assert (settings.base_url, settings.read_timeout, settings.max_retries) == (emulator.base_url, 5.0, 2)
    assert settings.default_model == "grok-imagine-image"
    assert hook.test_connection()[0] is True
    hook.generate_images("a boat")
    assert emulator.requests_log[-1].json["model"] == "grok-imagine-image"


def test_uri_form_connection_with_url_encoded_base_url(emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib.parse import quote

    uri = (
        f"xai://:{quote(emulator.api_key, safe='')}@{quote(emulator.base_url, safe='')}"
        "?timeout=5&max_retries=1&default_model=grok-imagine-image"
    )
    monkeypatch.setenv("AIRFLOW_CONN_XAI_URI", uri)
    hook = XaiHook(xai_conn_id="xai_uri")

    assert hook.settings.base_url == emulator.base_url
    assert (hook.settings.read_timeout, hook.settings.max_retries) == (5.0, 1)
    assert hook.test_connection()[0] is True
    assert hook.generate_images("a boat").model == "grok-imagine-image"


def test_uri_form_connection_keeps_port_and_path_of_the_base_url(
    emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain URI form of a base URL with a port and a path: Airflow parses
    ``xai://http://:KEY@127.0.0.1:PORT/v1`` into host ``http://127.0.0.1``, port ``PORT`` and schema
    ``v1``; the hook must rebuild ``http://127.0.0.1:PORT/v1`` from all three."""
    port = emulator.base_url.rsplit(":", 1)[1].split("/")[0]
    monkeypatch.setenv("AIRFLOW_CONN_XAI_URI", f"xai://http://:{emulator.api_key}@127.0.0.1:{port}/v1?max_retries=1")
    hook = XaiHook(xai_conn_id="xai_uri")

    assert hook.settings.base_url == emulator.base_url
    ok, message = hook.test_connection()
    assert ok, message


# -- models and prices ----------------------------------------------------------------------------


def test_list_image_models(hook: XaiHook, emulator: XaiEmulator) -> None:
    models = {model.id: model for model in hook.list_image_models()}

    assert set(models) == {"grok-imagine-image-quality", "grok-imagine-image", "grok-imagine-image-pro", "grok-2-image"}
    assert models["grok-2-image"].aliases == ["grok-2-image-1212"]
    assert models["grok-2-image"].image_price == 700_000_000
    assert models["grok-imagine-image"].image_price == FALLBACK_PRICE_USD_TICKS_PER_IMAGE
    assert calls(emulator) == [("GET", "/v1/image-generation-models", 200)]


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("grok-2-image-1212", 700_000_000),
        ("grok-2-image", 700_000_000),
        ("grok-imagine-image", FALLBACK_PRICE_USD_TICKS_PER_IMAGE),
        ("no-such-model", FALLBACK_PRICE_USD_TICKS_PER_IMAGE),
    ],
)
def test_image_price_from_the_model_list_by_id_or_alias(hook: XaiHook, model: str, price: int) -> None:
    assert hook.image_price_usd_ticks(model) == price


def test_image_price_falls_back_with_a_warning_when_prices_cannot_be_read(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator, hook_logs: list[dict[str, Any]]
) -> None:
    hook = set_connection(max_retries=0)
    emulator.configure(status_script=[500])

    assert hook.image_price_usd_ticks("grok-2-image") == FALLBACK_PRICE_USD_TICKS_PER_IMAGE
    assert any("Could not read image prices" in event["event"] for event in hook_logs)
    assert calls(emulator) == [("GET", "/v1/image-generation-models", 500)]


# -- download -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("image_format", "image_type"), [("jpeg", ImageType("image/jpeg", "jpg")), ("png", None)])
def test_download_reports_size_sha256_and_type_of_the_bytes(
    hook: XaiHook, emulator: XaiEmulator, image_format: str, image_type: ImageType | None
) -> None:
    emulator.configure(image_format=image_format)
    url = hook.generate_images("a harbour").images[0].url
    assert url is not None
    sink = io.BytesIO(b"stale content that must be replaced")

    verified = hook.download(url, sink)

    data = sink.getvalue()
    assert verified.size == len(data) > 1000
    assert verified.sha256 == hashlib.sha256(data).hexdigest()
    assert verified.image_type == (image_type or ImageType("image/png", "png"))
    magic = b"\xff\xd8\xff" if image_format == "jpeg" else b"\x89PNG\r\n\x1a\n"
    assert data.startswith(magic)
    assert decoded(data).size == (1024, 1024)


def test_download_of_an_expired_url_raises_image_error_without_retrying(hook: XaiHook, emulator: XaiEmulator) -> None:
    url = hook.generate_images("a harbour").images[0].url
    assert url is not None
    emulator.expire_images()

    with pytest.raises(XaiImageError, match=r"expired or gone \(HTTP 403\)"):
        hook.download(url, io.BytesIO())
    assert len(calls(emulator, url.removeprefix(emulator.url))) == 1


def test_download_of_an_unknown_url_raises_image_error(hook: XaiHook, emulator: XaiEmulator) -> None:
    with pytest.raises(XaiImageError, match="HTTP 404"):
        hook.download(f"{emulator.url}/tmp-images/xai-tmp-imgen-missing.jpeg", io.BytesIO())


def test_truncated_download_is_retried_and_succeeds(hook: XaiHook, emulator: XaiEmulator) -> None:
    url = hook.generate_images("a harbour").images[0].url
    assert url is not None
    emulator.configure(truncated_images=1)
    sink = io.BytesIO()

    verified = hook.download(url, sink)

    assert len(calls(emulator, url.removeprefix(emulator.url))) == 2
    assert emulator.config.truncated_images == 0
    data = sink.getvalue()
    assert verified.size == len(data)
    assert verified.sha256 == hashlib.sha256(data).hexdigest()
    assert decoded(data).size == (1024, 1024)  # the whole image, not the half of the broken try


def test_download_of_something_that_is_not_an_image_raises_image_error(hook: XaiHook, emulator: XaiEmulator) -> None:
    # An upstream answering 200 with an HTML page (the emulator's invalid_json fault) where an image
    # was expected.
    emulator.configure(invalid_json=1)
    url = f"{emulator.base_url}/image-generation-models"

    with pytest.raises(XaiImageError, match="not an image"):
        hook.download(url, io.BytesIO())
    assert calls(emulator) == [("GET", "/v1/image-generation-models", 200)]  # not retried


def test_download_over_max_bytes_raises_image_error(hook: XaiHook, emulator: XaiEmulator) -> None:
    url = hook.generate_images("a harbour").images[0].url
    assert url is not None
    full = download_bytes(hook, url)

    with pytest.raises(XaiImageError, match=f"{len(full) - 1}-byte limit"):
        hook.download(url, io.BytesIO(), max_bytes=len(full) - 1)
    assert hook.download(url, io.BytesIO(), max_bytes=len(full)).size == len(full)
