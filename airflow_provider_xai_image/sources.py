"""Reading source images for edits from object storage into the data URIs xAI accepts."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

from airflow.sdk import ObjectStoragePath

from airflow_provider_xai_image.exceptions import XaiImageError
from airflow_provider_xai_image.image_types import verify_stream
from airflow_provider_xai_image.models import MAX_SOURCE_IMAGES

#: Largest source image read (xAI documents no limit; larger bodies are slow and costly to send).
MAX_SOURCE_IMAGE_BYTES = 20 * 1024 * 1024


def check_source_count(sources: Sequence[str]) -> None:
    if not 1 <= len(sources) <= MAX_SOURCE_IMAGES:
        raise ValueError(f"source_images: xAI edits take 1 to {MAX_SOURCE_IMAGES} images, got {len(sources)}")


def to_data_uri(source: str) -> str:
    """An https URL or data URI as is; an object-storage URI (``s3://``, ``file://``, a path) read and encoded."""
    if source.startswith(("https://", "http://", "data:image/")):
        return source
    path = ObjectStoragePath(source)
    buffer = io.BytesIO()
    try:
        with path.open("rb") as stream:
            image = verify_stream(stream, buffer, f"source image {source}", MAX_SOURCE_IMAGE_BYTES)
    except FileNotFoundError:
        raise XaiImageError(f"source image {source} does not exist") from None
    return f"data:{image.image_type.mime_type};base64,{base64.b64encode(buffer.getvalue()).decode()}"
