"""Operator parameters checked at the boundary, before any request: one pydantic model names every
bad parameter and what is allowed.

Templated parameters are checked in ``execute`` (after rendering); the others also when the operator
is built, so a DAG with a wrong value fails to parse with the same message.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import fsspec
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from airflow_provider_xai_image.api.images import MAX_IMAGES_PER_REQUEST, MAX_SOURCE_IMAGES
from airflow_provider_xai_image.exceptions import XaiRequestValidationError

OnModeration = Literal["fail", "skip"]
#: fsspec protocols that are not a place to store images (read-only or not storage).
_NOT_STORAGE = {"http", "https", "data"}


def _one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _templated_int(value: Any) -> Any:
    """A templated number renders as text: ``"2"`` is 2; anything else is checked strictly."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def storage_schemes() -> set[str]:
    return set(fsspec.available_protocols()) - _NOT_STORAGE


def _check_storage_uri(uri: str, *, sources: bool = False) -> str:
    scheme = urlsplit(uri).scheme
    if sources and (scheme == "https" or uri.startswith("data:image/")):
        return uri
    if not uri.strip() or scheme not in storage_schemes():
        allowed = "https://, data:image/... or " if sources else ""
        raise ValueError(
            f"must be {allowed}a URI with a storage scheme Airflow's ObjectStoragePath supports "
            "(s3://, gs://, abfs://, file://, ...)"
        )
    return uri


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-blank string")
    return value


Prompt = Annotated[str, AfterValidator(_not_blank)]
Prompts = Annotated[list[Prompt], BeforeValidator(_one_or_list), Field(min_length=1)]
SourceImages = Annotated[list[str], BeforeValidator(_one_or_list), Field(min_length=1, max_length=MAX_SOURCE_IMAGES)]
ImagesPerPrompt = Annotated[int, BeforeValidator(_templated_int), Field(ge=1, le=MAX_IMAGES_PER_REQUEST)]


_PROMPTS_ALLOWED = "a non-blank string or a non-empty list of non-blank strings"


class TaskParameters(BaseModel):
    """Every operator parameter that is checked before a request; each is optional, so an operator
    checks only its own."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: Prompts | None = Field(default=None, description=_PROMPTS_ALLOWED)
    prompts: Prompts | None = Field(default=None, description=_PROMPTS_ALLOWED)
    output_uri: str | None = Field(default=None, description="a storage URI (s3://, gs://, abfs://, file://, ...)")
    source_images: SourceImages | None = None
    n: ImagesPerPrompt | None = None
    max_cost_usd: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    max_concurrency: Annotated[int, Field(ge=1)] | None = None
    on_moderation: OnModeration | None = None
    max_failed_fraction: Annotated[float, Field(ge=0, le=1)] | None = None
    poll_interval: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    shares: Annotated[int, Field(ge=1)] | None = None

    @field_validator("output_uri")
    @classmethod
    def _output_uri(cls, value: str) -> str:
        return _check_storage_uri(value)

    @field_validator("source_images")
    @classmethod
    def _source_images(cls, value: list[str]) -> list[str]:
        return [_check_storage_uri(uri, sources=True) for uri in value]

    @classmethod
    def check(cls, required: Collection[str] = (), **values: Any) -> TaskParameters:
        """Validate ``values``; raise :class:`XaiRequestValidationError` naming each bad parameter.

        :param required: Names of ``values`` that must not be None (others are not checked when None).
        :param values: Parameters by name.
        """
        missing = [name for name in required if values.get(name) is None]
        if missing:
            raise XaiRequestValidationError(
                "Invalid operator parameter: "
                + "; ".join(f"{name}: is required, {cls.model_fields[name].description} (got None)" for name in missing)
            )
        try:
            return cls(**{name: value for name, value in values.items() if value is not None})
        except ValidationError as error:
            raise XaiRequestValidationError.from_pydantic(error, "Invalid operator parameter") from None
