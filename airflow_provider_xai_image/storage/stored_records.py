"""Reading back what earlier tries stored in a task instance's folder: saved records, and images no record names."""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from airflow.sdk import ObjectStoragePath

from airflow_provider_xai_image.engine.concurrency import map_concurrently
from airflow_provider_xai_image.exceptions import XaiImageError
from airflow_provider_xai_image.ledger.record_ledger import RecordLedger
from airflow_provider_xai_image.ledger.records import ImageRecord, RequestRecord
from airflow_provider_xai_image.storage.image_checks import verify_stream
from airflow_provider_xai_image.storage.layout import IMAGE_NAME, RECORDS_DIR

#: Records objects read at once when a try resumes (or a batch job's shares are assembled).
RECORDS_READ_CONCURRENCY = 16
#: Bits of a record's place within its object, in its merge order.
_PLACE_BITS = 20


def read_saved_records(folder: ObjectStoragePath, ledger: RecordLedger, first_object: int) -> int:
    """Read the records saved under ``folder`` into ``ledger``, a few small objects at a time, concurrently;
    return how many objects were read. They are merged in the order of their objects' names, then of their
    place in an object.

    :param folder: A task instance's folder.
    :param ledger: Where the records go.
    :param first_object: How many records objects the ledger holds already (these come after them).
    """
    records_dir = folder / RECORDS_DIR
    if not records_dir.exists():
        return 0
    names = sorted(
        path.name for path in records_dir.iterdir() if path.name.endswith(".json") and not path.name.startswith(".")
    )

    def read(item: tuple[int, str]) -> None:
        number, name = item
        for place, data in enumerate(json.loads((records_dir / name).read_bytes())):
            ledger.add(RequestRecord.model_validate(data), seq=(first_object + number) << _PLACE_BITS | place)

    deque(map_concurrently(read, enumerate(names), RECORDS_READ_CONCURRENCY), maxlen=0)
    return len(names)


def recover_unrecorded_images(
    folder: ObjectStoragePath, ledger: RecordLedger, prompts: Sequence[str | None] | None, warn: Callable[..., object]
) -> Iterator[RequestRecord]:
    """Records of the whole images stored in ``folder`` that no record in ``ledger`` names (a crashed try
    stored them but lost their records): what their names and bytes say, nothing more.

    :param folder: A task instance's folder.
    :param ledger: The records read so far.
    :param prompts: The task's prompts, to name the prompt of recovered images.
    :param warn: Logs a warning (``log.warning``): an image that is not whole is not reused.
    """
    if not folder.exists():
        return
    for path in folder.iterdir():
        match = IMAGE_NAME.match(path.name)
        if match is None or ledger.has_uri(str(path)):
            continue
        prompt_index = int(match["prompt"])
        prompt = prompts[prompt_index] if prompts is not None and prompt_index < len(prompts) else None
        try:
            with path.open("rb") as stream, open(os.devnull, "wb") as sink:
                image = verify_stream(stream, sink, str(path))
        except XaiImageError as error:
            warn("Not reusing %s: %s", path, error)
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
