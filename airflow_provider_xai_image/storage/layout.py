"""Where one task instance's files live under ``output_uri``, and what their names say.

Layout for one task instance::

    <output_uri>/<run_id>/<task_id>[/map-<map_index>]/p00000-i00-<fingerprint>.jpg   one image
                                                     /_records/p00000-<id>.json   records of some requests
                                                     /plan.json                   a deferred task's plan
                                                     /manifest.json               written last

(``run_id`` and ``task_id`` as :func:`safe_segment` writes them.) An image's name says which prompt
and image it is and which request made it (the request's fingerprint), so a stored image proves
what was paid for even when a crash lost its record.
"""

from __future__ import annotations

import hashlib
import re

from airflow.sdk import ObjectStoragePath

from airflow_provider_xai_image.ledger.records import FINGERPRINT_CHARS
from airflow_provider_xai_image.storage.image_checks import IMAGE_EXTENSIONS

MANIFEST_NAME = "manifest.json"
#: The XCom key the operators push their manifest's URI to.
MANIFEST_XCOM_KEY = "manifest"
#: What a deferred generation hands its trigger (see :mod:`airflow_provider_xai_image.engine.plan`).
PLAN_NAME = "plan.json"
RECORDS_DIR = "_records"
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")
IMAGE_NAME = re.compile(
    rf"^p(?P<prompt>\d{{5}})-i(?P<image>\d{{2}})-(?P<fingerprint>[0-9a-f]{{{FINGERPRINT_CHARS}}})"
    rf"\.(?P<extension>{'|'.join(IMAGE_EXTENSIONS)})$"
)


def image_stem(prompt_index: int, image_index: int, fingerprint: str) -> str:
    """The name of an image without its extension (no prompt text, ever)."""
    return f"p{prompt_index:05d}-i{image_index:02d}-{fingerprint}"


def safe_segment(value: str) -> str:
    """A path segment for ``value``: itself when already safe, else cleaned plus a short hash (no collisions)."""
    cleaned = _SAFE_SEGMENT.sub("_", value)
    if cleaned == value:
        return value
    return f"{cleaned}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def name_in_folder(uri: str | None, folder: str) -> str | None:
    """The file name of ``uri`` when it lies directly in ``folder``, else None.

    :param uri: A stored file's URI (None: no file).
    :param folder: A folder's URI, without a trailing ``/``.
    """
    parent, _, name = (uri or "").rpartition("/")
    return name if parent == folder and name not in ("", ".", "..") else None


def task_output_path(output_uri: str, run_id: str, task_id: str, map_index: int | None) -> ObjectStoragePath:
    """The folder of one task instance's images under ``output_uri``."""
    base = ObjectStoragePath(output_uri) / safe_segment(run_id) / safe_segment(task_id)
    if map_index is not None and map_index >= 0:
        base = base / f"map-{map_index}"
    return base
