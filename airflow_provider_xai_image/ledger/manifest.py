"""``manifest.json``: its format (:class:`Manifest`, what readers validate against) and its streaming writer,
which takes every key it writes from that format."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from typing import IO, Any

from pydantic import BaseModel, computed_field
from pydantic_core import to_json

from airflow_provider_xai_image.api.prices import USD_TICKS_PER_USD
from airflow_provider_xai_image.ledger.record_ledger import RecordLedger
from airflow_provider_xai_image.ledger.records import ImageRecord, TaskInstanceId


class FailedRequest(BaseModel):
    """A current request that left images missing (an ``errors`` entry): its prompt and why."""

    prompt_index: int
    prompt: str | None = None
    error: str


class SupersededImages(BaseModel):
    """Images stored for an earlier request of a prompt whose request changed since (a ``superseded``
    entry): kept in storage, no longer listed among the images."""

    prompt_index: int
    fingerprint: str | None = None
    uris: list[str]


class ManifestTotals(BaseModel):
    """What the current requests came to (``totals``): counts, what xAI reported they cost, what may have
    been billed besides (ambiguous sends), and the run's duration."""

    requests: int = 0
    images: int = 0
    filtered: int = 0
    failed_requests: int = 0
    cost_usd_ticks: int = 0
    possibly_billed_usd_ticks: int = 0
    elapsed_seconds: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> float:
        return self.cost_usd_ticks / USD_TICKS_PER_USD

    @computed_field  # type: ignore[prop-decorator]
    @property
    def possibly_billed_usd(self) -> float:
        return self.possibly_billed_usd_ticks / USD_TICKS_PER_USD


class Manifest(BaseModel):
    """The format of ``manifest.json`` (written by :func:`write_manifest`), its keys in the order written:
    the task instance that wrote it (a reader checks whose it is before the images), every image, the
    errors, what was superseded, the totals and the parameters. Manifests written before the task
    instance was recorded have none."""

    task_instance: TaskInstanceId | None = None
    images: list[ImageRecord]
    errors: list[FailedRequest] = []
    superseded: list[SupersededImages] = []
    totals: ManifestTotals
    parameters: dict[str, Any]


class _JsonArray:
    """A JSON array written one item at a time."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.count = 0

    def add(self, item: bytes) -> None:
        self.sink.write(b"," + item if self.count else b"[" + item)
        self.count += 1

    def close(self) -> None:
        self.sink.write(b"]" if self.count else b"[]")


def write_manifest(
    ledger: RecordLedger,
    sink: IO[bytes],
    *,
    task_instance: TaskInstanceId,
    elapsed_seconds: float,
    parameters: dict[str, Any],
) -> ManifestTotals:
    """Stream ``manifest.json`` (a :class:`Manifest`) from ``ledger`` into ``sink``; return its totals.

    Images and errors of the current requests come in prompt order, then what was superseded; the totals
    are counted on the way. Errors and superseded entries wait in temporary files, so nothing is held
    per image.

    :param ledger: The task instance's records.
    :param sink: A binary file.
    :param task_instance: The task instance writing it.
    :param elapsed_seconds: The run's duration, for the totals.
    :param parameters: The task's parameters, recorded as they are.
    """
    totals = ManifestTotals(elapsed_seconds=round(elapsed_seconds, 3))
    with tempfile.TemporaryFile() as errors_file, tempfile.TemporaryFile() as superseded_file:
        errors, superseded = _JsonArray(errors_file), _JsonArray(superseded_file)
        writers: dict[str, Callable[[], object]] = {
            "task_instance": lambda: sink.write(task_instance.model_dump_json().encode()),
            "images": lambda: _write_images(ledger, _JsonArray(sink), errors, superseded, totals),
            "errors": lambda: _copy_array(errors, sink),
            "superseded": lambda: _copy_array(superseded, sink),
            # Counted while the images were written: they come first.
            "totals": lambda: sink.write(totals.model_dump_json().encode()),
            "parameters": lambda: sink.write(to_json(parameters)),
        }
        for position, name in enumerate(Manifest.model_fields):
            sink.write((b"{" if position == 0 else b",") + to_json(name) + b":")
            writers[name]()
        sink.write(b"}")
    return totals


def _write_images(
    ledger: RecordLedger,
    images: _JsonArray,
    errors: _JsonArray,
    superseded: _JsonArray,
    totals: ManifestTotals,
) -> None:
    for group in ledger.groups():
        if not ledger.is_current(group):
            if uris := [image.uri for image in group.images if image.uri]:
                entry = SupersededImages(prompt_index=group.prompt_index, fingerprint=group.fingerprint, uris=uris)
                superseded.add(entry.model_dump_json().encode())
            continue
        totals.requests += 1
        totals.cost_usd_ticks += group.cost_usd_ticks
        totals.possibly_billed_usd_ticks += group.possibly_billed_usd_ticks
        for image in group.done_images:
            images.add(image.model_dump_json().encode())
            totals.images += image.uri is not None
            totals.filtered += image.moderation == "filtered"
        if group.error:
            totals.failed_requests += 1
            failed = FailedRequest(prompt_index=group.prompt_index, prompt=group.prompt, error=group.error)
            errors.add(failed.model_dump_json().encode())
    images.close()


def _copy_array(array: _JsonArray, sink: IO[bytes]) -> None:
    array.close()
    array.sink.seek(0)
    shutil.copyfileobj(array.sink, sink)
