"""The emulator's knobs: behaviour settings and injected faults, validated like request bodies.

One :class:`EmulatorConfig` holds both kinds. Settings (``latency``, ``image_ttl``, ``batch_seconds``,
...) stay in force until changed; the one-shot faults (``status_script``, ``reset_connections``,
``invalid_json``, ``truncated_images``) count down as the emulator consumes them, so reading the
config back shows what is still queued.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airflow_provider_xai_image.models import (
    BATCH_ADD_MAX_BYTES,
    BATCH_ADD_MAX_CALLS,
    BATCH_ADD_WINDOW_SECONDS,
)

ImageFormat = Literal["jpeg", "png"]
ResultsShape = Literal["results", "succeeded_failed"]
ModerationStyle = Literal["per_image", "block_reason"]

Latency = float | tuple[float, float]


class EmulatorConfig(BaseModel):
    """Every setting and fault of the emulator; unknown names are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Settings.
    latency: Latency = Field(
        default=0.0,
        description="Seconds added to every /v1 call: a fixed value, or (min, max) for a uniform random delay.",
    )
    retry_after: int | None = Field(
        default=1, ge=0, description="Retry-After seconds on scripted 429s; None sends no header."
    )
    slow_image_bytes_per_second: int | None = Field(
        default=None, gt=0, description="Stream temporary-image downloads at this pace (None: at once)."
    )
    image_ttl: float = Field(default=3600.0, ge=0, description="Seconds a temporary image URL stays valid.")
    image_format: ImageFormat = Field(default="jpeg", description="Format of generated images.")
    b64_data_uri_prefix: bool = Field(
        default=False, description="Prefix b64_json values with 'data:image/...;base64,'."
    )
    moderation_style: ModerationStyle = Field(
        default="per_image",
        description="How a moderated prompt is reported: per image (respect_moderation: false, no "
        "image) or as a top-level block_reason with no images.",
    )
    rate_limit_rps: int | None = Field(
        default=None, gt=0, description="Generate/edit calls allowed per second (429 past it); None: no limit."
    )
    batch_seconds: float = Field(
        default=1.0, ge=0, description="Seconds after being added that a batch request completes."
    )
    results_shape: ResultsShape = Field(
        default="results",
        description="Shape of a batch results page: 'results' or 'succeeded_failed'.",
    )
    batch_add_max_bytes: int = Field(default=BATCH_ADD_MAX_BYTES, gt=0)
    batch_add_max_calls: int = Field(default=BATCH_ADD_MAX_CALLS, gt=0)
    batch_add_window_seconds: float = Field(default=BATCH_ADD_WINDOW_SECONDS, gt=0)
    batch_create_per_second: int | None = Field(
        default=1, gt=0, description="Batch creations allowed per second (429 past it); None: no limit."
    )

    # One-shot faults, consumed by the next /v1 calls (or image downloads) in order.
    status_script: list[int] = Field(
        default_factory=list, description="Statuses (429, 5xx, ...) returned by the next /v1 calls, in order."
    )
    reset_connections: int = Field(
        default=0, ge=0, description="Next /v1 calls whose connection is closed with no response."
    )
    invalid_json: int = Field(default=0, ge=0, description="Next /v1 calls answered 200 with a non-JSON body.")
    truncated_images: int = Field(
        default=0, ge=0, description="Next image downloads cut short of their Content-Length."
    )

    @field_validator("latency")
    @classmethod
    def _latency_is_a_delay(cls, value: Latency) -> Latency:
        low, high = value if isinstance(value, tuple) else (value, value)
        if low < 0 or high < low:
            raise ValueError("must be seconds >= 0, or (min, max) with 0 <= min <= max")
        return value

    @field_validator("status_script")
    @classmethod
    def _statuses_are_errors(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 400 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP error status (400-599)")
        return value
