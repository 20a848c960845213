"""The objects the backend keeps: logged requests, generations, temporary images and batches."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_xai_image.models import ResponseFormat
from airflow_provider_xai_image.testing.images import ImageSpec, render
from airflow_provider_xai_image.testing.schemas import GenerateBody

#: URL path under which temporary images are served (without auth), relative to the server root.
TEMP_IMAGE_PATH = "tmp-images"


def rfc3339(timestamp: float | None) -> str | None:
    """``2026-01-02T03:04:05.678Z`` for a Unix timestamp."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RequestRecord:
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
    revised_prompt: str
    response_format: ResponseFormat
    images: tuple[OutputImage, ...]
    cost_usd_ticks: int
    block_reason: str | None = None

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
            b64 = base64.b64encode(render(image.spec)).decode("ascii")
            if b64_data_uri_prefix:
                b64 = f"data:{image.spec.mime_type};base64,{b64}"
        return {
            "url": url,
            "b64_json": b64,
            "mime_type": image.spec.mime_type,
            "revised_prompt": self.revised_prompt,
            "respect_moderation": not image.filtered,
        }


@dataclass
class TempImage:
    """A temporary image: rendered from its spec on each download until ``expires_at`` (monotonic)."""

    spec: ImageSpec
    expires_at: float


@dataclass(frozen=True)
class BatchOutcome:
    """A completed batch request: its generation on success, its error message on failure."""

    batch_request_id: str
    generation: Generation | None = None
    error: str | None = None


@dataclass
class BatchRequestRecord:
    """A request added to a batch; it completes at ``due`` (monotonic) unless cancelled first."""

    batch_request_id: str
    body: GenerateBody
    due: float


@dataclass
class BatchRecord:
    """A batch: its requests, pending and completed (in completion order), and its counters."""

    batch_id: str
    name: str
    create_time: float
    expire_time: float
    cancel_time: float | None = None
    cancel_by_xai_message: str | None = None
    request_ids: set[str] = field(default_factory=set)
    pending: list[BatchRequestRecord] = field(default_factory=list)
    completed: list[BatchOutcome] = field(default_factory=list)
    num_success: int = 0
    num_error: int = 0
    num_cancelled: int = 0
    cost_usd_ticks: int = 0

    def to_json(self) -> dict[str, Any]:
        """The Batch object of the contract."""
        return {
            "batch_id": self.batch_id,
            "name": self.name,
            "create_time": rfc3339(self.create_time),
            "expire_time": rfc3339(self.expire_time),
            "cancel_time": rfc3339(self.cancel_time),
            "cancel_by_xai_message": self.cancel_by_xai_message,
            "state": {
                "num_requests": len(self.request_ids),
                "num_pending": len(self.pending),
                "num_success": self.num_success,
                "num_error": self.num_error,
                "num_cancelled": self.num_cancelled,
            },
            "cost_breakdown": {"total_cost_usd_ticks": self.cost_usd_ticks},
        }
