"""One task instance's images: its manifest, found through its XCom ``manifest``, and its images by name.

A manifest is shown only for the task instance that wrote it: the XCom value is a URI anyone who may
edit the DAG's XComs can set, so the gallery checks, before serving anything, that

* the URI is under one of the storage roots the deployment allows (``[xai_image] gallery_allowed_roots``)
  and has no ``.``/``..`` segments;
* the manifest is no larger than ``[xai_image] gallery_max_manifest_mib``;
* the task instance the manifest records is the one asked about (manifests written before task
  instances were recorded are refused: the task's next run writes one that is shown);
* the manifest is where the provider puts that task instance's manifest: the folder
  :func:`~airflow_provider_xai_image.storage.layout.task_output_path` derives from its recorded
  ``output_uri``.

Anything else is "no manifest" to the user, with the reason in the API server's log.

No path is ever built from what a user sends: an image is found by looking its name up among the
images the manifest lists directly in the manifest's own folder (the task instance's output
folder), and it is served only if its bytes start like an image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from airflow.models.xcom import XComModel
from airflow.sdk import ObjectStoragePath

from airflow_provider_xai_image.ledger.records import TaskInstanceId
from airflow_provider_xai_image.plugins.manifest_index import ManifestCache, ManifestError, ManifestIndex
from airflow_provider_xai_image.settings import allowed_roots, max_manifest_bytes
from airflow_provider_xai_image.storage.image_checks import HEADER_BYTES, ImageType, sniff_image_type
from airflow_provider_xai_image.storage.layout import MANIFEST_NAME, MANIFEST_XCOM_KEY, task_output_path

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: Bytes read from storage at a time while an image streams out.
CHUNK_BYTES = 256 * 1024
#: Manifests kept indexed (each on local disk, about its own size) between requests.
MANIFEST_CACHE = ManifestCache(max_entries=4)


#: What a user is told of a manifest that is not shown (the reason is in the API server's log only).
NOT_SHOWN = "This task instance has no image manifest the gallery may show."


class ManifestRefused(Exception):
    """The task instance's XCom ``manifest`` names a manifest the gallery does not show.

    :param reason: Why, for the API server's log.
    :param message: What the user is told.
    """

    def __init__(self, reason: str, message: str = NOT_SHOWN) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message


def find_manifest_uri(session: Session, task: TaskInstanceId) -> str | None:
    """The manifest URI the task instance pushed to XCom ``manifest``, or None.

    :param session: A session of Airflow's metadata database.
    :param task: The task instance.
    """
    query = XComModel.get_many(
        run_id=task.run_id,
        key=MANIFEST_XCOM_KEY,
        task_ids=task.task_id,
        dag_ids=task.dag_id,
        map_indexes=task.map_index,
        limit=1,
    )
    row = session.scalars(query).first()
    value = None if row is None else XComModel.deserialize_value(row)
    if isinstance(value, str) and value.endswith(f"/{MANIFEST_NAME}"):
        return value
    return None


def load_task_manifest(session: Session, task: TaskInstanceId) -> ManifestIndex | None:
    """The task instance's manifest, read through ObjectStoragePath (and so its Airflow connection), or
    None when it has none: no XCom ``manifest``, or no file there any more.

    :param session: A session of Airflow's metadata database.
    :param task: The task instance.
    :raises ManifestRefused: The XCom names a manifest that is not the task instance's own (logged).
    """
    uri = find_manifest_uri(session, task)
    if uri is None:
        return None
    try:
        index = _checked_index(uri, task)
    except ManifestRefused as refused:
        log.warning("xAI image gallery: not showing %r for task instance %s: %s", uri, task, refused.reason)
        raise
    return index


def _checked_index(uri: str, task: TaskInstanceId) -> ManifestIndex | None:
    _check_location(uri)
    path = ObjectStoragePath(uri)
    try:
        info = path.fs.info(path.path)
    except FileNotFoundError:
        return None
    size, cap = info.get("size"), max_manifest_bytes()
    if info.get("type") != "file" or not isinstance(size, int):
        raise ManifestRefused(f"not a file of known size: {info.get('type')}, size {size!r}")
    if size > cap:
        raise ManifestRefused(
            f"{size:,} bytes, above [xai_image] gallery_max_manifest_mib ({cap:,} bytes)",
            f"This task instance's manifest is larger than the gallery reads ({cap // 2**20} MiB, "
            "[xai_image] gallery_max_manifest_mib): download it from storage instead.",
        )
    key = (uri, size, info.get("mtime"), str(info.get("LastModified")), info.get("ETag"))
    index = MANIFEST_CACHE.get(key, lambda: _read_index(path, uri, cap))
    _check_owner(index, uri, task)
    return index


def _check_location(uri: str) -> None:
    segments = urlsplit(uri).path.split("/")
    if "." in segments or ".." in segments:
        raise ManifestRefused("the URI has '.' or '..' segments")
    roots = allowed_roots()
    if roots and not any(uri.startswith(root) for root in roots):
        raise ManifestRefused(f"outside [xai_image] gallery_allowed_roots ({', '.join(roots)})")


def _read_index(path: ObjectStoragePath, uri: str, cap: int) -> ManifestIndex:
    index = ManifestIndex(uri)
    try:
        with path.open("rb") as stream:
            index.load(_Capped(stream, cap))
    except ManifestError as error:
        raise ManifestRefused(str(error)) from error
    return index


def _check_owner(index: ManifestIndex, uri: str, task: TaskInstanceId) -> None:
    if index.task_instance is None:
        raise ManifestRefused(
            "it records no task instance (written by an earlier version of the provider: the task's next run "
            "writes one the gallery shows)"
        )
    if index.task_instance != task:
        raise ManifestRefused(f"it belongs to another task instance: {index.task_instance}")
    if index.output_uri is None:
        raise ManifestRefused("it records no output_uri")
    try:
        expected = str(task_output_path(index.output_uri, task.run_id, task.task_id, task.map_index) / MANIFEST_NAME)
    except Exception as error:
        raise ManifestRefused(f"its output_uri {index.output_uri!r} is no storage location: {error}") from error
    if expected != uri:
        raise ManifestRefused(f"not in the task instance's folder: its manifest goes to {expected}")


class _Capped:
    """A binary stream that fails once more than ``cap`` bytes are read from it (a file that grew after
    its size was checked)."""

    def __init__(self, stream: IO[bytes], cap: int) -> None:
        self.stream = stream
        self.left = cap

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size >= 0 else self.left + 1)
        self.left -= len(data)
        if self.left < 0:
            raise ManifestError("it grew above [xai_image] gallery_max_manifest_mib while being read")
        return data


def open_image(uri: str) -> tuple[ImageType, Iterator[bytes]] | None:
    """Open a stored image: its type (told by its bytes, not its name) and its bytes in chunks of
    :data:`CHUNK_BYTES`, or None when it is gone or its bytes are not an image.

    :param uri: The image's URI, as its manifest lists it.
    """
    try:
        stream = ObjectStoragePath(uri).open("rb")
    except FileNotFoundError:
        return None
    header = stream.read(HEADER_BYTES)
    image_type = sniff_image_type(header)
    if image_type is None:
        stream.close()
        return None
    return image_type, _chunks(stream, header)


def _chunks(stream: IO[bytes], header: bytes) -> Iterator[bytes]:
    with stream:
        yield header
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
