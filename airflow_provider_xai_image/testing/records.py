"""The objects the backend keeps: logged requests, generations, images, files and batches.

Each object that is served renders its own JSON (``to_json``), in the shapes of ``docs/xai-api.md``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_xai_image.testing.config import BatchErrorShape, ExpireTimeFormat
from airflow_provider_xai_image.testing.contract import BATCH_RESPONSE_KIND, ResponseFormat
from airflow_provider_xai_image.testing.images import ImageSpec, render
from airflow_provider_xai_image.testing.schemas import GenerateBody

#: URL path under which temporary images are served (without auth), relative to the server root.
TEMP_IMAGE_PATH = "tmp-images"
#: The shapes a ``mixed`` configuration gives failed batch results, in turn.
ERROR_SHAPES: tuple[BatchErrorShape, ...] = ("object", "string", "error_message")


def rfc3339(timestamp: float | None) -> str | None:
    """``2026-01-02T03:04:05.678Z`` for a Unix timestamp."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_date(timestamp: float) -> str:
    """``2026-01-02``: the UTC day of a Unix timestamp."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).date().isoformat()


@dataclass(frozen=True)
class LoggedRequest:
    """One request the emulator received (headers, hence the API key, are never kept)."""

    method: str
    path: str
    query: str
    #: Response status; None when the emulator dropped the connection without answering.
    status: int | None
    #: ``time.monotonic()`` when the request arrived.
    time: float
    body_size: int
    #: The parsed JSON body when it is under 64 KB, else None.
    json: Any
    #: Generate/edit calls being served when this request arrived, itself included when it is one
    #: (a client sending one image request at a time shows 1; refused calls count while they are answered).
    in_flight: int = 0


@dataclass(frozen=True)
class SourceImage:
    """A source image of an edit, resolved: what makes its edits differ, and its size when known."""

    #: A digest of the source (its URL, or the bytes of an uploaded file).
    key: str
    #: Pixel size; None for an http(s) URL, which the emulator does not fetch.
    size: tuple[int, int] | None


@dataclass(frozen=True)
class OutputImage:
    """One image of a generation: where it is served (``filename``, for ``url`` responses) or filtered."""

    spec: ImageSpec
    filename: str | None
    filtered: bool


@dataclass(frozen=True)
class Generation:
    """What one generate/edit call (or one batch request) produced and cost."""

    model: str
    response_format: ResponseFormat
    images: tuple[OutputImage, ...]
    cost_usd_ticks: int
    #: The per-image ``revised_prompt``; None leaves the key out.
    revised_prompt: str | None = None
    block_reason: str | None = None
    #: Inline images carry only the first half of their bytes (the ``truncated_b64`` fault).
    truncated_b64: bool = False

    def to_json(self, server_url: str, b64_data_uri_prefix: bool) -> dict[str, Any]:
        """The response body; ``server_url`` is the root the temporary images are served under."""
        return {
            "data": [self._image_json(image, server_url, b64_data_uri_prefix) for image in self.images],
            "usage": {"cost_in_usd_ticks": self.cost_usd_ticks},
            "model": self.model,
            "block_reason": self.block_reason,
        }

    def _image_json(self, image: OutputImage, server_url: str, b64_data_uri_prefix: bool) -> dict[str, Any]:
        url = b64 = None
        if image.filename is not None:
            url = f"{server_url.rstrip('/')}/{TEMP_IMAGE_PATH}/{image.filename}"
        elif not image.filtered:
            data = render(image.spec)
            if self.truncated_b64:
                data = data[: len(data) // 2]
            b64 = base64.b64encode(data).decode("ascii")
            if b64_data_uri_prefix:
                b64 = f"data:{image.spec.mime_type};base64,{b64}"
        item: dict[str, Any] = {"url": url, "b64_json": b64, "mime_type": image.spec.mime_type}
        if self.revised_prompt is not None:
            item["revised_prompt"] = self.revised_prompt
        item["respect_moderation"] = not image.filtered
        return item


@dataclass
class TempImage:
    """A temporary image: rendered from its spec on each download until ``expires_at`` (monotonic)."""

    spec: ImageSpec
    expires_at: float


@dataclass(frozen=True)
class UploadedFile:
    """A file sent to ``POST /v1/files``; ``created_at`` and ``expires_at`` are Unix seconds."""

    file_id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    expires_at: int | None

    def to_json(self) -> dict[str, Any]:
        """The OpenAI-style file object."""
        return {
            "id": self.file_id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
        }


@dataclass(frozen=True)
class CompletedBatchRequest:
    """A completed batch request: its generation on success, else its error (gRPC code and message)."""

    batch_request_id: str
    generation: Generation | None = None
    error: str = ""
    error_code: int = 0
    #: How many requests of the batch had failed before this one (picks the ``mixed`` error shape).
    error_number: int = 0

    def to_json(self, error_shape: BatchErrorShape, server_url: str, b64_data_uri_prefix: bool) -> dict[str, Any]:
        """One item of a results page."""
        item: dict[str, Any] = {"batch_request_id": self.batch_request_id}
        if self.generation is not None:
            response = self.generation.to_json(server_url, b64_data_uri_prefix)
            return {**item, "batch_result": {"response": {BATCH_RESPONSE_KIND: response}}}
        if error_shape == "mixed":
            error_shape = ERROR_SHAPES[self.error_number % len(ERROR_SHAPES)]
        if error_shape == "object":
            return {**item, "batch_result": {"error": {"code": self.error_code, "message": self.error}}}
        if error_shape == "string":
            return {**item, "batch_result": {"error": self.error}}
        return {**item, "error_message": self.error}


@dataclass(frozen=True)
class BatchRequest:
    """A request of a batch: its id, its body and (for an edit) its resolved source images."""

    batch_request_id: str
    body: GenerateBody
    sources: tuple[SourceImage, ...] = ()


@dataclass
class PendingRequest:
    """A batch request waiting to complete at ``due`` (monotonic) unless cancelled first."""

    request: BatchRequest
    due: float


@dataclass
class BatchRecord:
    """A batch: its input while xAI validates it, its requests (pending and completed), its counters."""

    batch_id: str
    name: str
    create_time: float
    expire_time: float
    #: The uploaded input file (file route); None for a batch that requests are added to.
    input_file_id: str | None = None
    #: Monotonic time the input file's validation ends; None once it has (or for an inline batch).
    validation_due: float | None = None
    #: What validation will reveal: the file's requests, or why xAI refuses it.
    staged: list[BatchRequest] = field(default_factory=list)
    refusal: str | None = None
    cancel_time: float | None = None
    cancel_by_xai_message: str | None = None
    request_ids: set[str] = field(default_factory=set)
    pending: list[PendingRequest] = field(default_factory=list)
    completed: list[CompletedBatchRequest] = field(default_factory=list)
    num_success: int = 0
    num_error: int = 0
    num_cancelled: int = 0

    def to_json(self, expire_time_format: ExpireTimeFormat) -> dict[str, Any]:
        """The Batch object of the contract (no ``cost_breakdown``: results carry the costs)."""
        expire_time = utc_date(self.expire_time) if expire_time_format == "date" else rfc3339(self.expire_time)
        return {
            "batch_id": self.batch_id,
            "name": self.name,
            "create_time": rfc3339(self.create_time),
            "expire_time": expire_time,
            "cancel_time": rfc3339(self.cancel_time),
            "cancel_by_xai_message": self.cancel_by_xai_message,
            "state": {
                "num_requests": len(self.request_ids),
                "num_pending": len(self.pending),
                "num_success": self.num_success,
                "num_error": self.num_error,
                "num_cancelled": self.num_cancelled,
            },
        }
