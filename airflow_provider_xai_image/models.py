"""The xAI image API's wire format: limits, request bodies and response shapes, in one place.

Everything that depends on the exact spelling of a field in ``xai-api.md`` lives here, so that a
difference seen on a real call is a one-line change. Both the hook (client side) and the emulator
(server side) import these definitions.
"""

from __future__ import annotations

import base64
import binascii
import reprlib
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_provider_xai_image.exceptions import XaiError

DEFAULT_BASE_URL = "https://api.x.ai/v1"
DEFAULT_MODEL = "grok-imagine-image-quality"
#: Deprecated model -> the model to use instead.
DEPRECATED_MODELS: dict[str, str] = {"grok-imagine-image-pro": DEFAULT_MODEL}

AspectRatio = Literal[
    "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2",
    "19.5:9", "9:19.5", "20:9", "9:20", "auto",
]  # fmt: skip
Resolution = Literal["1k", "2k"]
Quality = Literal["low", "medium", "high"]
ResponseFormat = Literal["url", "b64_json"]

ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
RESOLUTIONS: tuple[str, ...] = get_args(Resolution)
QUALITIES: tuple[str, ...] = get_args(Quality)
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)

MAX_IMAGES_PER_REQUEST = 10
MAX_SOURCE_IMAGES = 3

#: 1 tick = 1e-10 USD (``usage.cost_in_usd_ticks``, ``image_price``).
USD_TICKS_PER_USD = 10_000_000_000
#: Price used for budget estimates when ``list_image_models`` does not give one ($0.02 per image).
FALLBACK_PRICE_USD_TICKS_PER_IMAGE = 200_000_000

GENERATIONS_PATH = "images/generations"
EDITS_PATH = "images/edits"
MODELS_PATH = "image-generation-models"
API_KEY_PATH = "api-key"
BATCHES_PATH = "batches"

#: The key under ``batch_request`` naming an image request; public REST docs do not name it.
BATCH_REQUEST_KIND = "image_generation"
#: Largest body of one "add requests" call, and the pace of such calls per team.
BATCH_ADD_MAX_BYTES = 25 * 1024 * 1024
BATCH_ADD_MAX_CALLS = 100
BATCH_ADD_WINDOW_SECONDS = 30.0

NonBlank = Annotated[str, Field(min_length=1)]


class XaiRequestValidationError(XaiError, ValueError):
    """A request parameter is outside what the xAI API accepts; raised before anything is sent."""

    @classmethod
    def from_pydantic(cls, error: ValidationError) -> XaiRequestValidationError:
        problems = []
        for item in error.errors(include_url=False):
            where = ".".join(str(part) for part in item["loc"]) or "request"
            got = item.get("input")
            shown = f" (got {reprlib.repr(got)})" if not isinstance(got, dict) else ""
            problems.append(f"{where}: {item['msg']}{shown}")
        return cls("Invalid xAI image request: " + "; ".join(problems))


def to_image_url(source: str) -> dict[str, str]:
    """The JSON object xAI expects for one source image (an https URL or a ``data:`` URI)."""
    return {"type": "image_url", "url": source}


class ImageRequest(BaseModel):
    """One call to ``images/generations``, or to ``images/edits`` when ``source_images`` is set.

    Validation encodes the limits of the contract so a bad value fails before any request.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

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
            if not source.startswith(("https://", "http://", "data:image/")):
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


class GeneratedImage(BaseModel):
    """One image of a response: a temporary ``url`` or inline ``data``, or nothing when filtered."""

    url: str | None = None
    data: bytes | None = Field(default=None, repr=False)
    mime_type: str | None = None
    revised_prompt: str | None = None
    filtered: bool = False


class ImageGenerationResult(BaseModel):
    """What one generate/edit call returned."""

    images: list[GeneratedImage]
    model: str
    cost_usd_ticks: int = 0

    @property
    def cost_usd(self) -> float:
        return self.cost_usd_ticks / USD_TICKS_PER_USD


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

    A response blocked as a whole (``block_reason``, no images) counts as ``expected_images`` filtered images.
    """
    blocked = payload.get("block_reason") is not None
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
                revised_prompt=item.get("revised_prompt"),
                filtered=filtered,
            )
        )
    if blocked and not images:
        images = [GeneratedImage(filtered=True) for _ in range(expected_images)]
    return ImageGenerationResult(
        images=images,
        model=payload.get("model") or requested_model,
        cost_usd_ticks=int((payload.get("usage") or {}).get("cost_in_usd_ticks") or 0),
    )


class ImageModel(BaseModel):
    """An entry of ``GET /image-generation-models``."""

    model_config = ConfigDict(extra="allow")

    id: str
    aliases: list[str] = Field(default_factory=list)
    image_price: int | None = None


class BatchState(BaseModel):
    """Counters of a batch (``state`` of the Batch object)."""

    num_requests: int = 0
    num_pending: int = 0
    num_success: int = 0
    num_error: int = 0
    num_cancelled: int = 0


class Batch(BaseModel):
    """The Batch object of ``GET /batches/{id}``."""

    model_config = ConfigDict(extra="allow")

    batch_id: str
    name: str | None = None
    create_time: str | None = None
    expire_time: str | None = None
    cancel_time: str | None = None
    cancel_by_xai_message: str | None = None
    state: BatchState = Field(default_factory=BatchState)
    cost_breakdown: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_done(self) -> bool:
        return self.state.num_pending == 0

    @property
    def cost_usd_ticks(self) -> int:
        return int(self.cost_breakdown.get("total_cost_usd_ticks") or 0)


def batch_request_entry(batch_request_id: str, request: ImageRequest) -> dict[str, Any]:
    """One element of ``batch_requests`` in an "add requests" call."""
    return {"batch_request_id": batch_request_id, "batch_request": {BATCH_REQUEST_KIND: request.body()}}


class BatchResult(BaseModel):
    """One result of a batch: the image response on success, the error text on failure."""

    batch_request_id: str
    result: ImageGenerationResult | None = None
    error: str | None = None


def parse_batch_results_page(payload: dict[str, Any], requested_model: str) -> tuple[list[BatchResult], str | None]:
    """Read one results page in either documented shape; return the results and the next page token.

    Shapes: ``{"results": [{"batch_request_id", "response"|"error"}]}`` (gRPC docs) and
    ``{"succeeded": [{"batch_request_id", "response"}], "failed": [{"batch_request_id", "error_message"}]}``.
    """
    results: list[BatchResult] = []
    for item in list(payload.get("results") or []) + list(payload.get("succeeded") or []):
        response = item.get("response")
        if response is not None:
            response = response.get(BATCH_REQUEST_KIND, response)
            results.append(
                BatchResult(
                    batch_request_id=item["batch_request_id"],
                    result=parse_image_response(response, requested_model),
                )
            )
        else:
            results.append(BatchResult(batch_request_id=item["batch_request_id"], error=_error_text(item)))
    for item in payload.get("failed") or []:
        results.append(BatchResult(batch_request_id=item["batch_request_id"], error=_error_text(item)))
    return results, payload.get("pagination_token") or None


def _error_text(item: dict[str, Any]) -> str:
    error = item.get("error_message") or item.get("error") or "unknown error"
    return error if isinstance(error, str) else str(error.get("message", error))
