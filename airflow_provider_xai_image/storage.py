"""Where images go: deterministic names, atomic streaming writes, request records, the manifest.

Layout under ``output_uri`` for one task instance::

    <output_uri>/<run_id>/<task_id>[/map-<map_index>]/p00000-i00.jpg   one image (prompt 0, image 0)
                                                     /_records/p00000-<id>.json   records of some requests
                                                     /manifest.json          written last

A retried task must find what earlier tries paid for. An image that exists proves it: its name
says which prompt and image it is. Records add what a name cannot carry (revised prompt, model,
cost, moderation, errors); they are saved a few requests at a time (each extra object costs as much
as an image upload) and always when a try ends, also by an error. Only a hard crash loses the
records of the last few requests: their images are then recovered from storage, with size, type
and sha256 read back, and without revised prompt or cost. No name carries prompt text.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import IO, TYPE_CHECKING, Any, Literal

from airflow.sdk import ObjectStoragePath
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field

from airflow_provider_xai_image.exceptions import XaiContentFilteredError
from airflow_provider_xai_image.image_types import ImageWriter, VerifiedImage, verify_stream
from airflow_provider_xai_image.models import (
    USD_TICKS_PER_USD,
    GeneratedImage,
    ImageGenerationResult,
    ImageRequest,
)

if TYPE_CHECKING:
    from airflow_provider_xai_image.hooks.xai import XaiHook

MANIFEST_NAME = "manifest.json"
RECORDS_DIR = "_records"
#: Records are saved once this many requests are unsaved, or the oldest is this many seconds old.
RECORDS_PER_OBJECT = 16
RECORDS_MAX_AGE_SECONDS = 2.0
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")
_IMAGE_NAME = re.compile(r"^p(?P<prompt>\d{5})-i(?P<image>\d{2})\.[a-z]+$")


def check_moderation(records: Iterable[RequestRecord], on_moderation: str) -> None:
    """With ``on_moderation="fail"``, raise naming every prompt index that had an image filtered."""
    if on_moderation != "fail":
        return
    filtered = sorted(record.prompt_index for record in records if record.filtered)
    if filtered:
        raise XaiContentFilteredError(
            f"xAI's moderation filtered images of prompt index(es) {filtered}; "
            'set on_moderation="skip" to record them in the manifest and go on.'
        )


class ImageRecord(BaseModel):
    """One image slot of the manifest: where it is and how it came to be (or why it is missing)."""

    uri: str | None
    prompt_index: int
    image_index: int
    prompt: str | None
    revised_prompt: str | None = None
    model: str
    mime_type: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    cost_usd_ticks: int = 0
    moderation: Literal["passed", "filtered"] = "passed"


class RequestRecord(BaseModel):
    """What one paid request produced; written once its images are stored."""

    prompt_index: int
    prompt: str | None
    model: str
    cost_usd_ticks: int = 0
    images: list[ImageRecord] = Field(default_factory=list)
    error: str | None = None
    #: Some images were recovered from storage after a crash lost their record.
    recovered: bool = False

    @property
    def filtered(self) -> list[ImageRecord]:
        return [image for image in self.images if image.moderation == "filtered"]


class Manifest(BaseModel):
    """``manifest.json``: every image slot, the totals and the request parameters (no secrets)."""

    images: list[ImageRecord]
    errors: list[dict[str, Any]] = Field(default_factory=list)
    totals: dict[str, Any]
    parameters: dict[str, Any]

    @classmethod
    def from_records(
        cls, records: Iterable[RequestRecord], *, elapsed_seconds: float, parameters: dict[str, Any]
    ) -> Manifest:
        ordered = sorted(records, key=lambda record: record.prompt_index)
        images = [image for record in ordered for image in record.images]
        cost_ticks = sum(record.cost_usd_ticks for record in ordered)
        return cls(
            images=images,
            errors=[
                {"prompt_index": record.prompt_index, "prompt": record.prompt, "error": record.error}
                for record in ordered
                if record.error
            ],
            totals={
                "requests": len(ordered),
                "images": sum(1 for image in images if image.uri),
                "filtered": sum(1 for image in images if image.moderation == "filtered"),
                "failed_requests": sum(1 for record in ordered if record.error),
                "cost_usd_ticks": cost_ticks,
                "cost_usd": cost_ticks / USD_TICKS_PER_USD,
                "elapsed_seconds": round(elapsed_seconds, 3),
            },
            parameters=parameters,
        )

    @property
    def image_uris(self) -> list[str]:
        return [image.uri for image in self.images if image.uri]


def safe_segment(value: str) -> str:
    """A path segment for ``value``: itself when already safe, else cleaned plus a short hash (no collisions)."""
    cleaned = _SAFE_SEGMENT.sub("_", value)
    if cleaned == value:
        return value
    return f"{cleaned}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def task_output_path(output_uri: str, run_id: str, task_id: str, map_index: int | None) -> ObjectStoragePath:
    """The folder of one task instance's images under ``output_uri``."""
    base = ObjectStoragePath(output_uri) / safe_segment(run_id) / safe_segment(task_id)
    if map_index is not None and map_index >= 0:
        base = base / f"map-{map_index}"
    return base


