"""The gallery's manifest index and cache, and its settings, without a server: what a manifest becomes
once streamed into the index, what is refused, and when a manifest is read again."""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_xai_image import get_provider_info
from airflow_provider_xai_image.ledger.records import TaskInstanceId
from airflow_provider_xai_image.plugins.manifest_index import ManifestCache, ManifestError, ManifestIndex
from airflow_provider_xai_image.settings import (
    CONFIG_OPTIONS,
    DEFAULT_MAX_MANIFEST_MIB,
    allowed_roots,
    max_manifest_bytes,
)

FOLDER = "s3://aws_default@bucket/images/run/task"
OWNER = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": 2}


def image(index: int, uri: str | None, **fields: object) -> dict[str, object]:
    return {
        "uri": uri,
        "prompt_index": index,
        "image_index": 0,
        "prompt": f"prompt {index}",
        "revised_prompt": None,
        "model": "grok-imagine-image",
        "mime_type": "image/jpeg" if uri else None,
        "bytes": 10 if uri else None,
        "sha256": "0" * 64 if uri else None,
        "cost_usd_ticks": 5,
        "moderation": "passed",
        "error": None,
        **fields,
    }


MANIFEST = {
    "task_instance": OWNER,
    "images": [
        image(0, f"{FOLDER}/p00000-i00-0123456789ab.jpg"),
        image(1, "s3://aws_default@bucket/images/run/other/p00001-i00-0123456789ab.jpg"),
        image(2, None, moderation="filtered"),
        image(3, f"{FOLDER}/p00003-i00-0123456789ab.png"),
    ],
    "errors": [{"prompt_index": 4, "prompt": "p", "error": "boom"}],
    "superseded": [{"prompt_index": 0, "fingerprint": "ba9876543210", "uris": [f"{FOLDER}/old.jpg"]}],
    "totals": {
        "images": 3,
        "filtered": 1,
        "cost_usd_ticks": 20,
        "elapsed_seconds": 1.5,
        "failed_requests": "1",
        "possibly_billed_usd_ticks": True,
    },
    "parameters": {"output_uri": "s3://aws_default@bucket/images/", "n": 1},
}


def loaded(manifest: object, folder: str = FOLDER) -> ManifestIndex:
    index = ManifestIndex(f"{folder}/manifest.json")
    index.load(io.BytesIO(json.dumps(manifest).encode()))
    return index


def test_an_index_keeps_the_manifest_and_answers_pages_names_and_the_json() -> None:
    index = loaded(MANIFEST)

    assert index.task_instance == TaskInstanceId(**OWNER)
    assert index.output_uri == "s3://aws_default@bucket/images/"
    assert index.totals == {"images": 3, "filtered": 1, "cost_usd_ticks": 20, "elapsed_seconds": 1.5}
    # cards: images directly in the folder and filtered ones, in manifest order
    assert index.cards == 3
    assert [(name, record.prompt_index) for name, record in index.page(0, 10)] == [
        ("p00000-i00-0123456789ab.jpg", 0),
        (None, 2),
        ("p00003-i00-0123456789ab.png", 3),
    ]
    assert [record.prompt_index for _, record in index.page(1, 1)] == [2]
    assert index.image_uri("p00003-i00-0123456789ab.png") == f"{FOLDER}/p00003-i00-0123456789ab.png"
    assert index.image_uri("p00001-i00-0123456789ab.jpg") is None
    assert index.image_uri("old.jpg") is None
    assert index.first_errors(5) == MANIFEST["errors"]
    assert json.loads(b"".join(index.json_chunks())) == MANIFEST


def test_keys_in_any_order_and_unknown_keys_are_read_and_left_out() -> None:
    shuffled = {"extra": {"images": [1, 2]}, **{key: MANIFEST[key] for key in reversed(list(MANIFEST))}}
    index = loaded(shuffled)
    assert index.task_instance == TaskInstanceId(**OWNER)
    assert json.loads(b"".join(index.json_chunks())) == MANIFEST


def test_a_manifest_without_task_instance_is_indexed_without_one() -> None:
    index = loaded({key: value for key, value in MANIFEST.items() if key != "task_instance"})
    assert index.task_instance is None


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"images": [',
        json.dumps({**MANIFEST, "images": [{"uri": 5}]}).encode(),
        json.dumps({**MANIFEST, "images": ["<b>x</b>"]}).encode(),
        json.dumps({**MANIFEST, "task_instance": {"dag_id": "d"}}).encode(),
        json.dumps({**MANIFEST, "totals": {"images": 1}}).replace('"images": 1}', '"images": 1e400}').encode(),
    ],
)
def test_what_is_no_manifest_is_refused(data: bytes) -> None:
    with pytest.raises(ManifestError, match="not a manifest"):
        ManifestIndex(f"{FOLDER}/manifest.json").load(io.BytesIO(data))


def test_the_cache_builds_each_manifest_once_and_keeps_the_last_few() -> None:
    cache = ManifestCache(max_entries=2)
    builds: list[str] = []
    started = threading.Event()

    def build(key: str) -> ManifestIndex:
        started.wait(5)
        builds.append(key)
        return loaded(MANIFEST)

    with ThreadPoolExecutor(8) as pool:
        found = [pool.submit(cache.get, "a", lambda: build("a")) for _ in range(8)]
        started.set()
        indexes = {id(future.result()) for future in found}
    assert (builds, len(indexes)) == (["a"], 1)
    cache.get("b", lambda: build("b"))
    cache.get("a", lambda: build("a"))  # kept, and now the most recent
    cache.get("c", lambda: build("c"))  # evicts b
    cache.get("b", lambda: build("b"))
    assert builds == ["a", "b", "c", "b"]


def test_the_provider_info_declares_the_settings_airflow_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["config"]["xai_image"]["options"] == CONFIG_OPTIONS

    monkeypatch.delenv("AIRFLOW__XAI_IMAGE__GALLERY_ALLOWED_ROOTS", raising=False)
    monkeypatch.delenv("AIRFLOW__XAI_IMAGE__GALLERY_MAX_MANIFEST_MIB", raising=False)
    assert allowed_roots() == []
    assert max_manifest_bytes() == DEFAULT_MAX_MANIFEST_MIB * 2**20
    monkeypatch.setenv("AIRFLOW__XAI_IMAGE__GALLERY_ALLOWED_ROOTS", " s3://aws_default@b/x , file:///data/ ,")
    monkeypatch.setenv("AIRFLOW__XAI_IMAGE__GALLERY_MAX_MANIFEST_MIB", "3")
    assert allowed_roots() == ["s3://aws_default@b/x/", "file:///data/"]
    assert max_manifest_bytes() == 3 * 2**20
