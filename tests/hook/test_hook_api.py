"""XaiHook's synchronous API calls via the emulator: connection test and key check, generate, edit,
models and prices, timeouts, download (whole images only)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from airflow_provider_xai_image.api.images import NO_IMAGE_ERROR, ImageRequest
from airflow_provider_xai_image.api.prices import HIGHEST_KNOWN_PRICE_USD_TICKS
from airflow_provider_xai_image.exceptions import XaiAuthError, XaiImageError, XaiPossiblyBilledError, XaiServerError
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.storage.image_checks import ImageType, VerifiedImage
from airflow_provider_xai_image.testing import MODERATION_MARKER, XaiEmulator
from airflow_provider_xai_image.testing.catalog import INPUT_IMAGE_PRICE_USD_TICKS
from airflow_provider_xai_image.testing.contract import MODEL_TIER_PRICES

#: What the emulator bills per image (1e-10 USD): ``grok-imagine-image-quality`` $0.05, ``grok-imagine-image`` $0.02.
QUALITY_PRICE = 500_000_000
IMAGINE_PRICE = 200_000_000


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


def test_check_api_key_with_a_wrong_key_is_an_auth_error_before_any_paid_request(
    emulator: XaiEmulator, set_connection: Callable[..., XaiHook]
) -> None:
    wrong_key = "xai-wrong-key-for-the-check-31415926"
    hook = set_connection(api_key=wrong_key, max_retries=2)

    with pytest.raises(XaiAuthError) as raised:
        hook.check_api_key()  # what operators do before their first paid request

    assert (raised.value.method, raised.value.path, raised.value.status) == ("GET", "api-key", 401)
    assert "the API key was refused" in str(raised.value)
    assert wrong_key not in str(raised.value)
    assert calls(emulator) == [("GET", "/v1/api-key", 401)]  # not retried, and no generation request
    assert emulator.images_billed == 0
    with pytest.raises(XaiAuthError):
        hook.check_api_key()  # a refused key is checked again, never remembered as good
    assert calls(emulator) == [("GET", "/v1/api-key", 401)] * 2


def test_check_api_key_asks_xai_once_per_hook(hook: XaiHook, emulator: XaiEmulator) -> None:
    hook.check_api_key()
    hook.check_api_key()
    hook.generate_images("a checked cat")

    assert calls(emulator) == [("GET", "/v1/api-key", 200), ("POST", "/v1/images/generations", 200)]


# -- generate -------------------------------------------------------------------------------------


def test_generate_url_image_then_download_a_real_jpeg(hook: XaiHook, emulator: XaiEmulator) -> None:
    result = hook.generate_images("a lighthouse at dusk")

    assert result.model == "grok-imagine-image-quality"
    assert result.error is None
    assert result.cost_usd_ticks == QUALITY_PRICE
    assert result.cost_usd == pytest.approx(0.05)
    [image] = result.images
    assert image.url is not None
    assert image.url.startswith(f"{emulator.url}/tmp-images/xai-tmp-imgen-")
    assert image.data is None
    assert image.filtered is False
    assert image.mime_type == "image/jpeg"
    assert image.revised_prompt is None  # xAI no longer sends one: never invented
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
    assert result.cost_usd_ticks == 3 * IMAGINE_PRICE
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
    assert result.cost_usd_ticks == QUALITY_PRICE + INPUT_IMAGE_PRICE_USD_TICKS


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
    assert result.cost_usd_ticks == 2 * QUALITY_PRICE + 3 * INPUT_IMAGE_PRICE_USD_TICKS


@pytest.mark.parametrize("style", ["per_image", "block_reason"])
def test_moderated_prompt_comes_back_filtered(hook: XaiHook, emulator: XaiEmulator, style: str) -> None:
    emulator.configure(moderation_style=style)

    result = hook.generate_images(f"something {MODERATION_MARKER}", n=2)

    assert [image.filtered for image in result.images] == [True, True]
    assert all(image.url is None and image.data is None for image in result.images)
    assert result.error is None  # filtered is an answer, not an error
    assert emulator.images_billed == 0


@pytest.mark.parametrize(
    ("setting", "expected"), [("absent", None), ("empty", None), ("text", "A detailed rendering of: a fox")]
)
def test_revised_prompt_is_recorded_only_when_xai_sends_one(
    hook: XaiHook, emulator: XaiEmulator, setting: str, expected: str | None
) -> None:
    emulator.configure(revised_prompt=setting)

    [image] = hook.generate_images("a fox").images

    assert image.revised_prompt == expected


def test_an_answer_with_no_image_and_no_block_reason_is_an_error_not_resent(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    emulator.configure(empty_responses=1)

    result = hook.generate_images("a vanishing fox", n=2)

    assert result.images == []
    assert result.error == NO_IMAGE_ERROR
    assert len(emulator.requests_log) == 1
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
    assert result.model == "grok-imagine-image-quality"  # the alias resolves; xAI reports the model used


def test_current_model_logs_no_deprecation_warning(hook: XaiHook, hook_logs: list[dict[str, Any]]) -> None:
    hook.generate_images("a castle", model="grok-imagine-image")

    assert not [event for event in hook_logs if "deprecated" in event["event"]]


def test_default_model_comes_from_the_connection_extra(
    emulator: XaiEmulator, set_connection: Callable[..., XaiHook]
) -> None:
    hook = set_connection(default_model="grok-imagine-image", max_retries=1)

    defaulted = hook.generate_images("a tree")
    explicit = hook.generate_images("a tree", model="grok-imagine-image-2.0")

    assert [r.json["model"] for r in emulator.requests_log] == ["grok-imagine-image", "grok-imagine-image-2.0"]
    assert defaulted.model == "grok-imagine-image"
    assert explicit.model == "grok-imagine-image-2.0"
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

    assert set(models) == {"grok-imagine-image-quality", "grok-imagine-image", "grok-imagine-image-2.0"}
    assert models["grok-imagine-image-quality"].aliases == ["grok-imagine-image-pro"]
    assert models["grok-imagine-image-quality"].image_price == QUALITY_PRICE
    assert models["grok-imagine-image"].image_price == IMAGINE_PRICE
    assert models["grok-imagine-image"].pricing == []
    tiers = {(tier.quality, tier.resolution): tier.price_per_image for tier in models["grok-imagine-image-2.0"].pricing}
    assert tiers == MODEL_TIER_PRICES["grok-imagine-image-2.0"]
    assert calls(emulator) == [("GET", "/v1/image-generation-models", 200)]


TIERS_2_0 = sorted(MODEL_TIER_PRICES["grok-imagine-image-2.0"].items())


@pytest.mark.parametrize(("tier", "price"), TIERS_2_0, ids=[f"{q}-{r}" for (q, r), _ in TIERS_2_0])
def test_price_of_2_0_comes_from_its_pricing_matrix_and_is_what_xai_bills(
    hook: XaiHook, emulator: XaiEmulator, tier: tuple[str, str], price: int
) -> None:
    quality, resolution = tier
    request = hook.build_request("a tiered fox", model="grok-imagine-image-2.0", quality=quality, resolution=resolution)

    assert hook.price_per_image_usd_ticks(request) == price
    assert hook.run_image_request(request).cost_usd_ticks == price  # the estimate is the bill


def test_price_of_2_0_without_quality_or_resolution_is_the_highest_matching_tier(
    hook: XaiHook, emulator: XaiEmulator
) -> None:
    def price(**params: str) -> int:
        return hook.price_per_image_usd_ticks(hook.build_request("a fox", model="grok-imagine-image-2.0", **params))

    assert price() == 800_000_000
    assert price(quality="low") == 400_000_000
    assert price(resolution="1k") == 500_000_000
    assert calls(emulator) == [("GET", "/v1/image-generation-models", 200)]  # read once per hook
    billed = hook.generate_images("a fox", model="grok-imagine-image-2.0").cost_usd_ticks
    assert billed <= price()  # an estimate is never low


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("grok-imagine-image-quality", QUALITY_PRICE),
        ("grok-imagine-image-pro", QUALITY_PRICE),  # an alias of -quality
        ("grok-imagine-image", IMAGINE_PRICE),
        ("no-such-model", HIGHEST_KNOWN_PRICE_USD_TICKS),
        ("grok-2-image", HIGHEST_KNOWN_PRICE_USD_TICKS),  # retired: not listed
    ],
)
def test_price_per_image_by_id_or_alias_and_highest_when_unknown(hook: XaiHook, model: str, price: int) -> None:
    assert hook.price_per_image_usd_ticks(ImageRequest.build(prompt="a fox", model=model)) == price


def test_price_is_the_highest_known_with_a_warning_when_prices_cannot_be_read(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator, hook_logs: list[dict[str, Any]]
) -> None:
    hook = set_connection(max_retries=0)
    emulator.configure(status_script=[500])
    cheap = hook.build_request("a fox", model="grok-imagine-image")

    assert hook.price_per_image_usd_ticks(cheap) == HIGHEST_KNOWN_PRICE_USD_TICKS == 800_000_000
    assert any("Could not read image prices" in event["event"] for event in hook_logs)
    assert calls(emulator) == [("GET", "/v1/image-generation-models", 500)]


def test_image_requests_wait_900_s_for_an_answer_other_calls_120_s(
    set_connection: Callable[..., XaiHook], emulator: XaiEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = set_connection(max_retries=0)  # no timeout in the connection: the defaults
    session = hook.get_conn()
    timeouts: list[tuple[str, str, Any]] = []
    real_request = session.request

    def recording_request(method: str, url: str, **kwargs: Any) -> Any:
        timeouts.append((method, url.rsplit("/v1/", 1)[-1], kwargs["timeout"]))
        return real_request(method, url, **kwargs)

    monkeypatch.setattr(session, "request", recording_request)

    hook.generate_images("a slow 2k fox", model="grok-imagine-image-2.0", resolution="2k")
    hook.generate_images("a slow edit", source_images=[data_uri(8, 8)])
    hook.list_image_models()
    line = json.dumps(hook.build_request("a batched fox").batch_line("0")).encode()
    hook.create_batch("timeouts", hook.upload_batch_file("timeouts.jsonl", line))

    assert hook.settings.read_timeout is None
    assert timeouts == [
        ("POST", "images/generations", (10.0, 900.0)),
        ("POST", "images/edits", (10.0, 900.0)),
        ("GET", "image-generation-models", (10.0, 120.0)),
        ("POST", "files", (10.0, 120.0)),
        ("POST", "batches", (10.0, 120.0)),  # paid, but answered at once
    ]


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


CUT_DOWNLOADS = ["truncated_images", "truncated_images_no_length"]


@pytest.mark.parametrize("fault", CUT_DOWNLOADS)
def test_a_download_cut_once_is_retried_and_succeeds(hook: XaiHook, emulator: XaiEmulator, fault: str) -> None:
    url = hook.generate_images("a harbour").images[0].url
    assert url is not None
    emulator.configure(**{fault: 1})
    sink = io.BytesIO()

    verified = hook.download(url, sink)

    assert len(calls(emulator, url.removeprefix(emulator.url))) == 2
    assert getattr(emulator.config, fault) == 0
    data = sink.getvalue()
    assert verified.size == len(data)
    assert verified.sha256 == hashlib.sha256(data).hexdigest()
    assert decoded(data).size == (1024, 1024)  # the whole image, not the half of the broken try


@pytest.mark.parametrize("fault", CUT_DOWNLOADS)
def test_a_download_that_stays_cut_raises_after_the_retries(hook: XaiHook, emulator: XaiEmulator, fault: str) -> None:
    url = hook.generate_images("a harbour").images[0].url
    assert url is not None
    emulator.configure(**{fault: 5})
    outcome: list[VerifiedImage] = []

    with pytest.raises(XaiServerError) as raised:
        outcome.append(hook.download(url, io.BytesIO()))

    assert outcome == []  # never a VerifiedImage of half an image
    assert not isinstance(raised.value, XaiPossiblyBilledError)  # a download costs nothing
    assert raised.value.path == url.rsplit("/", 1)[-1]
    assert len(calls(emulator, url.removeprefix(emulator.url))) == 3  # max_retries=2
    assert getattr(emulator.config, fault) == 2


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