def publish(fs: AbstractFileSystem, path: str, *, local_file: str | None = None, data: bytes | None = None) -> None:
    """
    Make the object at ``path`` of ``fs`` appear whole or not at all.

    Object stores (S3, GCS, Azure) only show an object once its upload completed, so the upload
    goes straight to the final key. A local file system would show a half-written file, so the
    bytes go to a hidden sibling first and are renamed into place.
    """
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


class ImageStore:
    """Stores one task instance's images, records and manifest under ``folder``.

    Use it as a context manager (or call :meth:`save_records`) so records are saved when work ends.

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
        self._unsaved: list[RequestRecord] = []
        self._unsaved_since = time.monotonic()
        self._lock = threading.Lock()

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.save_records()

    def _publish(self, name: str, *, local_file: str | None = None, data: bytes | None = None) -> str:
        """Publish ``name`` (relative to the folder); return its URI."""
        publish(self._fs, f"{self._path}/{name}", local_file=local_file, data=data)
        return f"{self._uri}/{name}"

    def store_result(
        self, prompt_index: int, prompt: str | None, result: ImageGenerationResult, first_image_index: int = 0
    ) -> RequestRecord:
        """Store every image of one response (numbered from ``first_image_index``) and record it."""
        share = result.cost_usd_ticks // max(1, len(result.images))
        images = [
            self._store_image(prompt_index, first_image_index + offset, prompt, result.model, image, share)
            for offset, image in enumerate(result.images)
        ]
        record = RequestRecord(
            prompt_index=prompt_index,
            prompt=prompt,
            model=result.model,
            cost_usd_ticks=result.cost_usd_ticks,
            images=images,
        )
        self.add_record(record)
        return record

    def add_record(self, record: RequestRecord) -> None:
        """Queue a record; save the queue once it is long or old enough."""
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
        """Save every queued record in one object."""
        with self._lock:
            records, self._unsaved = self._unsaved, []
        if records:
            first = min(record.prompt_index for record in records)
            data = json.dumps([record.model_dump(mode="json") for record in records]).encode()
            self._publish(f"{RECORDS_DIR}/p{first:05d}-{uuid.uuid4().hex[:12]}.json", data=data)

    def _store_image(
        self, prompt_index: int, image_index: int, prompt: str | None, model: str, image: GeneratedImage, cost: int
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
        # Spooled on local disk (memory stays flat whatever the image's size); the name gets the image's
        # extension so object stores that guess Content-Type from it get it right.
        spool_path = os.path.join(tempfile.gettempdir(), f"xai-image-{uuid.uuid4().hex}")
        spooled = [spool_path]
        try:
            with open(spool_path, "w+b") as spool:
                downloaded = self._fetch(image, spool)
            extension = downloaded.image_type.extension
            spooled.append(f"{spool_path}.{extension}")
            os.rename(spool_path, spooled[-1])
            uri = self._publish(f"p{prompt_index:05d}-i{image_index:02d}.{extension}", local_file=spooled[-1])
        finally:
            for leftover in spooled:
                with suppress(FileNotFoundError):
                    os.remove(leftover)
        self.hook.log.info(
            "Stored %s (%d bytes); revised prompt: %.80s",
            uri,
            downloaded.size,
            image.revised_prompt or "-",
        )
        return record.model_copy(
            update={
                "uri": uri,
                "mime_type": downloaded.image_type.mime_type,
                "bytes": downloaded.size,
                "sha256": downloaded.sha256,
            }
        )

    def _fetch(self, image: GeneratedImage, spool: IO[bytes]) -> VerifiedImage:
        if image.url:
            return self.hook.download(image.url, spool)
        writer = ImageWriter(spool, "b64_json image")
        writer.write(image.data or b"")
        return writer.result()

    def load_records(self, prompts: Sequence[str | None] | None = None) -> dict[int, RequestRecord]:
        """What earlier tries stored, by prompt index: their records, plus any stored image no record names.

        :param prompts: The task's prompts, to name the prompt of recovered images.
        """
        records: dict[int, RequestRecord] = {}
        records_dir = self.folder / RECORDS_DIR
        if records_dir.exists():
            for path in records_dir.iterdir():
                if path.name.endswith(".json") and not path.name.startswith("."):
                    for item in json.loads(path.read_bytes()):
                        record = RequestRecord.model_validate(item)
                        records[record.prompt_index] = merge_records(records.get(record.prompt_index), record)
        recovered = self._recover_unrecorded_images(records, prompts)
        for record in recovered:
            records[record.prompt_index] = merge_records(records.get(record.prompt_index), record)
        if recovered:
            self.hook.log.warning(
                "Recovered %d stored image(s) of prompt index(es) %s whose records a crashed try did not "
                "save; their revised prompt and cost are unknown.",
                sum(len(record.images) for record in recovered),
                sorted(record.prompt_index for record in recovered),
            )
        return records

    def _recover_unrecorded_images(
        self, records: dict[int, RequestRecord], prompts: Sequence[str | None] | None
    ) -> list[RequestRecord]:
        if not self.folder.exists():
            return []
        recorded = {image.uri for record in records.values() for image in record.images if image.uri}
        found: dict[int, list[ImageRecord]] = {}
        for path in self.folder.iterdir():
            match = _IMAGE_NAME.match(path.name)
            if match is None or str(path) in recorded:
                continue
            prompt_index = int(match["prompt"])
            prompt = prompts[prompt_index] if prompts is not None and prompt_index < len(prompts) else None
            with path.open("rb") as stream, open(os.devnull, "wb") as sink:
                image = verify_stream(stream, sink, str(path))
            found.setdefault(prompt_index, []).append(
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
            )
        return [
            RequestRecord(
                prompt_index=index,
                prompt=images[0].prompt,
                model="unknown",
                images=sorted(images, key=lambda image: image.image_index),
                recovered=True,
            )
            for index, images in found.items()
        ]

    def write_manifest(self, manifest: Manifest) -> str:
        """Write ``manifest.json`` (atomically, last); return its URI."""
        return self._publish(MANIFEST_NAME, data=manifest.model_dump_json().encode())


def merge_records(earlier: RequestRecord | None, later: RequestRecord) -> RequestRecord:
    """One record of a prompt from two (a recovered part and a part generated after it)."""
    if earlier is None:
        return later
    images = sorted([*earlier.images, *later.images], key=lambda image: image.image_index)
    return later.model_copy(
        update={
            "images": images,
            "cost_usd_ticks": earlier.cost_usd_ticks + later.cost_usd_ticks,
            "recovered": earlier.recovered or later.recovered,
            "model": later.model if later.model != "unknown" else earlier.model,
        }
    )


def remaining_requests(
    requests: Sequence[ImageRequest], records: dict[int, RequestRecord]
) -> dict[int, tuple[ImageRequest, int]]:
    """What is left to pay for, by prompt index: the request and the index of its first image.

    A prompt with a record is done, unless images of it were recovered after a crash and fewer than
    ``n``: then only the missing images are requested, numbered after the recovered ones.
    """
    remaining = {}
    for index, request in enumerate(requests):
        record = records.get(index)
        if record is None:
            remaining[index] = (request, 0)
        elif len(record.images) < request.n:
            missing = request.n - len(record.images)
            first = max(image.image_index for image in record.images) + 1
            remaining[index] = (request.model_copy(update={"n": missing}), first)
    return remaining
