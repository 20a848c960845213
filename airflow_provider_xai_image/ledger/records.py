"""What a task paid for and stored: request and image records, their fingerprints, and how they merge.

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
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from airflow_provider_xai_image.api.images import ImageRequest
from airflow_provider_xai_image.hooks.redaction import cap_error_text

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


#: An error text as records and the manifest keep it: capped (it may quote a remote answer at length).
StoredErrorText = Annotated[str | None, AfterValidator(cap_error_text)]


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
    error: StoredErrorText = None

    @property
    def done(self) -> bool:
        """Stored, or filtered by moderation: nothing more to pay for."""
        return self.uri is not None or self.moderation == "filtered"


class RequestRecord(BaseModel):
    """What one paid request (or one batch result) produced."""

    #: Read back from the ledger by the thousand: pydantic's cache of JSON strings would keep prompts
    #: and digests (up to 16,384 of them), so it is kept to field names.
    model_config = ConfigDict(cache_strings="keys")

    prompt_index: int
    prompt: str | None
    model: str
    fingerprint: str | None = None
    cost_usd_ticks: int = 0
    #: Estimated cost of requests that failed after possibly reaching xAI (it may have billed them).
    possibly_billed_usd_ticks: int = 0
    images: list[ImageRecord] = Field(default_factory=list)
    error: StoredErrorText = None
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


class TaskInstanceId(BaseModel):
    """The task instance a manifest belongs to (what the gallery checks before it shows the manifest).

    :param dag_id: The DAG.
    :param run_id: The DAG run.
    :param task_id: The task.
    :param map_index: The index of a mapped task instance; -1 when the task is not mapped.
    """

    model_config = ConfigDict(frozen=True)

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
