"""The image store of one task instance: its images, records and manifest, through a local spool.

Names and layout are :mod:`~airflow_provider_xai_image.storage.layout`'s. A stored image proves
what was paid for even when a crash lost its record: it is then recovered from storage, with size,
type and sha256 read back. Records add what a name cannot carry (revised prompt, model, cost,
moderation, errors); they are saved a few requests at a time and always when a try ends, and kept in
a :class:`~airflow_provider_xai_image.ledger.record_ledger.RecordLedger` on local disk from which ``manifest.json``
is streamed at the end: the task holds nothing per image.

Every image goes through a private spool folder on local disk first (one folder per task instance,
see :mod:`~airflow_provider_xai_image.storage.spool`), and is verified whole there before it is published. A
billed image stays in the spool until it is stored: publishing retries transient storage errors for up
to a minute, and a later try on the same machine publishes the whole images left in the spool before
asking xAI for anything. The spool folder is removed once empty, wherever it was made (worker or
triggerer).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import IO, TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_xai_image.api.images import GeneratedImage, ImageGenerationResult
from airflow_provider_xai_image.exceptions import (
    XaiApiError,
    XaiImageError,
    XaiStorageError,
)
from airflow_provider_xai_image.hooks.redaction import cap_error_text
from airflow_provider_xai_image.ledger.manifest import ManifestTotals, write_manifest
from airflow_provider_xai_image.ledger.progress import Progress
from airflow_provider_xai_image.ledger.record_ledger import RecordLedger
from airflow_provider_xai_image.ledger.records import ImageRecord, RequestRecord, TaskInstanceId
from airflow_provider_xai_image.storage.image_checks import ImageWriter, VerifiedImage, verify_stream
from airflow_provider_xai_image.storage.layout import IMAGE_NAME, MANIFEST_NAME, RECORDS_DIR, image_stem
from airflow_provider_xai_image.storage.publishing import (
    STAGING_DEAD_SECONDS,
    STAGING_NAME,
    check_output_location,
    publish,
)
from airflow_provider_xai_image.storage.spool import Spool
from airflow_provider_xai_image.storage.stored_records import read_saved_records, recover_unrecorded_images

if TYPE_CHECKING:
    from airflow_provider_xai_image.hooks.xai import XaiHook

#: Records are saved once this many requests are unsaved, or the oldest is this many seconds old.
RECORDS_PER_OBJECT = 16
RECORDS_MAX_AGE_SECONDS = 2.0


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
            spooled = local_file is not None and IMAGE_NAME.match(name)
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
        match = IMAGE_NAME.match(entry.name)
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
                    if STAGING_NAME.match(entry.name) and entry.stat(follow_symlinks=False).st_mtime < dead_before:
                        os.remove(entry.path)

    # -- storing -------------------------------------------------------------------------------------

    def store_result(
        self,
        prompt_index: int,
        prompt: str | None,
        result: ImageGenerationResult,
        fingerprint: str,
        first_image_index: int = 0,
        possibly_billed_usd_ticks: int = 0,
    ) -> RequestRecord:
        """Store every image of one response (numbered from ``first_image_index``) and record it, with what
        earlier sends of the request may have been billed (``possibly_billed_usd_ticks``).

        An image that cannot be had whole (cut, expired, not an image) is recorded as failed, never
        published; a storage failure raises :class:`XaiStorageError` with the image kept in the spool.
        """
        request = RequestRecord(prompt_index=prompt_index, prompt=prompt, model=result.model, fingerprint=fingerprint)
        share = result.cost_usd_ticks // max(1, len(result.images))
        images = [
            self._store_image(request, first_image_index + offset, image, share)
            for offset, image in enumerate(result.images)
        ]
        error = result.error or _failed_images(images)
        record = request.model_copy(
            update={
                "cost_usd_ticks": result.cost_usd_ticks,
                "possibly_billed_usd_ticks": possibly_billed_usd_ticks,
                "images": images,
                "error": error,
            }
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

    def _store_image(self, request: RequestRecord, image_index: int, image: GeneratedImage, cost: int) -> ImageRecord:
        """Store one image of ``request``'s answer, or record why not.

        :param request: The request's record, its images not yet stored.
        :param image_index: The image's index among the prompt's images.
        :param image: The image as xAI answered it.
        :param cost: Its share of the request's cost.
        """
        prompt_index = request.prompt_index
        record = ImageRecord(
            uri=None,
            prompt_index=prompt_index,
            image_index=image_index,
            prompt=request.prompt,
            revised_prompt=image.revised_prompt,
            model=request.model,
            mime_type=image.mime_type,
            cost_usd_ticks=cost,
        )
        if image.filtered:
            return record.model_copy(update={"moderation": "filtered"})
        stem = image_stem(prompt_index, image_index, request.fingerprint or "")
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
        warn = lambda *args: self.hook.log.warning(*args)  # noqa: E731  (no hook needed when nothing is wrong)
        recovered = list(recover_unrecorded_images(self.folder, self.ledger, prompts, warn))
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
        self._records_objects_read += read_saved_records(folder, self.ledger, self._records_objects_read)

    def write_manifest(
        self, parameters: dict[str, Any], elapsed_seconds: float, task_instance: TaskInstanceId
    ) -> tuple[str, ManifestTotals]:
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
                totals = write_manifest(
                    self.ledger,
                    sink,
                    task_instance=task_instance,
                    elapsed_seconds=elapsed_seconds,
                    parameters=parameters,
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
