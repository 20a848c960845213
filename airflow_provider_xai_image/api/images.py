"""The xAI image API's wire format: limits, request bodies and response shapes, in one place.

Everything that depends on the exact spelling of a field in ``docs/xai-api.md`` lives here,
so that a difference seen on a real call is a one-line change. Only the client uses these
definitions: the emulator in ``testing/`` keeps its own copy of the contract, so that a wrong field
name here fails a test instead of agreeing with the emulator by construction.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, time, timezone
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_provider_xai_image.exceptions import XaiRequestValidationError

DEFAULT_BASE_URL = "https://api.x.ai/v1"
#: The path prefix of the API (``/v1``): batch input lines name their endpoint with it.
API_PREFIX = "/v1"
DEFAULT_MODEL = "grok-imagine-image-quality"
#: Deprecated model -> the model to use instead.
DEPRECATED_MODELS: dict[str, str] = {"grok-imagine-image-pro": DEFAULT_MODEL}

AspectRatio = Literal[
    "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2",
    "19.5:9", "9:19.5", "20:9", "9:20", "auto",
]  # fmt: skip
Resolution = Literal["1k", "2k"]
Quality = Literal["low", "medium"]
ResponseFormat = Literal["url", "b64_json"]

ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
RESOLUTIONS: tuple[str, ...] = get_args(Resolution)
QUALITIES: tuple[str, ...] = get_args(Quality)
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)

MAX_IMAGES_PER_REQUEST = 10
MAX_SOURCE_IMAGES = 3
#: Largest source image of an edit (decoded bytes), and the types xAI takes.
MAX_SOURCE_IMAGE_BYTES = 10 * 1024 * 1024
SOURCE_IMAGE_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/webp")

#: 1 tick = 1e-10 USD (``usage.cost_in_usd_ticks``, ``image_price``, ``price_per_image``).
USD_TICKS_PER_USD = 10_000_000_000
#: The highest price per image xAI lists ($0.08, ``grok-imagine-image-2.0`` at medium/2k): what a budget
#: estimate assumes when the price of a model cannot be read (estimate high, never low).
HIGHEST_KNOWN_PRICE_USD_TICKS = 800_000_000

GENERATIONS_PATH = "images/generations"
EDITS_PATH = "images/edits"
MODELS_PATH = "image-generation-models"
API_KEY_PATH = "api-key"
FILES_PATH = "files"
BATCHES_PATH = "batches"

#: Form fields of ``POST /files`` sent before the ``file`` part (xAI reads them first).
BATCH_FILE_FIELDS: dict[str, str] = {"purpose": "batch"}
#: A batch input file is kept under this size (xAI publishes no limit); a larger job becomes several batches.
BATCH_FILE_MAX_BYTES = 100_000_000
#: The most results (and batches) one page may hold: the ``limit`` query parameter.
MAX_PAGE_LIMIT = 1000

NonBlank = Annotated[str, Field(min_length=1)]


def to_image_url(source: str) -> dict[str, str]:
    """The JSON object xAI expects for one source image (an https URL or a ``data:`` URI)."""
    return {"type": "image_url", "url": source}


class ImageRequest(BaseModel):
    """One call to ``images/generations``, or to ``images/edits`` when ``source_images`` is set.

    Validation encodes the limits of the contract so a bad value fails before any request.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prompt: str
    model: NonBlank = DEFAULT_MODEL
    n: int = Field(default=1, ge=1, le=MAX_IMAGES_PER_REQUEST)
    aspect_ratio: AspectRatio | None = None
    resolution: Resolution | None = None
    quality: Quality | None = None
    response_format: ResponseFormat = "url"
    user: str | None = None
    source_images: tuple[str, ...] | None = Field(default=None, min_length=1, max_length=MAX_SOURCE_IMAGES)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-blank string")
        return value

    @field_validator("source_images")
    @classmethod
    def _sources_are_urls(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for source in value or ():
            if not source.startswith(("https://", "data:image/")):
                raise ValueError("each source image must be an https URL or a data:image/... URI")
        return value

    @classmethod
    def build(cls, **params: Any) -> ImageRequest:
        """Validate ``params``; raise :class:`XaiRequestValidationError` naming each bad parameter."""
        try:
            return cls(**params)
        except ValidationError as error:
            raise XaiRequestValidationError.from_pydantic(error) from None

    @property
    def path(self) -> str:
        return EDITS_PATH if self.source_images else GENERATIONS_PATH

    def body(self) -> dict[str, Any]:
        """The JSON body as xAI expects it (one source image as ``image``, several as ``images``)."""
        body = self.model_dump(exclude_none=True, exclude={"source_images"})
        if self.source_images:
            if len(self.source_images) == 1:
                body["image"] = to_image_url(self.source_images[0])
            else:
                body["images"] = [to_image_url(url) for url in self.source_images]
        return body

    def batch_line(self, custom_id: str) -> dict[str, Any]:
        """This request as one line of a batch input file."""
        return {"custom_id": custom_id, "method": "POST", "url": f"{API_PREFIX}/{self.path}", "body": self.body()}


class GeneratedImage(BaseModel):
    """One image of a response: a temporary ``url`` or inline ``data``, or nothing when filtered."""

    url: str | None = None
    data: bytes | None = Field(default=None, repr=False)
    mime_type: str | None = None
    revised_prompt: str | None = None
    filtered: bool = False


class ImageGenerationResult(BaseModel):
    """What one generate/edit call returned; ``error`` when it returned neither images nor a block reason."""

    images: list[GeneratedImage]
    model: str
    cost_usd_ticks: int = 0
    error: str | None = None

    @property
    def cost_usd(self) -> float:
        return self.cost_usd_ticks / USD_TICKS_PER_USD


#: The error of a response with no image and no block reason.
NO_IMAGE_ERROR = "xAI returned no image and no block reason"


def decode_b64_image(value: str) -> bytes:
    """Decode ``b64_json``, with or without a ``data:image/...;base64,`` prefix."""
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise ValueError(f"b64_json is not valid base64: {error}") from None


def parse_image_response(
    payload: dict[str, Any], requested_model: str, expected_images: int = 1
) -> ImageGenerationResult:
    """Read a generate/edit response (also a batch result's response) into a result object.

    Only a non-empty ``block_reason`` blocks; a response blocked as a whole (no images) counts as
    ``expected_images`` filtered images. A response with no images and no block reason is an error.
    """
    blocked = bool(payload.get("block_reason"))
    images = []
    for item in payload.get("data") or []:
        data = decode_b64_image(item["b64_json"]) if item.get("b64_json") else None
        url = item.get("url")
        filtered = blocked or item.get("respect_moderation") is False or (data is None and not url)
        images.append(
            GeneratedImage(
                url=None if filtered else url,
                data=None if filtered else data,
                mime_type=item.get("mime_type"),
                revised_prompt=item.get("revised_prompt") or None,
                filtered=filtered,
            )
        )
    if blocked and not images:
        images = [GeneratedImage(filtered=True) for _ in range(expected_images)]
    return ImageGenerationResult(
        images=images,
        model=payload.get("model") or requested_model,
        cost_usd_ticks=int((payload.get("usage") or {}).get("cost_in_usd_ticks") or 0),
        error=None if images else NO_IMAGE_ERROR,
    )


class PriceTier(BaseModel):
    """One entry of a model's ``pricing`` matrix."""

    quality: str | None = None
    resolution: str | None = None
    price_per_image: int


class ImageModel(BaseModel):
    """An entry of ``GET /image-generation-models``."""

    model_config = ConfigDict(extra="allow")

    id: str
    aliases: list[str] = Field(default_factory=list)
    image_price: int | None = None
    pricing: list[PriceTier] = Field(default_factory=list)

    def price_usd_ticks(self, quality: str | None, resolution: str | None) -> int | None:
        """The price of one image: the highest tier matching what is set (``pricing``), else ``image_price``."""
        prices = [
            tier.price_per_image
            for tier in self.pricing
            if (quality is None or tier.quality in (None, quality))
            and (resolution is None or tier.resolution in (None, resolution))
        ]
        return max(prices) if prices else self.image_price


class BatchState(BaseModel):
    """Counters of a batch (``state`` of the Batch object)."""

    num_requests: int = 0
    num_pending: int = 0
    num_success: int = 0
    num_error: int = 0
    num_cancelled: int = 0


class Batch(BaseModel):
    """The Batch object of ``GET /batches/{id}`` (its cost is the sum of its results' ``usage``)."""

    model_config = ConfigDict(extra="allow")

    batch_id: str
    name: str | None = None
    create_time: str | None = None
    expire_time: str | None = None
    cancel_time: str | None = None
    cancel_by_xai_message: str | None = None
    state: BatchState = Field(default_factory=BatchState)

    @property
    def is_validating(self) -> bool:
        """Every counter is 0: xAI is still reading the input file."""
        return self.state == BatchState() and not self.cancel_time

    def expires_at(self) -> datetime | None:
        """``expire_time`` as a moment; a bare date (``YYYY-MM-DD``) means the end of that day, UTC."""
        if not self.expire_time:
            return None
        text = self.expire_time.strip()
        try:
            if len(text) == 10:
                day = datetime.strptime(text, "%Y-%m-%d").date()
                return datetime.combine(day, time.max, tzinfo=timezone.utc)
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class BatchResult(BaseModel):
    """One result of a batch.

    ``result`` on success; ``error`` when xAI reports the request failed; ``unreadable`` when the item
    could not be read (a shape this client does not know): never a silent loss.
    """

    batch_request_id: str
    result: ImageGenerationResult | None = None
    error: str | None = None
    unreadable: str | None = None


def parse_batch_results_page(payload: dict[str, Any], requested_model: str) -> tuple[list[BatchResult], str | None]:
    """Read one results page; return its results and the next page's token (None on the last page).

    Each item is ``{"batch_request_id", "batch_result": {"response": {<kind>: <image response>}}}`` on
    success (whichever single kind key is there), ``{"batch_request_id", "batch_result": {"error":
    {code, message} | "text"}}`` or ``{"batch_request_id", "error_message"}`` on failure.
    """
    items = payload.get("results")
    if not isinstance(items, list):
        raise ValueError(f"a results page must hold a 'results' list; got the keys {sorted(payload)}")
    return [_batch_result(item, requested_model) for item in items], payload.get("pagination_token") or None


def _batch_result(item: Any, requested_model: str) -> BatchResult:
    request_id = str(item.get("batch_request_id", "")) if isinstance(item, dict) else ""
    try:
        outcome = item.get("batch_result") or {}
        response = outcome.get("response")
        if response is not None:
            (_kind, image_response), *others = response.items()
            if others or not isinstance(image_response, dict):
                raise ValueError(f"the response must hold one image response, got the keys {sorted(response)}")
            return BatchResult(
                batch_request_id=request_id, result=parse_image_response(image_response, requested_model)
            )
        error = _error_text(outcome.get("error")) or _error_text(item.get("error_message"))
        if error is None:
            raise ValueError(f"neither a response nor an error, got the keys {sorted(item)}")
        return BatchResult(batch_request_id=request_id, error=error)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        return BatchResult(batch_request_id=request_id, unreadable=f"{type(error).__name__}: {error}"[:300])


def _error_text(error: Any) -> str | None:
    """The text of an error object ``{code, message}`` or string; None for none (success items may carry
    ``{"code": 0, "message": ""}``)."""
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        if not code and not message:
            return None
        return f"{message or 'error'} (code {code})" if code else str(message)
    return str(error) if error else None
