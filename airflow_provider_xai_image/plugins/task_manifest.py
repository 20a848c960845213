"""One task instance's images: its manifest, found through its XCom ``manifest``, and its images by name.

No path is ever built from what a user sends: an image is found by looking its name up among the
images the manifest lists directly in the manifest's own folder (the task instance's output
folder), and it is served only if its bytes start like an image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from airflow.models.xcom import XComModel
from airflow.sdk import ObjectStoragePath

from airflow_provider_xai_image.image_types import HEADER_BYTES, ImageType, sniff_image_type
from airflow_provider_xai_image.records import ImageRecord, Manifest
from airflow_provider_xai_image.storage import MANIFEST_NAME

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: The XCom key the operators push their manifest's URI to.
MANIFEST_XCOM_KEY = "manifest"
#: Bytes read from storage at a time while an image streams out.
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class TaskInstanceId:
    """Which task instance.

    :param dag_id: The DAG.
    :param run_id: The DAG run.
    :param task_id: The task.
    :param map_index: The index of a mapped task instance; -1 when the task is not mapped.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@dataclass(frozen=True)
class TaskManifest:
    """A task instance's manifest and the URI it was read from.

    :param uri: The manifest's URI (``<task instance folder>/manifest.json``).
    :param manifest: Its content.
    """

    uri: str
    manifest: Manifest

    @property
    def folder(self) -> str:
        """The task instance's output folder: the manifest's."""
        return self.uri.rpartition("/")[0]

    @property
    def images(self) -> dict[str, ImageRecord]:
        """The stored images the manifest lists directly in :attr:`folder`, by name."""
        images = {}
        for image in self.manifest.images:
            folder, _, name = (image.uri or "").rpartition("/")
            if folder == self.folder and name not in ("", ".", ".."):
                images[name] = image
        return images


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


def load_task_manifest(session: Session, task: TaskInstanceId) -> TaskManifest | None:
    """The task instance's manifest, read through ObjectStoragePath (and so its Airflow connection), or
    None when it has none: no XCom ``manifest``, or no file there any more.

    :param session: A session of Airflow's metadata database.
    :param task: The task instance.
    """
    uri = find_manifest_uri(session, task)
    if uri is None:
        return None
    try:
        data = ObjectStoragePath(uri).read_bytes()
    except FileNotFoundError:
        return None
    return TaskManifest(uri, Manifest.model_validate_json(data))


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
