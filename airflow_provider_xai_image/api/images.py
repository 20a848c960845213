"""The xAI image API's wire format: limits, paths, request bodies and image responses.

Everything that depends on the exact spelling of a field in ``docs/xai-api.md`` lives in ``api/`` (this
module, ``batches``, ``batch_files``, ``prices``), so that a difference seen on a real call is a one-line
change. Only the client uses these definitions: the emulator in ``testing/`` keeps its own copy of the
contract, so that a wrong field name here fails a test instead of agreeing with the emulator by construction.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypedDict, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_provider_xai_image.api.prices import USD_TICKS_PER_USD
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

GENERATIONS_PATH = "images/generations"
EDITS_PATH = "images/edits"
MODELS_PATH = "image-generation-models"
API_KEY_PATH = "api-key"
FILES_PATH = "files"
BATCHES_PATH = "batches"

#: The most results (and batches) one page may hold: the ``limit`` query parameter.
MAX_PAGE_LIMIT = 1000

NonBlank = Annotated[str, Field(min_length=1)]


def to_image_url(source: str) -> dict[str, str]:
    """The JSON object xAI expects for one source image (an https URL or a ``data:`` URI)."""
    return {"type": "image_url", "url": source}


class ImageOptions(TypedDict, total=False):
    """What an image request takes besides its prompt, each optional (:class:`ImageRequest` holds the limits).

    ``model`` (default: the connection's ``default_model``), ``n`` (1..10), ``aspect_ratio`` (one of
    :data:`ASPECT_RATIOS`), ``resolution`` (``1k``, ``2k``), ``quality`` (``low``, ``medium``: sent only when
    set), ``response_format`` (``url``: a temporary URL; ``b64_json``: inline bytes), ``user`` (an end-user id
    for xAI's abuse monitoring) and ``source_images`` (1..3 https URLs or ``data:image/...`` URIs: an edit).
    """

    model: str | None
    n: int
    aspect_ratio: str | None
    resolution: str | None
    quality: str | None
    response_format: str
    user: str | None
    source_images: Sequence[str] | None


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
    #: Sends of the request before the one answered that may have reached xAI, and so may have been billed
    #: besides ``cost_usd_ticks`` (only when the connection's ``max_ambiguous_retries`` allows re-sends).
    possibly_billed_attempts: int = 0

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
