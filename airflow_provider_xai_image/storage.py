"""Where images go: deterministic names, atomic streaming writes, per-request records, the manifest.

Layout under ``output_uri`` for one task instance::

    <output_uri>/<run_id>/<task_id>[/map-<map_index>]/p00000-i00.jpg   one image (prompt 0, image 0)
                                                     /_records/p00000.json   what request 0 produced
                                                     /manifest.json          written last

A record is written right after the images of one request are stored, so a retried task finds
what it already paid for and generates only the rest. No name carries prompt text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any, Literal

from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, Field

from airflow_provider_xai_image.exceptions import XaiContentFilteredError
from airflow_provider_xai_image.image_types import ImageWriter, VerifiedImage
from airflow_provider_xai_image.models import USD_TICKS_PER_USD, GeneratedImage, ImageGenerationResult

if TYPE_CHECKING:
    from airflow_provider_xai_image.hooks.xai import XaiHook

MANIFEST_NAME = "manifest.json"
RECORDS_DIR = "_records"
_SAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._-]")


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


def publish(final: ObjectStoragePath, *, local_file: str | None = None, data: bytes | None = None) -> None:
    """
    Make ``final`` appear whole or not at all.

    Object stores (S3, GCS, Azure) only show an object once its upload completed, so the upload
    goes straight to the final key. A local file system would show a half-written file, so the
    bytes go to a hidden sibling first and are renamed into place.
    """
    fs = final.fs
    target = final.path
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(final.parent.path, exist_ok=True)
        staging = f"{final.parent.path}/.{final.name}.partial-{uuid.uuid4().hex}"
    else:
        staging = target
    try:
        if local_file is not None:
            fs.put_file(local_file, staging)
        else:
            fs.pipe_file(staging, data or b"")
        if staging != target:
            os.replace(staging, target)
    finally:
        if staging != target and os.path.exists(staging):
            os.remove(staging)


class ImageStore:
    """Stores one task instance's images, records and manifest under ``folder``.

    :param folder: The task instance's folder (see :func:`task_output_path`).
    :param hook: Downloads temporary image URLs.
    """

    def __init__(self, folder: ObjectStoragePath, hook: XaiHook) -> None:
        self.folder = folder
        self.hook = hook

    @property
    def manifest_path(self) -> ObjectStoragePath:
        return self.folder / MANIFEST_NAME

    def image_path(self, prompt_index: int, image_index: int, extension: str) -> ObjectStoragePath:
        return self.folder / f"p{prompt_index:05d}-i{image_index:02d}.{extension}"

    def record_path(self, prompt_index: int) -> ObjectStoragePath:
        return self.folder / RECORDS_DIR / f"p{prompt_index:05d}.json"

    def store_result(self, prompt_index: int, prompt: str | None, result: ImageGenerationResult) -> RequestRecord:
        """Store every image of one response, then its record; return the record."""
        share = result.cost_usd_ticks // max(1, len(result.images))
        images = [
            self._store_image(prompt_index, image_index, prompt, result.model, image, share)
            for image_index, image in enumerate(result.images)
        ]
        record = RequestRecord(
            prompt_index=prompt_index,
            prompt=prompt,
            model=result.model,
            cost_usd_ticks=result.cost_usd_ticks,
            images=images,
        )
        self.write_record(record)
        return record

    def write_record(self, record: RequestRecord) -> None:
        publish(self.record_path(record.prompt_index), data=record.model_dump_json().encode())

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
        with tempfile.NamedTemporaryFile(prefix="xai-image-") as spool:
            downloaded = self._fetch(image, spool)
            spool.flush()
            final = self.image_path(prompt_index, image_index, downloaded.image_type.extension)
            publish(final, local_file=spool.name)
        self.hook.log.info(
            "Stored %s (%d bytes); revised prompt: %.80s",
            final,
            downloaded.size,
            image.revised_prompt or "-",
        )
        return record.model_copy(
            update={
                "uri": str(final),
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

    def load_records(self) -> dict[int, RequestRecord]:
        """Records a previous try left, by prompt index (empty on a first try)."""
        records_dir = self.folder / RECORDS_DIR
        if not records_dir.exists():
            return {}
        records = {}
        for path in records_dir.iterdir():
            if path.name.endswith(".json") and not path.name.startswith("."):
                record = RequestRecord.model_validate_json(path.read_bytes())
                records[record.prompt_index] = record
        return records

    def write_manifest(self, manifest: Manifest) -> str:
        """Write ``manifest.json`` (atomically, last); return its URI."""
        publish(self.manifest_path, data=json.dumps(manifest.model_dump(), indent=2).encode())
        return str(self.manifest_path)
