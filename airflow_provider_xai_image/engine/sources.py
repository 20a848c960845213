"""Reading the source images of an edit into the data URIs xAI accepts, checked before any request.

A local source (``file://``) is read with the worker's own rights (a deferred task's plan carries what
it read): a deployment whose DAGs take sources from ``dag_run.conf`` restricts them to some folders
with ``[xai_image] allowed_local_source_roots`` (comma-separated; empty allows any). The path is resolved first (``..``
and symbolic links followed), so no source reaches outside those folders.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Sequence

from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_xai_image.api.images import MAX_SOURCE_IMAGE_BYTES, SOURCE_IMAGE_TYPES
from airflow_provider_xai_image.exceptions import XaiImageError, XaiSourceImageError
from airflow_provider_xai_image.settings import SECTION, allowed_local_source_roots
from airflow_provider_xai_image.storage.image_checks import verify_stream

#: Folders local sources must be in (comma-separated; empty: anywhere the process can read).


def read_source_images(sources: Sequence[str]) -> tuple[str, ...]:
    """Each source as xAI takes it: an https URL as is (xAI fetches it), anything else read, checked
    (PNG, JPEG or WebP, whole, at most 10 MiB) and encoded as a data URI.

    :raises XaiSourceImageError: naming the source's position and URI.
    """
    return tuple(_read(position, source) for position, source in enumerate(sources))


def _read(position: int, source: str) -> str:
    if source.startswith("https://"):
        return source
    name = f"source_images[{position}] ({source[:80]})"
    buffer = io.BytesIO()
    try:
        if source.startswith("data:"):
            decoded = io.BytesIO(base64.b64decode(source.partition(",")[2], validate=True))
            image = verify_stream(decoded, buffer, name, MAX_SOURCE_IMAGE_BYTES)
        else:
            path = ObjectStoragePath(source)
            local = isinstance(path.fs, LocalFileSystem)
            with open(allowed_local_path(name, path.path), "rb") if local else path.open("rb") as stream:
                image = verify_stream(stream, buffer, name, MAX_SOURCE_IMAGE_BYTES)
    except FileNotFoundError:
        raise XaiSourceImageError(f"{name} does not exist") from None
    except binascii.Error:
        raise XaiSourceImageError(f"{name} is not valid base64") from None
    except XaiSourceImageError:
        raise
    except XaiImageError as error:
        raise XaiSourceImageError(f"{error} (xAI takes PNG, JPEG or WebP of at most 10 MiB)") from None
    if image.image_type.mime_type not in SOURCE_IMAGE_TYPES:
        raise XaiSourceImageError(
            f"{name} is {image.image_type.mime_type}; xAI takes only {', '.join(SOURCE_IMAGE_TYPES)}"
        )
    return f"data:{image.image_type.mime_type};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def allowed_local_path(name: str, path: str) -> str:
    """A local source's path resolved (``..``, links), to be read as is; refused outside the allowed folders.

    :param name: The source as errors name it.
    :param path: Its local path.
    :raises XaiSourceImageError: naming the source and the allowed folders.
    """
    resolved = os.path.realpath(path)
    roots = allowed_local_source_roots()
    if roots and not any(os.path.commonpath([resolved, root]) == root for root in roots):
        raise XaiSourceImageError(
            f"{name} is outside the folders local sources may be read from "
            f"([{SECTION}] allowed_local_source_roots: {', '.join(roots)})"
        )
    return resolved
