"""The emulator's knobs: behaviour settings and injected faults, validated like request bodies.

One :class:`EmulatorConfig` holds both kinds. Settings (``latency``, ``image_ttl``, ``batch_seconds``,
``revised_prompt``, ``batch_error_shape``, ...) stay in force until changed; the one-shot faults
(``status_script``, ``generation_status_script``, ``reset_connections``, ``invalid_json``, ``truncated_images``,
``truncated_images_no_length``, ``truncated_b64``, ``empty_responses``) count down as the emulator
consumes them, so reading the config back shows what is still queued.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airflow_provider_xai_image.testing.contract import (
    BATCH_ADD_MAX_BYTES,
    BATCH_ADD_MAX_CALLS,
    BATCH_ADD_WINDOW_SECONDS,
    BATCH_CREATE_PER_SECOND,
    BATCH_IMAGE_URL_TTL_SECONDS,
)

ImageFormat = Literal["jpeg", "png"]
ModerationStyle = Literal["per_image", "block_reason"]
RevisedPrompt = Literal["absent", "empty", "text"]
BatchErrorShape = Literal["object", "string", "error_message", "mixed"]
ExpireTimeFormat = Literal["date", "rfc3339"]

Latency = float | tuple[float, float]


class EmulatorConfig(BaseModel):
    """Every setting and fault of the emulator; unknown names are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Settings.
    latency: Latency = Field(
        default=0.0,
        description="Seconds added to every /v1 call: a fixed value, or (min, max) for a uniform random delay.",
    )
    generation_latency: float = Field(
        default=0.0,
        ge=0,
        description="Seconds more for generate/edit calls only (image models are slower than the other calls).",
    )
    retry_after: int | None = Field(
        default=1, ge=0, description="Retry-After seconds on scripted 429s; None sends no header."
    )
    slow_image_bytes_per_second: int | None = Field(
        default=None, gt=0, description="Stream temporary-image downloads at this pace (None: at once)."
    )
    image_ttl: float = Field(
        default=BATCH_IMAGE_URL_TTL_SECONDS,
        ge=0,
        description="Seconds a temporary image URL stays valid (for a batch, from when its request completed).",
    )
    image_format: ImageFormat = Field(default="jpeg", description="Format of generated images.")
    b64_data_uri_prefix: bool = Field(
        default=False, description="Prefix b64_json values with 'data:image/...;base64,'."
    )
    revised_prompt: RevisedPrompt = Field(
        default="absent",
        description="Per-image revised_prompt: 'absent' (key omitted), 'empty' (\"\") or 'text' (a rewrite).",
    )
    moderation_style: ModerationStyle = Field(
        default="per_image",
        description="How a moderated prompt is reported: per image (respect_moderation: false, no "
        "image) or as a top-level block_reason with no images.",
    )
    rate_limit_rps: int | None = Field(
        default=None,
        gt=0,
        description="Generate/edit calls allowed in any one second (429 past it, before any latency); None: no limit.",
    )
    rate_limit_retry_after: bool = Field(
        default=True,
        description="Rate-limited 429s say when a call is allowed again (Retry-After, whole seconds); "
        "False sends none (xAI may not).",
    )
    batch_validation_seconds: float = Field(
        default=0.2,
        ge=0,
        description="Seconds a batch created from a file spends validating it (every counter 0 meanwhile).",
    )
    batch_seconds: float = Field(
        default=1.0, ge=0, description="Seconds after being added (or validated) that a batch request completes."
    )
    batch_error_shape: BatchErrorShape = Field(
        default="mixed",
        description="Shape of a failed batch result: batch_result.error as {code, message} ('object') or "
        "as text ('string'), a top-level error_message ('error_message'), or the three in turn ('mixed').",
    )
    expire_time_format: ExpireTimeFormat = Field(
        default="date", description="A batch's expire_time: a bare YYYY-MM-DD ('date') or RFC 3339."
    )
    batch_add_max_bytes: int = Field(default=BATCH_ADD_MAX_BYTES, gt=0)
    batch_add_max_calls: int = Field(default=BATCH_ADD_MAX_CALLS, gt=0)
    batch_add_window_seconds: float = Field(default=BATCH_ADD_WINDOW_SECONDS, gt=0)
    batch_create_per_second: int | None = Field(
        default=BATCH_CREATE_PER_SECOND,
        gt=0,
        description="Batch creations allowed per second (429 past it); None: no limit.",
    )

    echo_authorization: bool = Field(
        default=False,
        description="Scripted error statuses quote the request's Authorization header in their message, raw, "
        "URL-encoded and JSON-escaped (as a careless proxy's error page might).",
    )

    # One-shot faults, consumed by the next /v1 calls (or image downloads) in order.
    status_script: list[int] = Field(
        default_factory=list, description="Statuses (429, 5xx, ...) returned by the next /v1 calls, in order."
    )
    generation_status_script: list[int] = Field(
        default_factory=list,
        description="Statuses returned by the next generate/edit calls only, in order (other calls pass).",
    )
    reset_connections: int = Field(
        default=0, ge=0, description="Next /v1 calls whose connection is closed with no response."
    )
    invalid_json: int = Field(default=0, ge=0, description="Next /v1 calls answered 200 with a non-JSON body.")
    truncated_images: int = Field(
        default=0, ge=0, description="Next image downloads cut short of their Content-Length."
    )
    truncated_images_no_length: int = Field(
        default=0,
        ge=0,
        description="Next image downloads that send half the image with no Content-Length (the body just ends).",
    )
    truncated_b64: int = Field(
        default=0,
        ge=0,
        description="Next b64_json generate/edit responses whose images hold only the first half of their bytes.",
    )
    empty_responses: int = Field(
        default=0,
        ge=0,
        description='Next generate/edit calls answered 200 with "data": [] and nothing billed.',
    )

    @field_validator("latency")
    @classmethod
    def _latency_is_a_delay(cls, value: Latency) -> Latency:
        low, high = value if isinstance(value, tuple) else (value, value)
        if low < 0 or high < low:
            raise ValueError("must be seconds >= 0, or (min, max) with 0 <= min <= max")
        return value

    @field_validator("status_script", "generation_status_script")
    @classmethod
    def _statuses_are_errors(cls, value: list[int]) -> list[int]:
        for status in value:
            if not 400 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP error status (400-599)")
        return value
