"""Request bodies the emulator accepts, validated strictly with the types of ``contract``.

A missing, unknown or malformed field is a 422. A well-formed value that xAI refuses (``quality:
"high"``, a source image that is not a PNG, JPEG or WebP of at most 10 MiB) is a ``refused`` error,
answered 400. :func:`parse_batch_input` reads the JSONL input file of a batch the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from airflow_provider_xai_image.testing.contract import (
    BATCH_LINE_METHOD,
    BATCH_LINE_URLS,
    EDITS_PATH,
    INLINE_BATCH_REQUEST_KIND,
    MAX_IMAGES_PER_REQUEST,
    MAX_SOURCE_IMAGES,
    MIN_IMAGES_PER_REQUEST,
    QUALITIES,
    AspectRatio,
    Quality,
    Resolution,
    ResponseFormat,
    SourceType,
)
from airflow_provider_xai_image.testing.images import decode_data_uri, source_image_size

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
NonBlank = Annotated[str, Field(min_length=1)]
#: The pydantic error type of a value xAI refuses with a 400 (rather than a 422).
REFUSED = "refused"


def describe(error: ValidationError, root: str = "") -> str:
    """One line naming each invalid field (without echoing values, which may be huge data URIs)."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join([root] * bool(root) + [str(part) for part in item["loc"]]) or "body"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def status_of(error: ValidationError) -> int:
    """400 when every problem is a refused value, else 422."""
    return 400 if all(item["type"] == REFUSED for item in error.errors()) else 422


