"""A task's memory does not grow with its image count: records go to a ledger on local disk as they come,
and ``manifest.json`` is streamed from it into a spool file, then published whole.

Through the real path (``ImageStore.add_record`` saves records to ``_records/`` on a ``file://`` output
and keeps them in the ledger; ``ImageStore.write_manifest`` publishes the manifest), measured with
tracemalloc: what Python allocates stays under a small bound whether the task has 2,000 or 20,000 images.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_xai_image.ledger.manifest import Manifest
from airflow_provider_xai_image.ledger.records import ImageRecord, RequestRecord, TaskInstanceId
from airflow_provider_xai_image.storage.image_store import ImageStore

FINGERPRINT = "0123456789ab"
TASK_INSTANCE = TaskInstanceId(dag_id="scale", run_id="manual__1", task_id="store", map_index=3)
OLD_FINGERPRINT = "ba9876543210"
PRICE_TICKS = 250_000_000
#: What Python may hold at the peak of adding records or writing the manifest, whatever the count.
PEAK_BOUND_BYTES = 512 * 1024
#: Every 1,000th prompt failed; every 500th had its image filtered; every 250th has an image of an
#: earlier request (superseded) besides its current one; every 100th was stored in two tries (a failed
#: image, then the image).
FAILED, FILTERED, SUPERSEDED, TWO_TRIES = 1000, 500, 250, 100


def image(folder: str, index: int, image_index: int = 0, fingerprint: str = FINGERPRINT, **fields: Any) -> ImageRecord:
    return ImageRecord(
        uri=f"{folder}/p{index:05d}-i{image_index:02d}-{fingerprint}.jpg",
        prompt_index=index,
        image_index=image_index,
        prompt=f"Scale test image {index}: a lighthouse at dusk",
        model="grok-imagine-image-quality",
        mime_type="image/jpeg",
        bytes=40_000 + index,
        sha256=f"{index:064x}",
        cost_usd_ticks=PRICE_TICKS,
        **fields,
    )


def records_of(folder: str, index: int) -> list[RequestRecord]:
    """What a batch store step records for prompt ``index`` (a few prompts have unusual histories)."""
    prompt = f"Scale test image {index}: a lighthouse at dusk"
    base = {"prompt_index": index, "prompt": prompt, "model": "grok-imagine-image-quality"}
    if index % FAILED == 7:
        return [RequestRecord(**base, fingerprint=FINGERPRINT, error="Image generation failed (emulated failure).")]
    if index % FILTERED == 3:
        filtered = image(folder, index, moderation="filtered").model_copy(update={"uri": None, "bytes": None})
        return [RequestRecord(**base, fingerprint=FINGERPRINT, cost_usd_ticks=PRICE_TICKS, images=[filtered])]
    current = RequestRecord(**base, fingerprint=FINGERPRINT, cost_usd_ticks=PRICE_TICKS, images=[image(folder, index)])
    if index % TWO_TRIES == 1:
        cut = image(folder, index).model_copy(update={"uri": None, "error": "cut short", "bytes": None})
        first = RequestRecord(**base, fingerprint=FINGERPRINT, cost_usd_ticks=PRICE_TICKS, images=[cut], error="cut")
        return [first, current.model_copy(update={"cost_usd_ticks": 0})]  # the retry paid nothing more
    if index % SUPERSEDED == 5:
        old = image(folder, index, fingerprint=OLD_FINGERPRINT)
        return [RequestRecord(**base, fingerprint=OLD_FINGERPRINT, images=[old]), current]
    return [current]


def measured_run(root: Path, count: int) -> dict[str, Any]:
    """Add the records of ``count`` prompts through an ImageStore, then write the manifest; the peaks of both."""
    store = ImageStore(ObjectStoragePath(f"file://{root}/{count}/"), hook=None)  # type: ignore[arg-type]
    store.load_records(lambda _: FINGERPRINT)
    folder = str(store.folder).rstrip("/")
    tracemalloc.start()
    try:
        for index in range(count):
            for record in records_of(folder, index):
                store.add_record(record)
        store.save_records()
        adding_peak = tracemalloc.get_traced_memory()[1] - tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        manifest_uri, totals = store.write_manifest(
            {"batch_id": "batch-1"}, elapsed_seconds=12.5, task_instance=TASK_INSTANCE
        )
        writing_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    uris = store.image_uris()
    store.close()
    return {"adding": adding_peak, "writing": writing_peak, "uri": manifest_uri, "totals": totals, "uris": uris}


def test_a_20000_entry_manifest_is_written_without_holding_the_entries(tmp_path: Path) -> None:
    small, large = measured_run(tmp_path, 2_000), measured_run(tmp_path, 20_000)

    # memory: a small bound, the same for 2,000 and 20,000 images
    for run in (small, large):
        assert run["adding"] < PEAK_BOUND_BYTES, run
        assert run["writing"] < PEAK_BOUND_BYTES, run
    assert large["writing"] < small["writing"] + 64 * 1024
    assert large["adding"] < small["adding"] + 64 * 1024

    # content: the format the gallery reads, images in prompt order, each once
    path = Path(large["uri"].removeprefix("file://"))
    assert path == tmp_path / "20000" / "manifest.json"
    manifest = Manifest.model_validate_json(path.read_bytes())
    raw = json.loads(path.read_bytes())
    assert list(raw) == ["task_instance", "images", "errors", "superseded", "totals", "parameters"]
    assert manifest.task_instance == TASK_INSTANCE
    failed = [index for index in range(20_000) if index % FAILED == 7]
    filtered = [index for index in range(20_000) if index % FILTERED == 3]
    superseded = [index for index in range(20_000) if index % SUPERSEDED == 5 and index not in failed + filtered]
    assert [entry.prompt_index for entry in manifest.images] == [i for i in range(20_000) if i not in failed]
    assert [entry.uri for entry in manifest.images if entry.uri] == large["uris"]
    assert len(set(large["uris"])) == 20_000 - len(failed) - len(filtered)
    assert all(FINGERPRINT in uri for uri in large["uris"])
    assert [entry.prompt_index for entry in manifest.images if entry.moderation == "filtered"] == filtered
    assert [error.prompt_index for error in manifest.errors] == failed
    assert manifest.errors[0].model_dump() == {
        "prompt_index": 7,
        "prompt": "Scale test image 7: a lighthouse at dusk",
        "error": "Image generation failed (emulated failure).",
    }
    assert [entry.prompt_index for entry in manifest.superseded] == superseded
    assert manifest.superseded[0].uris == [f"file://{tmp_path}/20000/p00005-i00-{OLD_FINGERPRINT}.jpg"]
    paid = 20_000 - len(failed)
    assert manifest.totals.model_dump() == {
        "requests": 20_000,
        "images": 20_000 - len(failed) - len(filtered),
        "filtered": len(filtered),
        "failed_requests": len(failed),
        "cost_usd_ticks": paid * PRICE_TICKS,
        "cost_usd": paid * PRICE_TICKS / 10**10,
        "possibly_billed_usd_ticks": 0,
        "possibly_billed_usd": 0.0,
        "elapsed_seconds": 12.5,
    }
    assert large["totals"] == manifest.totals
    assert manifest.parameters == {"batch_id": "batch-1"}
    # the records went to storage a few per object as they came, and the spool folder is gone
    assert 20_000 / 16 <= len(list((tmp_path / "20000" / "_records").iterdir())) < 20_000 / 8
