"""``manifest.json``: its format (:class:`Manifest`, what readers validate against) and its streaming writer."""

from __future__ import annotations

import shutil
import tempfile
from typing import IO, Any

from pydantic import BaseModel, Field
from pydantic_core import to_json

from airflow_provider_xai_image.api.prices import USD_TICKS_PER_USD
from airflow_provider_xai_image.ledger.record_ledger import RecordLedger
from airflow_provider_xai_image.ledger.records import ImageRecord, TaskInstanceId


class Manifest(BaseModel):
    """The format of ``manifest.json`` (written by :meth:`RecordLedger.write_manifest`): the task
    instance that wrote it, every image, the errors, what was superseded, the totals and the parameters.
    Manifests written before the task instance was recorded have none."""

    task_instance: TaskInstanceId | None = None
    images: list[ImageRecord]
    errors: list[dict[str, Any]] = Field(default_factory=list)
    superseded: list[dict[str, Any]] = Field(default_factory=list)
    totals: dict[str, Any]
    parameters: dict[str, Any]


class _JsonArray:
    """The items of a JSON array, written one at a time (the brackets are the caller's)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.count = 0

    def add(self, item: bytes) -> None:
        self.sink.write(b"," + item if self.count else item)
        self.count += 1


def write_manifest(
    ledger: RecordLedger,
    sink: IO[bytes],
    *,
    task_instance: TaskInstanceId,
    elapsed_seconds: float,
    parameters: dict[str, Any],
) -> dict[str, Any]:
    """Stream ``manifest.json`` (the format of :class:`Manifest`) from ``ledger`` into ``sink``; return its totals.

    The task instance comes first (a reader can check whose manifest it is before the images);
    images and errors of the current requests come in prompt order, then what was superseded; the
    totals are counted on the way. Errors and superseded entries wait in temporary files, so nothing
    is held per image.

    :param ledger: The task instance's records.
    :param sink: A binary file.
    :param task_instance: The task instance writing it.
    :param elapsed_seconds: The run's duration, for the totals.
    :param parameters: The task's parameters, recorded as they are.
    """
    totals = dict.fromkeys(("requests", "images", "filtered", "failed_requests", "cost", "possibly_billed"), 0)
    with tempfile.TemporaryFile() as errors_file, tempfile.TemporaryFile() as superseded_file:
        images, errors, superseded = _JsonArray(sink), _JsonArray(errors_file), _JsonArray(superseded_file)
        sink.write(b'{"task_instance":' + task_instance.model_dump_json().encode() + b',"images":[')
        for group in ledger.groups():
            if not ledger.is_current(group):
                uris = [image.uri for image in group.images if image.uri]
                if uris:
                    entry = {"prompt_index": group.prompt_index, "fingerprint": group.fingerprint, "uris": uris}
                    superseded.add(to_json(entry))
                continue
            totals["requests"] += 1
            totals["cost"] += group.cost_usd_ticks
            totals["possibly_billed"] += group.possibly_billed_usd_ticks
            for image in group.done_images:
                images.add(image.model_dump_json().encode())
                totals["images"] += image.uri is not None
                totals["filtered"] += image.moderation == "filtered"
            if group.error:
                totals["failed_requests"] += 1
                error = {"prompt_index": group.prompt_index, "prompt": group.prompt, "error": group.error}
                errors.add(to_json(error))
        for name, part in ((b"errors", errors_file), (b"superseded", superseded_file)):
            sink.write(b'],"' + name + b'":[')
            part.seek(0)
            shutil.copyfileobj(part, sink)
    manifest_totals = {
        "requests": totals["requests"],
        "images": totals["images"],
        "filtered": totals["filtered"],
        "failed_requests": totals["failed_requests"],
        "cost_usd_ticks": totals["cost"],
        "cost_usd": totals["cost"] / USD_TICKS_PER_USD,
        "possibly_billed_usd_ticks": totals["possibly_billed"],
        "possibly_billed_usd": totals["possibly_billed"] / USD_TICKS_PER_USD,
        "elapsed_seconds": round(elapsed_seconds, 3),
    }
    sink.write(b'],"totals":' + to_json(manifest_totals) + b',"parameters":' + to_json(parameters) + b"}")
    return manifest_totals
