"""Request bodies the emulator accepts, validated strictly with the contract's types from ``models``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from airflow_provider_xai_image.models import (
    BATCH_REQUEST_KIND,
    MAX_IMAGES_PER_REQUEST,
    MAX_SOURCE_IMAGES,
    AspectRatio,
    Quality,
    Resolution,
    ResponseFormat,
)
from airflow_provider_xai_image.testing.images import data_uri_image_size

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
NonBlank = Annotated[str, Field(min_length=1)]


def describe(error: ValidationError) -> str:
    """One line naming each invalid field (without echoing values, which may be huge data URIs)."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


class GenerateBody(BaseModel):
    """Body of ``POST /v1/images/generations`` (and of a batch request)."""

    model_config = _STRICT

    prompt: str
    model: NonBlank | None = None
    n: int = Field(default=1, ge=1, le=MAX_IMAGES_PER_REQUEST)
    aspect_ratio: AspectRatio | None = None
    resolution: Resolution | None = None
    quality: Quality | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt must not be empty")
        return value


class ImageUrl(BaseModel):
    """One source image of an edit: an http(s) URL (not fetched) or a ``data:image/...`` URI."""

    model_config = _STRICT

    type: Literal["image_url"] = "image_url"
    url: str
    _pixel_size: tuple[int, int] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _url_is_an_image(self) -> ImageUrl:
        if self.url.startswith("data:"):
            self._pixel_size = data_uri_image_size(self.url)
        elif not self.url.startswith(("https://", "http://")):
            raise ValueError("url must be an https URL or a data:image/...;base64 URI")
        return self

    @property
    def pixel_size(self) -> tuple[int, int] | None:
        """Width and height of a data-URI image; None for a URL (the emulator does not fetch it)."""
        return self._pixel_size


class EditBody(GenerateBody):
    """Body of ``POST /v1/images/edits``: a generate body plus ``image`` or ``images``."""

    image: ImageUrl | None = None
    images: list[ImageUrl] | None = Field(default=None, min_length=1, max_length=MAX_SOURCE_IMAGES)

    @model_validator(mode="after")
    def _one_source_field(self) -> EditBody:
        if (self.image is None) == (self.images is None):
            raise ValueError("give exactly one of 'image' (one source) or 'images' (several sources)")
        return self

    @property
    def sources(self) -> list[ImageUrl]:
        return [self.image] if self.image is not None else list(self.images or [])


class CreateBatchBody(BaseModel):
    """Body of ``POST /v1/batches``."""

    model_config = _STRICT

    name: str


class BatchRequestEntry(BaseModel):
    """One element of ``batch_requests``: an id unique in its batch and ``{BATCH_REQUEST_KIND: body}``."""

    model_config = _STRICT

    batch_request_id: NonBlank
    batch_request: dict[str, GenerateBody]

    @field_validator("batch_request")
    @classmethod
    def _single_image_request(cls, value: dict[str, GenerateBody]) -> dict[str, GenerateBody]:
        if list(value) != [BATCH_REQUEST_KIND]:
            raise ValueError(f"must hold exactly one key, {BATCH_REQUEST_KIND!r}")
        return value

    @property
    def body(self) -> GenerateBody:
        return self.batch_request[BATCH_REQUEST_KIND]


class AddBatchRequestsBody(BaseModel):
    """Body of ``POST /v1/batches/{batch_id}/requests``."""

    model_config = _STRICT

    batch_requests: list[BatchRequestEntry] = Field(min_length=1)
