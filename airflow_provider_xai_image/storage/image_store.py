"""Where images go: deterministic names, a local spool, whole-or-nothing publishing with retries.

Layout under ``output_uri`` for one task instance::

    <output_uri>/<run_id>/<task_id>[/map-<map_index>]/p00000-i00-<fingerprint>.jpg   one image
                                                     /_records/p00000-<id>.json   records of some requests
                                                     /manifest.json               written last

(``run_id`` and ``task_id`` as :func:`safe_segment` writes them.) An image's name says which prompt
and image it is and which request made it (the request's fingerprint), so a stored image proves
what was paid for even when a crash lost its record: it is then recovered from storage, with size,
type and sha256 read back. Records add what a name cannot carry (revised prompt, model, cost,
moderation, errors); they are saved a few requests at a time and always when a try ends, and kept in
a :class:`~airflow_provider_xai_image.ledger.records.RecordLedger` on local disk from which ``manifest.json``
is streamed at the end: the task holds nothing per image.

Every image goes through a private spool folder on local disk first (one folder per task instance,
see :mod:`~airflow_provider_xai_image.storage.spool`), and is verified whole there before it is published. A
billed image stays in the spool until it is stored: publishing retries transient storage errors for up
to a minute, and a later try on the same machine publishes the whole images left in the spool before
asking xAI for anything. The spool folder is removed once empty, wherever it was made (worker or
triggerer).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from typing import IO, TYPE_CHECKING, Any

import tenacity
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook
from airflow.sdk import ObjectStoragePath
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_xai_image.api.images import GeneratedImage, ImageGenerationResult
from airflow_provider_xai_image.engine.concurrency import map_concurrently
from airflow_provider_xai_image.exceptions import (
    XaiApiError,
    XaiImageError,
    XaiStorageConfigError,
    XaiStorageError,
)
from airflow_provider_xai_image.hooks.redaction import cap_error_text
from airflow_provider_xai_image.ledger.records import (
    FINGERPRINT_CHARS,
    ImageRecord,
    Progress,
    RecordLedger,
    RequestRecord,
    TaskInstanceId,
)
from airflow_provider_xai_image.storage.image_checks import IMAGE_EXTENSIONS, ImageWriter, VerifiedImage, verify_stream
from airflow_provider_xai_image.storage.spool import Spool

if TYPE_CHECKING:
    from airflow_provider_xai_image.hooks.xai import XaiHook

MANIFEST_NAME = "manifest.json"
RECORDS_DIR = "_records"
#: Records are saved once this many requests are unsaved, or the oldest is this many seconds old.
RECORDS_PER_OBJECT = 16
RECORDS_MAX_AGE_SECONDS = 2.0
#: Records objects read at once when a try resumes (or a batch job's shares are assembled).
RECORDS_READ_CONCURRENCY = 16
#: Bits of a record's place within its object, in its merge order.
_PLACE_BITS = 20
#: How long publishing retries a storage error before the task fails (the image stays spooled).
PUBLISH_RETRY_SECONDS = 60.0
#: A local staging file untouched this long was left by a killed upload.
STAGING_DEAD_SECONDS = 60.0
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")
_IMAGE_NAME = re.compile(
    rf"^p(?P<prompt>\d{{5}})-i(?P<image>\d{{2}})-(?P<fingerprint>[0-9a-f]{{{FINGERPRINT_CHARS}}})"
    rf"\.(?P<extension>{'|'.join(IMAGE_EXTENSIONS)})$"
)
#: What publishing to a local file system stages beside an object (left behind when a worker is killed).
_STAGING_NAME = re.compile(r"^\..+\.partial-[0-9a-f]{32}$")
#: Storage errors a retry cannot fix.
_PERMANENT_STORAGE_ERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


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


class ImageStore:
    """Stores one task instance's images, records and manifest under ``folder``, through its spool.

    Use it as a context manager (or call :meth:`save_records`) so records are saved when work ends.
    :meth:`load_records` comes first (it opens the ledger new records go to), :meth:`write_manifest`
    and :meth:`close` last.

    :param folder: The task instance's folder (see :func:`task_output_path`).
    :param hook: Downloads temporary image URLs.
    """

    def __init__(self, folder: ObjectStoragePath, hook: XaiHook) -> None:
        self.folder = folder
        self.hook = hook
        # Names are joined as strings: building a path object per image costs more than its upload's bookkeeping.
        self._fs = folder.fs
        self._path = folder.path.rstrip("/")
        self._uri = str(folder).rstrip("/")
        #: The task instance's spool folder on this machine.
        self.spool_folder = Spool(self._uri)
        self.spool = self.spool_folder.path
        self._unsaved: list[RequestRecord] = []
        self._ledger: RecordLedger | None = None
        self._records_objects_read = 0
        self._unsaved_since = time.monotonic()
        self._lock = threading.Lock()

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.save_records()
        finally:
            self.remove_spool_if_empty()

    def remove_spool_if_empty(self) -> None:
        """Remove the spool folder when nothing waits in it (a billed image not stored yet keeps it)."""
        self.spool_folder.remove_if_empty()

    def _publish(self, name: str, *, local_file: str | None = None, data: bytes | None = None) -> str:
        """Publish ``name`` (relative to the folder); return its URI. The error names the upload."""
        uri = f"{self._uri}/{name}"
        try:
            publish(self._fs, f"{self._path}/{name}", local_file=local_file, data=data)
        except Exception as error:
            spooled = local_file is not None and _IMAGE_NAME.match(name)
            kept = f"; the image stays in the spool {local_file} for the next try" if spooled else ""
            raise XaiStorageError(f"Upload of {uri} failed: {type(error).__name__}: {error}{kept}") from error
        return uri

    # -- before the first paid request ------------------------------------------------------------

    def prepare(self) -> None:
        """Check the output location, then publish what an earlier try left in the spool: only regular
        files that are whole images under an image name (billed images whose upload failed). Anything else
        there (a download cut by a kill, a link, a file that is no whole image) is removed unpublished, and
        so are staging files a killed upload left in a local output folder.

        :raises XaiStorageConfigError: the output location cannot be used, or the spool is not private.
        """
        check_output_location(self.folder)
        self._remove_dead_staging_files()
        self.spool_folder.make()  # before anything is paid for: a spool that is not private is refused now
        with os.scandir(self.spool) as scan:
            leftovers = sorted(scan, key=lambda entry: entry.name)
        for entry in leftovers:
            if self._is_whole_spooled_image(entry):
                self._publish(entry.name, local_file=entry.path)
                self.hook.log.info("Published %s, spooled by an earlier try", entry.name)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
        self.remove_spool_if_empty()

    def _is_whole_spooled_image(self, entry: os.DirEntry[str]) -> bool:
        match = _IMAGE_NAME.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            self.hook.log.info("Removing %s from the spool: not an image an earlier try stored", entry.name)
            return False
        try:
            spooled = os.fdopen(os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
            with spooled as stream, open(os.devnull, "wb") as sink:
                image = verify_stream(stream, sink, f"spooled {entry.name}")
            if image.image_type.extension != match["extension"]:
                raise XaiImageError(f"spooled {entry.name} is a {image.image_type.extension} image")
        except (OSError, XaiImageError) as error:
            self.hook.log.warning("Removing %s from the spool unpublished: %s", entry.name, error)
            return False
        return True

    def _remove_dead_staging_files(self) -> None:
        """Remove what a killed upload staged in a local output folder (untouched for a while: a live
        upload of another run writes to its own)."""
        if not isinstance(self._fs, LocalFileSystem):
            return
        dead_before = time.time() - STAGING_DEAD_SECONDS
        for folder in (self._path, f"{self._path}/{RECORDS_DIR}"):
            with suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as scan:
                for entry in scan:
                    if _STAGING_NAME.match(entry.name) and entry.stat(follow_symlinks=False).st_mtime < dead_before:
                        os.remove(entry.path)

    # -- storing -------------------------------------------------------------------------------------

    def store_result(
        self,
        prompt_index: int,
        prompt: str | None,
        result: ImageGenerationResult,
        fingerprint: str,
        first_image_index: int = 0,
    ) -> RequestRecord:
        """Store every image of one response (numbered from ``first_image_index``) and record it.

        An image that cannot be had whole (cut, expired, not an image) is recorded as failed, never
        published; a storage failure raises :class:`XaiStorageError` with the image kept in the spool.
        """
        share = result.cost_usd_ticks // max(1, len(result.images))
        images = [
            self._store_image(prompt_index, first_image_index + offset, prompt, result.model, image, share, fingerprint)
            for offset, image in enumerate(result.images)
        ]
        record = RequestRecord(
            prompt_index=prompt_index,
            prompt=prompt,
            model=result.model,
            fingerprint=fingerprint,
            cost_usd_ticks=result.cost_usd_ticks,
            images=images,
            error=result.error or _failed_images(images),
        )
        self.add_record(record)
        return record

    @property
    def ledger(self) -> RecordLedger:
        """The task instance's records (opened by :meth:`load_records`)."""
        if self._ledger is None:
            raise RuntimeError("ImageStore.load_records() must come before records are added or read")
        return self._ledger

    def add_record(self, record: RequestRecord) -> None:
        """Keep a record in the ledger and queue it for saving; save the queue once it is long or old enough.

        :param record: What one request (or batch result) produced.
        """
        self.ledger.add(record)
        with self._lock:
            if not self._unsaved:
                self._unsaved_since = time.monotonic()
            self._unsaved.append(record)
            due = (
                len(self._unsaved) >= RECORDS_PER_OBJECT
                or time.monotonic() - self._unsaved_since >= RECORDS_MAX_AGE_SECONDS
            )
        if due:
            self.save_records()

    def save_records(self) -> None:
        """Save every queued record in one object (put back in the queue when saving fails)."""
        with self._lock:
            records, self._unsaved = self._unsaved, []
        if not records:
            return
        first = min(record.prompt_index for record in records)
        data = json.dumps([record.model_dump(mode="json") for record in records]).encode()
        try:
            self._publish(f"{RECORDS_DIR}/p{first:05d}-{uuid.uuid4().hex[:12]}.json", data=data)
        except XaiStorageError:
            with self._lock:
                self._unsaved[:0] = records
            raise

    def _store_image(
        self,
        prompt_index: int,
        image_index: int,
        prompt: str | None,
        model: str,
        image: GeneratedImage,
        cost: int,
        fingerprint: str,
    ) -> ImageRecord:
        record = ImageRecord(
            uri=None,
            prompt_index=prompt_index,
            image_index=image_index,
            prompt=prompt,
            revised_prompt=image.revised_prompt,
            model=model,
            mime_type=image.mime_type,
            cost_usd_ticks=cost,
        )
        if image.filtered:
            return record.model_copy(update={"moderation": "filtered"})
        stem = image_stem(prompt_index, image_index, fingerprint)
        partial_name = f"{stem}.{uuid.uuid4().hex[:8]}.part"
        partial = os.path.join(self.spool, partial_name)
        try:
            with self.spool_folder.create(partial_name) as sink:
                downloaded = self._fetch(image, sink, stem)
        except BaseException as error:
            with suppress(FileNotFoundError):
                os.remove(partial)
            if not isinstance(error, XaiImageError | XaiApiError):
                raise
            self.hook.log.error("Image %d of prompt %d is not stored: %s", image_index, prompt_index, error)
            return record.model_copy(update={"error": cap_error_text(str(error))})
        # The spool name carries the real extension, so object stores guess the Content-Type right.
        name = f"{stem}.{downloaded.image_type.extension}"
        spooled = os.path.join(self.spool, name)
        os.replace(partial, spooled)
        uri = self._publish(name, local_file=spooled)
        os.remove(spooled)
        self.hook.log.info("Stored %s (%d bytes)", uri, downloaded.size)
        return record.model_copy(
            update={
                "uri": uri,
                "mime_type": downloaded.image_type.mime_type,
                "bytes": downloaded.size,
                "sha256": downloaded.sha256,
            }
        )

    def _fetch(self, image: GeneratedImage, spool: IO[bytes], name: str) -> VerifiedImage:
        if image.url:
            return self.hook.download(image.url, spool)
        writer = ImageWriter(spool, f"b64_json image {name}")
        writer.write(image.data or b"")
        return writer.result()

    # -- resuming ------------------------------------------------------------------------------------

    def load_records(
        self, fingerprint_of: Callable[[int], str | None], prompts: Sequence[str | None] | None = None
    ) -> Progress:
        """Open the ledger and read what earlier tries stored into it: their records, plus any stored image
        no record names (recorded now, and saved with the next records); return the progress of the
        current requests.

        :param fingerprint_of: The fingerprint of the current request of a prompt index.
        :param prompts: The task's prompts, to name the prompt of recovered images.
        """
        if self._ledger is not None:
            self._ledger.close()
        self._ledger = RecordLedger(fingerprint_of)
        self.read_records(self.folder)
        recovered = list(self._recover_unrecorded_images(prompts))
        for record in recovered:
            self.add_record(record)
        if recovered:
            self.hook.log.warning(
                "Recovered %d stored image(s) of prompt index(es) %s whose records a crashed try did not "
                "save; their revised prompt and cost are unknown.",
                len(recovered),
                sorted({record.prompt_index for record in recovered}),
            )
        return self._ledger.progress

    def read_records(self, folder: ObjectStoragePath) -> None:
        """Read the records saved under ``folder`` (this store's own, or those of a share of a batch job
        stored by several tasks) into the ledger, a few small objects at a time, concurrently. They are
        merged in the order of their objects' names, then of their place in an object.

        :param folder: A task instance's folder.
        """
        records_dir = folder / RECORDS_DIR
        if not records_dir.exists():
            return
        names = sorted(
            path.name for path in records_dir.iterdir() if path.name.endswith(".json") and not path.name.startswith(".")
        )
        first = self._records_objects_read
        self._records_objects_read += len(names)

        def read(item: tuple[int, str]) -> None:
            number, name = item
            for place, data in enumerate(json.loads((records_dir / name).read_bytes())):
                self.ledger.add(RequestRecord.model_validate(data), seq=(first + number) << _PLACE_BITS | place)

        deque(map_concurrently(read, enumerate(names), RECORDS_READ_CONCURRENCY), maxlen=0)

    def _recover_unrecorded_images(self, prompts: Sequence[str | None] | None) -> Iterator[RequestRecord]:
        if not self.folder.exists():
            return
        for path in self.folder.iterdir():
            match = _IMAGE_NAME.match(path.name)
            if match is None or self.ledger.has_uri(str(path)):
                continue
            prompt_index = int(match["prompt"])
            prompt = prompts[prompt_index] if prompts is not None and prompt_index < len(prompts) else None
            try:
                with path.open("rb") as stream, open(os.devnull, "wb") as sink:
                    image = verify_stream(stream, sink, str(path))
            except XaiImageError as error:
                self.hook.log.warning("Not reusing %s: %s", path, error)
                continue
            yield RequestRecord(
                prompt_index=prompt_index,
                prompt=prompt,
                model="unknown",
                fingerprint=match["fingerprint"],
                recovered=True,
                images=[
                    ImageRecord(
                        uri=str(path),
                        prompt_index=prompt_index,
                        image_index=int(match["image"]),
                        prompt=prompt,
                        model="unknown",
                        mime_type=image.image_type.mime_type,
                        bytes=image.size,
                        sha256=image.sha256,
                    )
                ],
            )

    def write_manifest(
        self, parameters: dict[str, Any], elapsed_seconds: float, task_instance: TaskInstanceId
    ) -> tuple[str, dict[str, Any]]:
        """Save the records still queued, then stream ``manifest.json`` from the ledger into a spool file and
        publish it whole (last); return its URI and totals. The spool folder goes with it.

        :param parameters: The task's parameters, recorded in the manifest.
        :param task_instance: The task instance the manifest belongs to.
        :param elapsed_seconds: The run's duration, for the totals.
        """
        self.save_records()
        spooled_name = f".{MANIFEST_NAME}.{uuid.uuid4().hex}"
        spooled = os.path.join(self.spool, spooled_name)
        try:
            with self.spool_folder.create(spooled_name) as sink:
                totals = self.ledger.write_manifest(
                    sink, task_instance=task_instance, elapsed_seconds=elapsed_seconds, parameters=parameters
                )
            uri = self._publish(MANIFEST_NAME, local_file=spooled)
        finally:
            with suppress(FileNotFoundError):
                os.remove(spooled)
            self.remove_spool_if_empty()
        return uri, totals

    def image_uris(self) -> list[str]:
        """The URIs of the current requests' stored images, in prompt and image order (the XCom value)."""
        return self.ledger.image_uris()

    def close(self) -> None:
        """Close the ledger (its file on local disk goes with it)."""
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


def _failed_images(images: list[ImageRecord]) -> str | None:
    failed = [image for image in images if image.error]
    if not failed:
        return None
    return f"{len(failed)} image(s) not stored: " + "; ".join(f"image {i.image_index}: {i.error}" for i in failed)
