"""What a task paid for and stored: request and image records, resume, and the manifest.

A record is written once a request's images are stored (or failed). Images are keyed by
``(prompt_index, image_index)`` within a request fingerprint, so a second run of the same work (a
retried task, a trigger run again) can neither duplicate an image nor lose one: merging records
keeps one entry per image. The fingerprint is a digest of what was asked (prompt, model, parameters,
source images); a record whose fingerprint differs from the current request is *superseded*: its
images stay where they are, the new request is generated, and the manifest says which replaced which.

A task's memory does not grow with its image count. Records go to storage a few at a time and into a
:class:`RecordLedger` on local disk (a private SQLite database, sorted by prompt index), which keeps a
few bytes per prompt in memory (:class:`Progress`: images done, next image index, flags) for resuming
and checking; ``manifest.json`` is streamed from the ledger at the end, images in prompt order.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import to_json

from airflow_provider_xai_image.api.images import USD_TICKS_PER_USD, ImageRequest
from airflow_provider_xai_image.exceptions import XaiContentFilteredError
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


class Progress:
    """What resuming and the checks need of each prompt's current records, a few bytes per prompt index:
    images done (stored or filtered), the next free image index, whether it has a record, an error or a
    filtered image; and what was spent. 100,000 prompts take 400 kB.
    """

    _RECORDED, _ERROR, _FILTERED = 1, 2, 4

    def __init__(self) -> None:
        self._done = bytearray()
        self._flags = bytearray()
        self._next_image = array("H")
        #: Billed or possibly billed by the current records: what a budget counts as spent.
        self.spent_usd_ticks = 0

    def update(self, merged: RequestRecord) -> None:
        """Take in the merged current record of a prompt (replacing what was known of that prompt).

        :param merged: Every current record of the prompt, merged.
        """
        index = merged.prompt_index
        if index >= len(self._flags):
            more = index + 1 - len(self._flags)
            self._done.extend(bytes(more))
            self._flags.extend(bytes(more))
            self._next_image.frombytes(bytes(more * self._next_image.itemsize))
        self._done[index] = len(merged.done_images)
        self._next_image[index] = max((image.image_index for image in merged.images), default=-1) + 1
        self._flags[index] = (
            self._RECORDED | (self._ERROR if merged.error else 0) | (self._FILTERED if merged.filtered else 0)
        )

    def _flag(self, index: int, flag: int) -> bool:
        return index < len(self._flags) and bool(self._flags[index] & flag)

    def recorded(self, index: int) -> bool:
        """The prompt has a current record."""
        return self._flag(index, self._RECORDED)

    def failed(self, index: int) -> bool:
        """The prompt's merged current record has an error."""
        return self._flag(index, self._ERROR)

    def done_images(self, index: int) -> int:
        """Images of the prompt stored or filtered: nothing more to pay for."""
        return self._done[index] if index < len(self._done) else 0

    def next_image_index(self, index: int) -> int:
        """The first image index no record of the prompt uses (failed slots included)."""
        return self._next_image[index] if index < len(self._next_image) else 0

    def filtered_prompts(self) -> list[int]:
        """The prompt indices with an image xAI's moderation filtered."""
        return [index for index, flags in enumerate(self._flags) if flags & self._FILTERED]


