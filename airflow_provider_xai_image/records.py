"""What a task paid for and stored: request and image records, resume, and the manifest.

A record is written once a request's images are stored (or failed). Images are keyed by
``(prompt_index, image_index)`` within a request fingerprint, so a second run of the same work (a
retried task, a trigger run again) can neither duplicate an image nor lose one: merging records
keeps one entry per image. The fingerprint is a digest of what was asked (prompt, model, parameters,
source images); a record whose fingerprint differs from the current request is *superseded*: its
images stay where they are, the new request is generated, and the manifest says which replaced which.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from airflow_provider_xai_image.exceptions import XaiContentFilteredError
from airflow_provider_xai_image.models import USD_TICKS_PER_USD, ImageRequest

#: Hex digits of a fingerprint (also part of each image's name).
FINGERPRINT_CHARS = 12
#: Parameters that do not change what an image shows, left out of the fingerprint.
_NOT_FINGERPRINTED = {"n", "response_format", "user"}


def request_fingerprint(request: ImageRequest) -> str:
    """A digest of what ``request`` asks for: prompt, model, parameters and source images (not ``n``)."""
    fields = request.model_dump(mode="json", exclude=_NOT_FINGERPRINTED, exclude_none=True)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:FINGERPRINT_CHARS]


def batch_fingerprint(batch_ids: Sequence[str]) -> str:
    """The fingerprint of every result of a batch job (one or several batches)."""
    return hashlib.sha256(",".join(batch_ids).encode()).hexdigest()[:FINGERPRINT_CHARS]


class ImageRecord(BaseModel):
    """One image slot: where it is and how it came to be, or why it is missing (``error``)."""

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
    error: str | None = None

    @property
    def done(self) -> bool:
        """Stored, or filtered by moderation: nothing more to pay for."""
        return self.uri is not None or self.moderation == "filtered"


class RequestRecord(BaseModel):
    """What one paid request (or one batch result) produced."""

    prompt_index: int
    prompt: str | None
    model: str
    fingerprint: str | None = None
    cost_usd_ticks: int = 0
    #: Estimated cost of requests that failed after possibly reaching xAI (it may have billed them).
    possibly_billed_usd_ticks: int = 0
    images: list[ImageRecord] = Field(default_factory=list)
    error: str | None = None
    #: Some images were recovered from storage after a crash lost their record.
    recovered: bool = False

    @property
    def done_images(self) -> list[ImageRecord]:
        return [image for image in self.images if image.done]

    @property
    def filtered(self) -> list[ImageRecord]:
        return [image for image in self.images if image.moderation == "filtered"]

    @property
    def spent_usd_ticks(self) -> int:
        """Billed, or possibly billed: what a budget counts as spent."""
        return self.cost_usd_ticks + self.possibly_billed_usd_ticks


def merge_records(earlier: RequestRecord | None, later: RequestRecord) -> RequestRecord:
    """One record of a prompt from two: one entry per image index (a done image beats a failed one),
    costs added up, the later error only while no image is done."""
    if earlier is None:
        return later
    images: dict[int, ImageRecord] = {}
    for image in [*earlier.images, *later.images]:
        kept = images.get(image.image_index)
        if kept is None or not kept.done:
            images[image.image_index] = image
    done = any(image.done for image in images.values())
    return later.model_copy(
        update={
            "images": sorted(images.values(), key=lambda image: image.image_index),
            "cost_usd_ticks": earlier.cost_usd_ticks + later.cost_usd_ticks,
            "possibly_billed_usd_ticks": earlier.possibly_billed_usd_ticks + later.possibly_billed_usd_ticks,
            "error": None if done else (later.error or earlier.error),
            "recovered": earlier.recovered or later.recovered,
            "model": later.model if later.model != "unknown" else earlier.model,
        }
    )


class LoadedRecords(NamedTuple):
    """Records an earlier try (or trigger run) left: those of the current requests, and superseded ones."""

    current: dict[int, RequestRecord]
    superseded: list[RequestRecord]


def sort_records(records: Iterable[RequestRecord], fingerprint_of: Callable[[int], str | None]) -> LoadedRecords:
    """Merge ``records`` per prompt and fingerprint; keep as current those matching ``fingerprint_of(index)``."""
    merged: dict[tuple[int, str | None], RequestRecord] = {}
    for record in records:
        key = (record.prompt_index, record.fingerprint)
        merged[key] = merge_records(merged.get(key), record)
    current: dict[int, RequestRecord] = {}
    superseded: list[RequestRecord] = []
    for (index, fingerprint), record in sorted(merged.items(), key=lambda item: (item[0][0], str(item[0][1]))):
        if fingerprint_of(index) == fingerprint:
            current[index] = record
        else:
            superseded.append(record)
    return LoadedRecords(current, superseded)


def remaining_requests(
    requests: Mapping[int, ImageRequest], records: Mapping[int, RequestRecord]
) -> dict[int, tuple[ImageRequest, int]]:
    """What is left to pay for, by prompt index: the request and the index of its first new image.

    A prompt is done when it has ``n`` images stored or filtered. Otherwise only the missing images
    are requested, numbered after every image index already used (failed slots included).
    """
    remaining = {}
    for index, request in requests.items():
        record = records.get(index)
        missing = request.n - (len(record.done_images) if record else 0)
        if missing <= 0:
            continue
        first = max((image.image_index for image in record.images), default=-1) + 1 if record else 0
        remaining[index] = (request if missing == request.n else request.model_copy(update={"n": missing}), first)
    return remaining


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


class Manifest(BaseModel):
    """``manifest.json``: every image, the errors, what was superseded, the totals and the parameters."""

    images: list[ImageRecord]
    errors: list[dict[str, Any]] = Field(default_factory=list)
    superseded: list[dict[str, Any]] = Field(default_factory=list)
    totals: dict[str, Any]
    parameters: dict[str, Any]

    @classmethod
    def from_records(
        cls,
        records: Iterable[RequestRecord],
        *,
        elapsed_seconds: float,
        parameters: dict[str, Any],
        superseded: Iterable[RequestRecord] = (),
    ) -> Manifest:
        ordered = sorted(records, key=lambda record: record.prompt_index)
        images = [image for record in ordered for image in record.done_images]
        cost_ticks = sum(record.cost_usd_ticks for record in ordered)
        possibly_billed = sum(record.possibly_billed_usd_ticks for record in ordered)
        return cls(
            images=images,
            errors=[
                {"prompt_index": record.prompt_index, "prompt": record.prompt, "error": record.error}
                for record in ordered
                if record.error
            ],
            superseded=[
                {
                    "prompt_index": record.prompt_index,
                    "fingerprint": record.fingerprint,
                    "uris": [image.uri for image in record.images if image.uri],
                }
                for record in superseded
                if any(image.uri for image in record.images)
            ],
            totals={
                "requests": len(ordered),
                "images": sum(1 for image in images if image.uri),
                "filtered": sum(1 for image in images if image.moderation == "filtered"),
                "failed_requests": sum(1 for record in ordered if record.error),
                "cost_usd_ticks": cost_ticks,
                "cost_usd": cost_ticks / USD_TICKS_PER_USD,
                "possibly_billed_usd_ticks": possibly_billed,
                "possibly_billed_usd": possibly_billed / USD_TICKS_PER_USD,
                "elapsed_seconds": round(elapsed_seconds, 3),
            },
            parameters=parameters,
        )

    @property
    def image_uris(self) -> list[str]:
        return [image.uri for image in self.images if image.uri]
