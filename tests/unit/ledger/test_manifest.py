"""The manifest writer against its format: every key it writes comes from :class:`Manifest` and its parts."""

from __future__ import annotations

import io
import json

from airflow_provider_xai_image.ledger.manifest import (
    FailedRequest,
    Manifest,
    ManifestTotals,
    SupersededImages,
    write_manifest,
)
from airflow_provider_xai_image.ledger.record_ledger import RecordLedger
from airflow_provider_xai_image.ledger.records import ImageRecord, RequestRecord, TaskInstanceId

OWNER = TaskInstanceId(dag_id="d", run_id="r", task_id="t", map_index=-1)
PRICE = 500_000_000


def image(prompt_index: int, fingerprint: str, **fields: object) -> ImageRecord:
    uri = f"file:///out/p{prompt_index:05d}-i00-{fingerprint}.jpg"
    return ImageRecord.model_validate({"uri": uri, "prompt_index": prompt_index, "image_index": 0,
                                       "prompt": f"prompt {prompt_index}", "model": "m", **fields})  # fmt: skip


def written(records: list[RequestRecord], current: dict[int, str]) -> tuple[bytes, ManifestTotals]:
    ledger = RecordLedger(current.get)
    for record in records:
        ledger.add(record)
    sink = io.BytesIO()
    totals = write_manifest(ledger, sink, task_instance=OWNER, elapsed_seconds=2.34567, parameters={"n": 1})
    ledger.close()
    return sink.getvalue(), totals


def test_every_key_written_is_one_of_the_format() -> None:
    records = [
        RequestRecord(prompt_index=0, prompt="prompt 0", model="m", fingerprint="new0", cost_usd_ticks=PRICE,
                      images=[image(0, "new0")]),
        RequestRecord(prompt_index=1, prompt="prompt 1", model="m", fingerprint="old1", cost_usd_ticks=PRICE,
                      images=[image(1, "old1")]),
        RequestRecord(prompt_index=1, prompt="prompt 1", model="m", fingerprint="new1",
                      possibly_billed_usd_ticks=PRICE, error="timed out"),
        RequestRecord(prompt_index=2, prompt="prompt 2", model="m", fingerprint="new2", cost_usd_ticks=PRICE,
                      images=[image(2, "new2", uri=None, moderation="filtered")]),
    ]  # fmt: skip
    data, totals = written(records, {0: "new0", 1: "new1", 2: "new2"})

    raw = json.loads(data)
    assert list(raw) == list(Manifest.model_fields)
    assert [set(entry) for entry in raw["errors"]] == [set(FailedRequest.model_fields)]
    assert [set(entry) for entry in raw["superseded"]] == [set(SupersededImages.model_fields)]
    assert set(raw["totals"]) == set(ManifestTotals.model_fields) | set(ManifestTotals.model_computed_fields)
    manifest = Manifest.model_validate_json(data)
    assert manifest.task_instance == OWNER
    assert [(entry.prompt_index, entry.uri) for entry in manifest.images] == [
        (0, "file:///out/p00000-i00-new0.jpg"),
        (2, None),
    ]
    assert manifest.errors == [FailedRequest(prompt_index=1, prompt="prompt 1", error="timed out")]
    assert manifest.superseded == [
        SupersededImages(prompt_index=1, fingerprint="old1", uris=["file:///out/p00001-i00-old1.jpg"])
    ]
    assert manifest.totals == totals
    assert totals.model_dump() == {
        "requests": 3,
        "images": 1,
        "filtered": 1,
        "failed_requests": 1,
        "cost_usd_ticks": 2 * PRICE,
        "possibly_billed_usd_ticks": PRICE,
        "elapsed_seconds": 2.346,
        "cost_usd": 0.1,
        "possibly_billed_usd": 0.05,
    }


def test_an_empty_ledger_writes_empty_arrays() -> None:
    data, totals = written([], {})

    manifest = Manifest.model_validate_json(data)
    assert (manifest.images, manifest.errors, manifest.superseded) == ([], [], [])
    assert totals.requests == 0
    assert json.loads(data)["parameters"] == {"n": 1}