class GenerateBody(BaseModel):
    """Body of ``POST /v1/images/generations`` (and of a batch request)."""

    model_config = _STRICT

    prompt: str
    model: NonBlank | None = None
    n: int = Field(default=1, ge=MIN_IMAGES_PER_REQUEST, le=MAX_IMAGES_PER_REQUEST)
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

    @field_validator("quality", mode="before")
    @classmethod
    def _quality_offered(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in QUALITIES:
            raise PydanticCustomError(
                REFUSED,
                "quality {quality} is not offered; use one of: {offered}",
                {"quality": repr(value), "offered": ", ".join(QUALITIES)},
            )
        return value

    @property
    def named_sources(self) -> list[tuple[str, ImageSource]]:
        """The source images, each with the name an error gives it; none for a generation."""
        return []


class ImageSource(BaseModel):
    """One source image of an edit: ``url`` (https, not fetched, or a data URI) or an uploaded ``file_id``."""

    model_config = _STRICT

    type: SourceType | None = None
    url: NonBlank | None = None
    file_id: NonBlank | None = None
    _pixel_size: tuple[int, int] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_readable_image(self) -> ImageSource:
        if (self.url is None) == (self.file_id is None):
            raise ValueError("give exactly one of 'url' or 'file_id'")
        if self.url is None:
            return self
        if self.url.startswith("data:"):
            try:
                self._pixel_size = source_image_size(decode_data_uri(self.url))
            except ValueError as error:
                raise PydanticCustomError(REFUSED, "{problem}", {"problem": str(error)}) from None
        elif not self.url.startswith(("https://", "http://")):
            raise ValueError("url must be an https URL or a data:image/...;base64 URI")
        return self

    @property
    def pixel_size(self) -> tuple[int, int] | None:
        """Width and height of a data-URI image; None for a URL (not fetched) or a file (read later)."""
        return self._pixel_size


class EditBody(GenerateBody):
    """Body of ``POST /v1/images/edits``: a generate body plus ``image`` or ``images``."""

    image: ImageSource | None = None
    images: list[ImageSource] | None = Field(default=None, min_length=1, max_length=MAX_SOURCE_IMAGES)

    @model_validator(mode="after")
    def _one_source_field(self) -> EditBody:
        if (self.image is None) == (self.images is None):
            raise ValueError("give exactly one of 'image' (one source) or 'images' (several sources)")
        return self

    @property
    def named_sources(self) -> list[tuple[str, ImageSource]]:
        """Each source with the name an error message gives it (``image``, ``images.0``, ...)."""
        if self.image is not None:
            return [("image", self.image)]
        return [(f"images.{index}", source) for index, source in enumerate(self.images or [])]


class CreateBatchBody(BaseModel):
    """Body of ``POST /v1/batches``: a name, and the uploaded input file on the file route."""

    model_config = _STRICT

    name: str
    input_file_id: NonBlank | None = None


class BatchRequestEntry(BaseModel):
    """One element of ``batch_requests`` (inline route): a unique id and ``{KIND: body}``."""

    model_config = _STRICT

    batch_request_id: NonBlank
    batch_request: dict[str, GenerateBody]

    @field_validator("batch_request")
    @classmethod
    def _single_image_request(cls, value: dict[str, GenerateBody]) -> dict[str, GenerateBody]:
        if list(value) != [INLINE_BATCH_REQUEST_KIND]:
            raise ValueError(f"must hold exactly one key, {INLINE_BATCH_REQUEST_KIND!r}")
        return value

    @property
    def body(self) -> GenerateBody:
        return self.batch_request[INLINE_BATCH_REQUEST_KIND]


class AddBatchRequestsBody(BaseModel):
    """Body of ``POST /v1/batches/{batch_id}/requests``."""

    model_config = _STRICT

    batch_requests: list[BatchRequestEntry] = Field(min_length=1)


class BatchInputLine(BaseModel):
    """One line of a batch input file, before its body is read as the endpoint's body."""

    model_config = _STRICT

    custom_id: NonBlank
    method: str
    url: str
    body: dict[str, Any]

    @field_validator("method")
    @classmethod
    def _method_is_post(cls, value: str) -> str:
        if value != BATCH_LINE_METHOD:
            raise ValueError(f"must be {BATCH_LINE_METHOD!r}")
        return value

    @field_validator("url")
    @classmethod
    def _url_is_an_image_endpoint(cls, value: str) -> str:
        if value not in BATCH_LINE_URLS:
            raise ValueError(f"must be one of {', '.join(BATCH_LINE_URLS)}")
        return value


@dataclass(frozen=True)
class BatchInputRequest:
    """One request of a batch input file: its line number, its ``custom_id`` and its body."""

    line: int
    custom_id: str
    body: GenerateBody


def parse_batch_input(data: bytes) -> list[BatchInputRequest]:
    """The requests of a JSONL batch input file; ValueError naming the first bad line.

    Blank lines are skipped; a file with no request, a line that is not a JSON object, an unknown
    method or URL, an invalid body or a repeated ``custom_id`` makes the whole file invalid.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the input file is not UTF-8 text") from None
    requests: list[BatchInputRequest] = []
    first_seen: dict[str, int] = {}
    # Not splitlines(): it also splits at U+2028 and friends, which JSON strings may hold raw.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            payload = json.loads(line)
        except ValueError:
            raise ValueError(f"line {number}: not valid JSON") from None
        if not isinstance(payload, dict):
            raise ValueError(f"line {number}: not a JSON object")
        try:
            entry = BatchInputLine.model_validate(payload)
        except ValidationError as error:
            raise ValueError(f"line {number}: {describe(error)}") from None
        body_model = EditBody if entry.url.endswith(f"/{EDITS_PATH}") else GenerateBody
        try:
            body = body_model.model_validate(entry.body)
        except ValidationError as error:
            raise ValueError(f"line {number}: {describe(error, root='body')}") from None
        if entry.custom_id in first_seen:
            raise ValueError(f"line {number}: custom_id {entry.custom_id!r} repeats line {first_seen[entry.custom_id]}")
        first_seen[entry.custom_id] = number
        requests.append(BatchInputRequest(number, entry.custom_id, body))
    if not requests:
        raise ValueError("the input file holds no requests")
    return requests