class Remaining(Mapping[int, tuple[ImageRequest, int]]):
    """What is left to pay for when a run starts, by prompt index: the request for the missing images only,
    and the index of its first new image.

    A prompt is done when it has ``n`` images stored or filtered; the missing ones are numbered after
    every image index already used (failed slots included). Kept as one bit per prompt (which were left
    when the run started); each item is made from the progress when it is drawn, before its prompt runs.

    :param requests: Every prompt's full request, by prompt index.
    :param progress: What earlier runs recorded.
    """

    def __init__(self, requests: Mapping[int, ImageRequest], progress: Progress) -> None:
        self._requests = requests
        self._progress = progress
        self._left = bytearray((max(requests, default=-1) + 8) // 8)
        self._count = 0
        for index in requests:
            if requests[index].n > progress.done_images(index):
                self._left[index >> 3] |= 1 << (index & 7)
                self._count += 1

    def _is_left(self, index: int) -> bool:
        return 0 <= index < 8 * len(self._left) and bool(self._left[index >> 3] >> (index & 7) & 1)

    def __getitem__(self, index: int) -> tuple[ImageRequest, int]:
        if not self._is_left(index):
            raise KeyError(index)
        request = self._requests[index]
        missing = request.n - self._progress.done_images(index)
        if missing < request.n:
            request = request.model_copy(update={"n": missing})
        return request, self._progress.next_image_index(index)

    def __iter__(self) -> Iterator[int]:
        return (index for index in range(8 * len(self._left)) if self._is_left(index))

    def __len__(self) -> int:
        return self._count


def check_moderation(filtered_prompts: Iterable[int], on_moderation: str) -> None:
    """With ``on_moderation="fail"``, raise naming every prompt index that had an image filtered.

    :param filtered_prompts: The prompt indices with a filtered image.
    :param on_moderation: ``fail`` or ``skip``.
    """
    if on_moderation != "fail":
        return
    filtered = sorted(filtered_prompts)
    if filtered:
        raise XaiContentFilteredError(
            f"xAI's moderation filtered images of prompt index(es) {filtered}; "
            'set on_moderation="skip" to record them in the manifest and go on.'
        )


#: The ledger's page cache, in KiB (SQLite's ``cache_size`` takes it negative); beyond it pages go to a
#: temporary file.
LEDGER_CACHE_KIB = 256
_LEDGER_SCHEMA = f"""
PRAGMA cache_size = -{LEDGER_CACHE_KIB};
PRAGMA temp_store = FILE;
CREATE TABLE records (prompt_index INTEGER NOT NULL, fingerprint TEXT, seq INTEGER NOT NULL, record TEXT NOT NULL);
CREATE INDEX records_by_prompt ON records (prompt_index, fingerprint, seq);
CREATE TABLE uris (uri TEXT PRIMARY KEY) WITHOUT ROWID;
"""
#: Rows read from the ledger at a time while it is streamed.
_ROWS_PER_READ = 128
#: Where the order of records added without one starts (after any a caller orders itself).
_ADDED_SEQ = 1 << 48


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


class RecordLedger:
    """
    The request records of a task instance on local disk, by prompt index: a private temporary SQLite
    database (deleted when closed; its page cache bounded by :data:`LEDGER_CACHE_KIB`). Records are
    merged per prompt and request fingerprint (in the order given, else the order added), streamed in
    prompt order into the manifest and looked up there, never held in memory. Records of the current
    requests also update :attr:`progress`; the others are superseded. Thread-safe.

    :param fingerprint_of: The fingerprint of the current request of a prompt index (None for none).
    """

    def __init__(self, fingerprint_of: Callable[[int], str | None]) -> None:
        self.fingerprint_of = fingerprint_of
        self.progress = Progress()
        self._lock = threading.Lock()
        self._next_seq = _ADDED_SEQ
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.executescript(_LEDGER_SCHEMA)

    def is_current(self, record: RequestRecord) -> bool:
        """The record is of its prompt's current request (not superseded).

        :param record: A record, or several of one prompt and fingerprint merged.
        """
        return (
            record.fingerprint is not None
            and record.prompt_index >= 0
            and self.fingerprint_of(record.prompt_index) == record.fingerprint
        )

    def add(self, record: RequestRecord, seq: int | None = None) -> None:
        """Keep ``record`` (on disk) and count it in :attr:`progress` when it is current.

        :param record: A record, saved to storage or about to be.
        :param seq: Its place among the records of its prompt when merged (below ``2**48``; those read
            concurrently from storage come in any order); None: after every record added so far.
        """
        current = self.is_current(record)
        data = record.model_dump_json()
        uris = [(image.uri,) for image in record.images if image.uri]
        with self._lock:
            if seq is None:
                seq, self._next_seq = self._next_seq, self._next_seq + 1
            self._db.execute(
                "INSERT INTO records (prompt_index, fingerprint, seq, record) VALUES (?, ?, ?, ?)",
                (record.prompt_index, record.fingerprint, seq, data),
            )
            self._db.executemany("INSERT OR IGNORE INTO uris (uri) VALUES (?)", uris)
            if current:
                recorded = self.progress.recorded(record.prompt_index)
                merged = self._merged(record.prompt_index, record.fingerprint) if recorded else None
                self.progress.update(merged or record)
                self.progress.spent_usd_ticks += record.spent_usd_ticks

    def _merged(self, prompt_index: int, fingerprint: str | None) -> RequestRecord | None:
        merged = None
        rows = self._db.execute(
            "SELECT record FROM records WHERE prompt_index = ? AND fingerprint IS ? ORDER BY seq",
            (prompt_index, fingerprint),
        )
        for (data,) in rows:
            merged = merge_records(merged, RequestRecord.model_validate_json(data))
        return merged

    def current_record(self, prompt_index: int) -> RequestRecord | None:
        """The current records of a prompt, merged (None when it has none).

        :param prompt_index: The prompt.
        """
        fingerprint = self.fingerprint_of(prompt_index)
        if fingerprint is None:
            return None
        with self._lock:
            return self._merged(prompt_index, fingerprint)

    def has_uri(self, uri: str) -> bool:
        """A record names the image at ``uri``.

        :param uri: An image's URI.
        """
        with self._lock:
            return self._db.execute("SELECT 1 FROM uris WHERE uri = ?", (uri,)).fetchone() is not None

    def groups(self) -> Iterator[RequestRecord]:
        """Every prompt's records merged per request fingerprint, by prompt index (then fingerprint),
        read from disk a few rows at a time. For when no more records are being added."""
        with self._lock:
            cursor = self._db.execute("SELECT record FROM records ORDER BY prompt_index, fingerprint, seq")
        group: RequestRecord | None = None
        while True:
            with self._lock:
                rows = cursor.fetchmany(_ROWS_PER_READ)
            if not rows:
                break
            for (data,) in rows:
                record = RequestRecord.model_validate_json(data)
                if group is not None and (group.prompt_index, group.fingerprint) == (
                    record.prompt_index,
                    record.fingerprint,
                ):
                    group = merge_records(group, record)
                    continue
                if group is not None:
                    yield group
                group = record
        if group is not None:
            yield group

    def image_uris(self) -> list[str]:
        """The URIs of the current requests' stored images, in prompt and image order."""
        return [
            image.uri for group in self.groups() if self.is_current(group) for image in group.done_images if image.uri
        ]

    def write_manifest(
        self,
        sink: IO[bytes],
        *,
        task_instance: TaskInstanceId,
        elapsed_seconds: float,
        parameters: dict[str, Any],
    ) -> dict[str, Any]:
        """Stream ``manifest.json`` (the format of :class:`Manifest`) into ``sink``; return its totals.

        The task instance comes first (a reader can check whose manifest it is before the images);
        images and errors of the current requests come in prompt order, then what was superseded; the
        totals are counted on the way. Errors and superseded entries wait in temporary files, so nothing
        is held per image.

        :param sink: A binary file.
        :param task_instance: The task instance writing it.
        :param elapsed_seconds: The run's duration, for the totals.
        :param parameters: The task's parameters, recorded as they are.
        """
        totals = dict.fromkeys(("requests", "images", "filtered", "failed_requests", "cost", "possibly_billed"), 0)
        with tempfile.TemporaryFile() as errors_file, tempfile.TemporaryFile() as superseded_file:
            images, errors, superseded = _JsonArray(sink), _JsonArray(errors_file), _JsonArray(superseded_file)
            sink.write(b'{"task_instance":' + task_instance.model_dump_json().encode() + b',"images":[')
            for group in self.groups():
                if not self.is_current(group):
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

    def close(self) -> None:
        """Close the database (its file goes with it)."""
        with self._lock:
            self._db.close()


class _JsonArray:
    """The items of a JSON array, written one at a time (the brackets are the caller's)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.count = 0

    def add(self, item: bytes) -> None:
        self.sink.write(b"," + item if self.count else item)
        self.count += 1


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
