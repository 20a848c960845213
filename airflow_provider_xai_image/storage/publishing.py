"""Whole-or-nothing publishing to object storage, retrying transient storage errors."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import tempfile
import uuid

import tenacity
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook
from airflow.sdk import ObjectStoragePath
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_xai_image.exceptions import XaiStorageConfigError, XaiStorageError
from airflow_provider_xai_image.storage.layout import RECORDS_DIR

#: How long publishing retries a storage error before the task fails (the image stays spooled).
PUBLISH_RETRY_SECONDS = 60.0
#: A local staging file untouched this long was left by a killed upload.
STAGING_DEAD_SECONDS = 60.0
#: What publishing to a local file system stages beside an object (left behind when a worker is killed).
STAGING_NAME = re.compile(r"^\..+\.partial-[0-9a-f]{32}$")
#: Storage errors a retry cannot fix.
_PERMANENT_STORAGE_ERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


def publish(fs: AbstractFileSystem, path: str, *, local_file: str | None = None, data: bytes | None = None) -> None:
    """
    Make the object at ``path`` of ``fs`` appear whole or not at all, retrying transient storage errors
    with backoff for up to :data:`PUBLISH_RETRY_SECONDS`.

    Object stores (S3, GCS, Azure) only show an object once its upload completed, so the upload
    goes straight to the final key. A local file system would show a half-written file, so the
    bytes go to a hidden sibling first and are renamed into place.
    """
    for attempt in _publish_retrying():
        with attempt:
            _publish_once(fs, path, local_file, data)


def _publish_retrying() -> tenacity.Retrying:
    """Retries of transient storage errors, for up to :data:`PUBLISH_RETRY_SECONDS`."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_not_exception_type(_PERMANENT_STORAGE_ERRORS),
        stop=tenacity.stop_after_delay(PUBLISH_RETRY_SECONDS),
        wait=tenacity.wait_exponential(multiplier=0.5, max=10.0),
        reraise=True,
    )


def _publish_once(fs: AbstractFileSystem, path: str, local_file: str | None, data: bytes | None) -> None:
    staging = path
    if isinstance(fs, LocalFileSystem):
        folder, name = posixpath.split(path)
        fs.makedirs(folder, exist_ok=True)
        staging = f"{folder}/.{name}.partial-{uuid.uuid4().hex}"
    try:
        if local_file is not None:
            fs.put_file(local_file, staging)
        else:
            fs.pipe_file(staging, data or b"")
        if staging != path:
            os.replace(staging, path)
    finally:
        if staging != path and os.path.exists(staging):
            os.remove(staging)


def copy_whole(source: ObjectStoragePath, target: ObjectStoragePath, sha256: str | None) -> bool:
    """
    Copy the object at ``source`` to ``target`` so that it appears whole or not at all; return False
    when ``target`` holds it already (nothing copied), True when copied.

    Within one object store the copy is server-side (an object shows only once its copy completed);
    a local file goes through :func:`publish`, and an object of another store is read into a local
    temporary file first.

    :param source: The object to copy.
    :param target: Where it goes.
    :param sha256: The source's digest: an existing target with another digest is not overwritten.
    """
    if target.exists():
        if sha256 is None or _sha256(target) == sha256:
            return False
        raise XaiStorageError(f"{target} exists and holds other bytes than {source}; it was not overwritten.")
    if source.samestore(target) and not isinstance(target.fs, LocalFileSystem):
        for attempt in _publish_retrying():
            with attempt:
                target.fs.copy(source.path, target.path)
    elif isinstance(source.fs, LocalFileSystem):
        publish(target.fs, target.path, local_file=source.path)
    else:
        with tempfile.TemporaryDirectory() as spool:
            local_file = os.path.join(spool, source.name)
            source.fs.get_file(source.path, local_file)
            publish(target.fs, target.path, local_file=local_file)
    return True


def _sha256(path: ObjectStoragePath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_output_location(folder: ObjectStoragePath, parameter: str = "output_uri") -> None:
    """Before anything is paid for: the storage connection exists, and the folder takes (and gives back)
    a small probe object. A missing connection would silently fall back to ambient credentials."""
    conn_id = getattr(folder, "conn_id", None)
    if conn_id:
        try:
            BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            raise XaiStorageConfigError(
                f"{parameter}: the storage connection {conn_id!r} named in {folder} does not exist; "
                "no request was sent."
            ) from None
    probe = f"{folder.path.rstrip('/')}/{RECORDS_DIR}/.probe-{uuid.uuid4().hex}"
    try:
        _publish_once(folder.fs, probe, None, b"probe")
        folder.fs.rm_file(probe)
    except Exception as error:
        raise XaiStorageConfigError(
            f"{parameter}: cannot write to {folder} ({type(error).__name__}: {error}); no request was sent."
        ) from None
