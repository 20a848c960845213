"""XaiGenerateImagesOperator and XaiGenerateImagesTrigger in-process, against the emulator.

``op.execute(context)`` runs with a small context stand-in (see ``operators_support.make_context``); images go
to ``file://`` under ``tmp_path`` (and to moto S3 where a test says so). The DAG-level tests, through
``airflow dags test``, are in ``test_generate_dags.py``; the fault tests (storage outages, a trigger
run twice, possibly billed requests, changed requests) in ``tests/faults``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import Asset, AssetAlias, ObjectStoragePath
from airflow.sdk.exceptions import TaskDeferred
from fsspec.implementations.local import LocalFileSystem
from operators_support import (
    IMAGE_NAME,
    INPUT_IMAGE_TICKS,
    JPEG_MAGIC,
    PRICE_TICKS,
    RECORDS_NAME,
    SIZES_1K,
    check_manifest,
    fingerprint_of,
    image_requests,
    make_context,
    permanent_cause,
)
from support.images import jpeg_file, pixel_size

from airflow_provider_xai_image.engine.plan import GenerationPlan
from airflow_provider_xai_image.exceptions import (
    XaiBudgetExceededError,
    XaiContentFilteredError,
    XaiError,
    XaiPermanentError,
    XaiRequestValidationError,
    XaiSourceImageError,
    XaiStorageError,
)
from airflow_provider_xai_image.hooks.xai import XaiHook
from airflow_provider_xai_image.ledger.records import request_fingerprint
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.operators.lineage import OUTPUT_ALIAS
from airflow_provider_xai_image.storage import publishing
from airflow_provider_xai_image.storage.image_store import ImageStore
from airflow_provider_xai_image.storage.publishing import publish
from airflow_provider_xai_image.testing import MODERATION_MARKER, XaiEmulator
from airflow_provider_xai_image.triggers.generate import XaiGenerateImagesTrigger

RUN_ID = "manual__unit"
#: A price below what the emulator bills ($0.02 listed, $0.05 billed), to see the budget stop on the actual cost.
LISTED_PRICE_TICKS = 200_000_000


def make_operator(output_uri: str, **kwargs: Any) -> XaiGenerateImagesOperator:
    kwargs.setdefault("task_id", "generate")
    kwargs.setdefault("prompt", "A red fox in the snow")
    return XaiGenerateImagesOperator(output_uri=output_uri, **kwargs)


def fingerprints(op: XaiGenerateImagesOperator) -> dict[int, str]:
    """The fingerprint of each prompt's request, as the operator builds them (no request is sent)."""
    return {index: request_fingerprint(request) for index, request in op.build_requests(op.prompts).items()}


def task_folder(root: Path, task_id: str = "generate", map_index: int | None = None) -> Path:
    folder = root / RUN_ID / task_id
    return folder / f"map-{map_index}" if map_index is not None else folder


def stored_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.is_file()) if folder.exists() else []


def images_under(root: Path) -> list[str]:
    """Every published image (any name the store gives images) under ``root``, relative."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if IMAGE_NAME.match(path.name))


def read_uri(uri: str) -> bytes:
    return ObjectStoragePath(uri).read_bytes()


def spool_of(folder: Path) -> str:
    """The local spool folder of the task instance storing into ``folder``."""
    return ImageStore(ObjectStoragePath(f"file://{folder}"), None).spool  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the happy path


def test_execute_stores_images_manifest_xcom_and_asset_event(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    output_uri = f"file://{tmp_path}/out/"
    prompts = ["A ceramic mug on a desk", "Red running shoes on white"]
    op = make_operator(output_uri, prompt=prompts, n=2, aspect_ratio="4:3", resolution="1k")
    context = make_context()

    uris = op.execute(context)

    folder = task_folder(tmp_path / "out")
    fingerprint = fingerprints(op)
    assert fingerprint[0] != fingerprint[1]
    assert isinstance(uris, list)
    assert all(isinstance(uri, str) for uri in uris)
    assert uris == [f"file://{folder}/p{p:05d}-i{i:02d}-{fingerprint[p]}.jpg" for p in range(2) for i in range(2)]
    for uri in uris:
        data = read_uri(uri)
        assert data[:3] == JPEG_MAGIC
        assert pixel_size(data) == SIZES_1K["4:3"]
    # names carry indexes and a digest only, never prompt text
    assert stored_files(folder) == ["manifest.json", *(uri.rsplit("/", 1)[-1] for uri in uris)]
    records = stored_files(folder / "_records")
    assert records
    assert all(RECORDS_NAME.match(name) for name in records), records  # the storage probe left nothing
    for name in stored_files(folder) + records:
        assert not any(word.lower() in name.lower() for prompt in prompts for word in prompt.split() if len(word) > 2)
    assert not os.path.exists(spool_of(folder))  # the spool went with the manifest

    manifest_uri = context["ti"].xcoms["manifest"]
    assert manifest_uri == f"file://{folder}/manifest.json"
    manifest = json.loads(read_uri(manifest_uri))
    check_manifest(manifest, read_uri, api_key=xai_conn.api_key, fingerprints=fingerprint)
    assert [image["uri"] for image in manifest["images"]] == uris
    assert [(image["prompt"], image["prompt_index"]) for image in manifest["images"]] == [
        (prompts[0], 0),
        (prompts[0], 0),
        (prompts[1], 1),
        (prompts[1], 1),
    ]
    assert (manifest["errors"], manifest["superseded"]) == ([], [])
    assert manifest["totals"]["images"] == 4
    assert manifest["totals"]["filtered"] == 0
    assert manifest["totals"]["cost_usd_ticks"] == 4 * PRICE_TICKS
    assert manifest["totals"]["cost_usd"] == pytest.approx(0.20)
    assert manifest["totals"]["possibly_billed_usd_ticks"] == 0
    parameters = manifest["parameters"]
    assert parameters["output_uri"] == output_uri
    assert parameters["n"] == 2
    assert parameters["aspect_ratio"] == "4:3"
    assert parameters["xai_conn_id"] == "xai_default"
    assert not any("key" in name.lower() or "password" in name.lower() for name in parameters)

    # an event on the output location, through the task's outlet alias, carries the image count and manifest URI
    [alias] = op.outlets
    assert isinstance(alias, AssetAlias)
    [(asset, extra)] = context["outlet_events"][alias].added
    assert asset.uri.rstrip("/") == f"file://{tmp_path}/out"
    assert extra == {"images": 4, "manifest": manifest_uri}
    assert xai_conn.api_key not in json.dumps(context["ti"].xcoms)

    assert xai_conn.images_billed == 4
    # the free key check and the price list come before the first paid request
    assert [r.path for r in xai_conn.requests_log[:2]] == ["/v1/api-key", "/v1/image-generation-models"]
    assert [(r.path, r.status) for r in image_requests(xai_conn)] == [("/v1/images/generations", 200)] * 2


def test_mapped_instance_gets_its_own_folder(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    ops = [make_operator(f"file://{tmp_path}/", prompt="The same prompt") for _ in (0, 1)]
    uris = [op.execute(make_context(map_index=index)) for index, op in enumerate(ops)]

    fingerprint = fingerprints(ops[0])[0]
    assert uris == [
        [f"file://{task_folder(tmp_path, map_index=index)}/p00000-i00-{fingerprint}.jpg"] for index in (0, 1)
    ]
    assert xai_conn.images_billed == 2


def test_b64_json_response_format_is_stored_the_same_way(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    context = make_context()
    op = make_operator(f"file://{tmp_path}/", response_format="b64_json", aspect_ratio="2:1")
    [uri] = op.execute(context)

    data = read_uri(uri)
    assert pixel_size(data) == SIZES_1K["2:1"]
    manifest = json.loads(read_uri(context["ti"].xcoms["manifest"]))
    check_manifest(manifest, read_uri, api_key=xai_conn.api_key, fingerprints=fingerprints(op))
    assert not any(r.path.startswith("/tmp-images/") for r in xai_conn.requests_log)
    # response_format changes how the bytes travel, not what was asked: the same fingerprint as "url"
    assert fingerprint_of(uri) == fingerprints(make_operator(f"file://{tmp_path}/", aspect_ratio="2:1"))[0]


@pytest.mark.parametrize(
    ("setting", "recorded"),
    [
        pytest.param("absent", None, id="absent"),
        pytest.param("empty", None, id="empty"),
        pytest.param("text", "A detailed rendering of: A red fox in the snow", id="text"),
    ],
)
def test_revised_prompt_is_recorded_only_when_xai_sends_one(
    xai_conn: XaiEmulator, tmp_path: Path, setting: str, recorded: str | None
) -> None:
    """xAI no longer fills ``revised_prompt`` (absent or ""): the manifest says null, never invents one."""
    xai_conn.configure(revised_prompt=setting)
    context = make_context()

    make_operator(f"file://{tmp_path}/", n=2).execute(context)

    manifest = json.loads(read_uri(context["ti"].xcoms["manifest"]))
    assert [image["revised_prompt"] for image in manifest["images"]] == [recorded, recorded]


def test_outlets_are_the_users_own_plus_the_output_alias(tmp_path: Path) -> None:
    """The output location's Asset is attached at run time (through the alias), only when images exist;
    nothing reads the templated ``output_uri`` when the operator is built, and a user's outlets stay."""
    mine = Asset("s3://catalogue/mugs")
    plain = make_operator("file://{{ params.x }}/", task_id="plain")
    with_mine = make_operator(f"file://{tmp_path}/", task_id="with_mine", outlets=[mine])
    assert plain.outlets == [OUTPUT_ALIAS]
    assert with_mine.outlets == [mine, OUTPUT_ALIAS]
    assert "partial" not in XaiGenerateImagesOperator.__dict__


# --------------------------------------------------------------------------- bad inputs: fail before any request

FOUR_URLS = [f"https://example.com/source-{index}.jpg" for index in range(4)]

#: Parameters checked in ``execute`` (they may be templated): the task fails without retries.
BAD_TEMPLATED_INPUTS = [
    pytest.param({"n": 0}, "n", id="n=0"),
    pytest.param({"n": 11}, "n", id="n=11"),
    pytest.param({"n": "two"}, "n", id="n=two"),
    pytest.param({"aspect_ratio": "5:4"}, "aspect_ratio", id="aspect_ratio=5:4"),
    pytest.param({"resolution": "4k"}, "resolution", id="resolution=4k"),
    pytest.param({"quality": "ultra"}, "quality", id="quality=ultra"),
    pytest.param({"quality": "high"}, "quality", id="quality=high"),  # refused by xAI since revision 2
    pytest.param({"response_format": "png"}, "response_format", id="response_format=png"),
    pytest.param({"model": ""}, "model", id="model=empty"),
    pytest.param({"prompt": ""}, "prompt", id="prompt=empty"),
    pytest.param({"prompt": "   "}, "prompt", id="prompt=blank"),
    pytest.param({"prompt": []}, "prompt", id="prompt=[]"),
    pytest.param({"prompt": ["ok", ""]}, "prompt", id="prompt=[ok,empty]"),
    pytest.param({"prompt": ["ok", 3]}, "prompt", id="prompt=[ok,3]"),
    pytest.param({"source_images": FOUR_URLS}, "source_images", id="4-source-images"),
    pytest.param({"source_images": []}, "source_images", id="0-source-images"),
    pytest.param({"source_images": ["ftp-less/path.png"]}, "source_images", id="source-without-scheme"),
    pytest.param({"output_uri": "https://example.com/images/"}, "output_uri", id="output_uri=https"),
]
#: Parameters that cannot be templated, checked when the operator is built (when the DAG is parsed).
BAD_PLAIN_INPUTS = [
    pytest.param({"max_concurrency": 0}, "max_concurrency", id="max_concurrency=0"),
    pytest.param({"on_moderation": "ignore"}, "on_moderation", id="on_moderation=ignore"),
    pytest.param({"max_cost_usd": -1.0}, "max_cost_usd", id="max_cost_usd=-1"),
    pytest.param({"max_cost_usd": math.nan}, "max_cost_usd", id="max_cost_usd=nan"),
]


@pytest.mark.parametrize(("kwargs", "parameter"), BAD_TEMPLATED_INPUTS)
def test_bad_input_fails_without_retries_before_any_request(
    xai_conn: XaiEmulator, tmp_path: Path, kwargs: dict[str, Any], parameter: str
) -> None:
    kwargs.setdefault("output_uri", f"file://{tmp_path}/")
    op = XaiGenerateImagesOperator(task_id="generate", **{"prompt": "A red fox", **kwargs})

    with pytest.raises(AirflowFailException) as raised:
        op.execute(make_context())

    error = permanent_cause(raised, XaiRequestValidationError)
    assert isinstance(error, ValueError)
    assert re.search(rf"(^|\W){parameter}(\.\d+)?: ", str(error)), str(error)
    assert xai_conn.api_key not in str(raised.value)
    assert xai_conn.requests_log == []  # not even the key check
    assert xai_conn.images_billed == 0
    assert not (tmp_path / RUN_ID).exists()


@pytest.mark.parametrize(("kwargs", "parameter"), BAD_PLAIN_INPUTS)
def test_bad_plain_input_fails_when_the_operator_is_built(
    tmp_path: Path, kwargs: dict[str, Any], parameter: str
) -> None:
    with pytest.raises(XaiRequestValidationError, match=rf"(^|\W){parameter}: "):
        make_operator(f"file://{tmp_path}/", **kwargs)


@pytest.mark.parametrize("where", ["file", "s3-key", "s3-bucket"])
def test_missing_source_image_fails_naming_it(
    xai_conn: XaiEmulator, tmp_path: Path, request: pytest.FixtureRequest, where: str
) -> None:
    if where == "file":
        source = f"file://{tmp_path}/none.png"
    else:
        moto_s3 = request.getfixturevalue("moto_s3")
        bucket = moto_s3.create_bucket("src") if where == "s3-key" else "missing-bucket-xai"
        source = f"s3://aws_moto@{bucket}/missing/none.png"

    with pytest.raises(AirflowFailException) as raised:
        make_operator(f"file://{tmp_path}/out/", source_images=[source]).execute(make_context())

    error = permanent_cause(raised, XaiSourceImageError)
    assert str(error) == f"source_images[0] ({source[:80]}) does not exist"  # position and URI (its start)
    assert image_requests(xai_conn) == []


def test_source_that_is_not_an_image_fails_naming_it(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image, just some text that is long enough")
    good = f"file://{jpeg_file(tmp_path / 'good.jpg')}"
    source = f"file://{text}"

    with pytest.raises(AirflowFailException) as raised:
        make_operator(f"file://{tmp_path}/out/", source_images=[good, source]).execute(make_context())

    error = permanent_cause(raised, XaiSourceImageError)
    assert str(error).startswith(f"source_images[1] ({source[:80]}) is not an image")
    assert image_requests(xai_conn) == []


# --------------------------------------------------------------------------- budget


def test_budget_below_the_estimate_is_refused_before_any_image_request(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    op = make_operator(f"file://{tmp_path}/", prompt=["one", "two"], n=2, max_cost_usd=0.05)

    with pytest.raises(AirflowFailException) as raised:
        op.execute(make_context())

    error = permanent_cause(raised, XaiBudgetExceededError)
    assert str(error) == (
        "Estimated cost $0.2000 (plus $0.0000 already spent) is over max_cost_usd=$0.0500; no request was sent."
    )
    assert [r.path for r in xai_conn.requests_log] == ["/v1/api-key", "/v1/image-generation-models"]
    assert xai_conn.images_billed == 0


def test_an_edit_is_estimated_with_its_source_images(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    """Edits bill their source images too: the estimate counts each at the image price (never low)."""
    source = f"file://{jpeg_file(tmp_path / 'source.jpg')}"
    op = make_operator(f"file://{tmp_path}/", prompt="Add a hat", source_images=[source, source], max_cost_usd=0.10)

    with pytest.raises(AirflowFailException) as raised:
        op.execute(make_context())

    assert "Estimated cost $0.1500" in str(permanent_cause(raised, XaiBudgetExceededError))
    assert image_requests(xai_conn) == []


@pytest.mark.parametrize(
    ("max_cost_usd", "stored", "message"),
    [
        # After 10 edits $0.52 is spent; the 11th, estimated $0.04, fits $0.56 but costs $0.052.
        pytest.param(0.56, 11, r"Stopping: \$0\.5720 spent, over max_cost_usd=\$0\.5600\.", id="actual-cost-passes"),
        # After 9 edits $0.468 is spent; the 10th, estimated $0.04, could pass $0.50: it is not sent.
        pytest.param(
            0.50,
            9,
            r"Stopping: \$0\.4680 spent, and the next request could pass max_cost_usd=\$0\.5000\.",
            id="next-could-pass",
        ),
    ],
)
def test_budget_stops_on_the_cost_xai_reports_and_a_rerun_pays_only_the_rest(
    xai_conn: XaiEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    max_cost_usd: float,
    stored: int,
    message: str,
) -> None:
    """xAI bills more than its price list says ($0.02 listed, $0.05 + $0.002 per source billed): the
    estimate ($0.04 per edit, $0.48 for 12) fits the limit, the actual spend reaches it. The task stops
    with what it stored; a re-run (no limit) reuses them and pays only for the rest."""
    monkeypatch.setattr(XaiHook, "price_per_image_usd_ticks", lambda self, request: LISTED_PRICE_TICKS)
    source = f"file://{jpeg_file(tmp_path / 'source.jpg')}"
    prompts = [f"Edit number {index}" for index in range(12)]
    kwargs = {"prompt": prompts, "source_images": source, "max_concurrency": 1}
    output_uri = f"file://{tmp_path}/out/"

    with pytest.raises(AirflowFailException) as raised:
        make_operator(output_uri, max_cost_usd=max_cost_usd, **kwargs).execute(make_context())

    assert permanent_cause(raised, XaiBudgetExceededError)
    assert raised.match(message)
    folder = task_folder(tmp_path / "out")
    assert xai_conn.images_billed == stored
    assert len(image_requests(xai_conn)) == stored
    assert [name[:10] for name in stored_files(folder)] == [f"p{index:05d}-i00" for index in range(stored)]
    saved = [json.loads((folder / "_records" / name).read_text()) for name in stored_files(folder / "_records")]
    assert sorted(record["prompt_index"] for records in saved for record in records) == list(range(stored))

    context = make_context()
    op = make_operator(output_uri, **kwargs)
    uris = op.execute(context)

    assert xai_conn.images_billed == 12  # the stored images were not paid again
    assert [r.json["prompt"] for r in image_requests(xai_conn)] == prompts
    fingerprint = fingerprints(op)
    assert uris == [f"file://{folder}/p{index:05d}-i00-{fingerprint[index]}.jpg" for index in range(12)]
    manifest = json.loads(read_uri(context["ti"].xcoms["manifest"]))
    check_manifest(manifest, read_uri, api_key=xai_conn.api_key, fingerprints=fingerprint)
    assert [image["prompt"] for image in manifest["images"]] == prompts
    assert manifest["totals"]["cost_usd_ticks"] == 12 * (PRICE_TICKS + INPUT_IMAGE_TICKS) == xai_conn.cost_usd_ticks


# --------------------------------------------------------------------------- moderation


def test_moderation_fail_names_the_prompt_index(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    prompts = ["A calm lake", f"Something {MODERATION_MARKER}", "A quiet forest"]

    with pytest.raises(AirflowFailException) as raised:
        make_operator(f"file://{tmp_path}/", prompt=prompts, on_moderation="fail").execute(make_context())

    assert "prompt index(es) [1]" in str(permanent_cause(raised, XaiContentFilteredError))
    assert not (task_folder(tmp_path) / "manifest.json").exists()


def test_moderation_skip_records_the_filtered_images(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    prompts = ["A calm lake", f"Something {MODERATION_MARKER}"]
    context = make_context()

    op = make_operator(f"file://{tmp_path}/", prompt=prompts, n=2, on_moderation="skip")

    uris = op.execute(context)

    assert len(uris) == 2
    manifest = json.loads(read_uri(context["ti"].xcoms["manifest"]))
    check_manifest(manifest, read_uri, api_key=xai_conn.api_key)
    filtered = [image for image in manifest["images"] if image["prompt_index"] == 1]
    assert [(image["image_index"], image["uri"], image["moderation"]) for image in filtered] == [
        (0, None, "filtered"),
        (1, None, "filtered"),
    ]
    assert manifest["totals"]["images"] == 2
    assert manifest["totals"]["filtered"] == 2
    [alias] = op.outlets
    [(_, extra)] = context["outlet_events"][alias].added
    assert extra == {"images": 2, "manifest": context["ti"].xcoms["manifest"]}
    assert xai_conn.images_billed == 2


@pytest.mark.parametrize("on_moderation", ["fail", "skip"])
def test_moderation_reported_as_block_reason_counts_as_filtered(
    xai_conn: XaiEmulator, tmp_path: Path, on_moderation: str
) -> None:
    """xAI may report moderation as a top-level ``block_reason`` with no images (emulator
    ``moderation_style="block_reason"``): "fail" must fail naming the prompt, "skip" must record the slots.

    Regression: marking only *items of data* as filtered stores a blocked response (it has none) as a
    success with zero images: no failure, no filtered slot in the manifest.
    """
    xai_conn.configure(moderation_style="block_reason")
    prompts = ["A calm lake", f"Something {MODERATION_MARKER}"]
    op = make_operator(f"file://{tmp_path}/", prompt=prompts, n=2, on_moderation=on_moderation)
    context = make_context()

    if on_moderation == "fail":
        with pytest.raises(AirflowFailException) as raised:
            op.execute(context)
        assert "prompt index(es) [1]" in str(permanent_cause(raised, XaiContentFilteredError))
        return
    uris = op.execute(context)
    assert len(uris) == 2
    manifest = json.loads(read_uri(context["ti"].xcoms["manifest"]))
    filtered = [image for image in manifest["images"] if image["prompt_index"] == 1]
    assert [(image["image_index"], image["uri"], image["moderation"]) for image in filtered] == [
        (0, None, "filtered"),
        (1, None, "filtered"),
    ]
    assert manifest["totals"]["filtered"] == 2


# --------------------------------------------------------------------------- atomicity


def test_truncated_download_leaves_no_file_at_any_final_path(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    """A download cut short (and cut again on its one retry) is recorded as a failed image, never
    published; the task fails so that Airflow retries it, and the retry asks only for that image."""
    xai_conn.configure(truncated_images=2)  # the first try and its one retry (max_retries=1)

    with pytest.raises(XaiError, match=r"1 of 1 prompt\(s\) lack images: prompt 0: 1 image\(s\) not stored") as raised:
        make_operator(f"file://{tmp_path}/", prompt="A cut-short picture").execute(make_context())

    assert not isinstance(raised.value, XaiPermanentError | AirflowFailException)  # Airflow may retry it
    folder = task_folder(tmp_path)
    assert images_under(tmp_path) == []
    assert not list(tmp_path.rglob("*.partial-*"))
    assert not list(tmp_path.rglob("manifest.json"))
    [[record]] = [json.loads((folder / "_records" / name).read_text()) for name in stored_files(folder / "_records")]
    assert [(image["image_index"], image["uri"], bool(image["error"])) for image in record["images"]] == [
        (0, None, True)
    ]
    assert xai_conn.config.truncated_images == 0
    spool = spool_of(folder)
    assert not os.path.isdir(spool) or os.listdir(spool) == []  # the cut download was not kept

    context = make_context()
    [uri] = make_operator(f"file://{tmp_path}/", prompt="A cut-short picture").execute(context)

    assert uri.rsplit("/", 1)[-1].startswith("p00000-i01-")  # slot 0 was used by the cut image
    assert read_uri(uri).endswith(b"\xff\xd9")
    assert xai_conn.images_billed == 2  # xAI billed the cut image too
    assert image_requests(xai_conn)[-1].json["n"] == 1


def test_publish_failing_mid_write_leaves_neither_final_nor_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def put_half_then_fail(self: LocalFileSystem, lpath: str, rpath: str, **kwargs: Any) -> None:
        attempts.append(rpath)
        Path(rpath).write_bytes(Path(lpath).read_bytes()[:100])
        raise OSError("disk full")

    monkeypatch.setattr(LocalFileSystem, "put_file", put_half_then_fail)
    monkeypatch.setattr(publishing, "PUBLISH_RETRY_SECONDS", 0.6)
    source = jpeg_file(tmp_path / "spool.jpg")
    final = ObjectStoragePath(f"file://{tmp_path}/out/p00000-i00-0123456789ab.jpg")

    with pytest.raises(OSError, match="disk full"):
        publish(final.fs, final.path, local_file=str(source))

    assert len(attempts) >= 2  # a storage error is retried (for up to PUBLISH_RETRY_SECONDS)
    assert all("/." in rpath and ".partial-" in rpath for rpath in attempts)  # always to a hidden sibling
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == []


def test_publish_does_not_retry_an_error_a_retry_cannot_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    def refuse(self: LocalFileSystem, lpath: str, rpath: str, **kwargs: Any) -> None:
        attempts.append(rpath)
        raise PermissionError("read-only file system")

    monkeypatch.setattr(LocalFileSystem, "put_file", refuse)
    final = ObjectStoragePath(f"file://{tmp_path}/out/p00000-i00-0123456789ab.jpg")

    with pytest.raises(PermissionError):
        publish(final.fs, final.path, local_file=str(jpeg_file(tmp_path / "spool.jpg")))

    assert len(attempts) == 1


def test_an_upload_failing_once_mid_write_is_retried_whole(
    xai_conn: XaiEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put_file = LocalFileSystem.put_file
    calls: list[str] = []

    def fail_the_second_upload_once(self: LocalFileSystem, lpath: str, rpath: str, **kwargs: Any) -> None:
        calls.append(rpath)
        if len(calls) == 2:
            Path(rpath).write_bytes(Path(lpath).read_bytes()[:100])
            raise OSError("connection to the disk lost")
        real_put_file(self, lpath, rpath, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "put_file", fail_the_second_upload_once)
    context = make_context()
    op = make_operator(f"file://{tmp_path}/", n=2, max_concurrency=1)

    uris = op.execute(context)

    folder = task_folder(tmp_path)
    assert [uri.rsplit("/", 1)[-1] for uri in uris] == [name for name in stored_files(folder) if IMAGE_NAME.match(name)]
    assert "/." in calls[1]
    assert ".partial-" in calls[1]  # it was written to a hidden sibling, removed on failure
    assert calls[2].rsplit(".partial-", 1)[0] == calls[1].rsplit(".partial-", 1)[0]  # the same image, again
    assert not list(tmp_path.rglob("*.partial-*"))
    check_manifest(
        json.loads(read_uri(context["ti"].xcoms["manifest"])),
        read_uri,
        api_key=xai_conn.api_key,
        fingerprints=fingerprints(op),
    )
    assert xai_conn.images_billed == 2


def test_an_upload_that_keeps_failing_fails_the_task_and_keeps_the_image_in_the_spool(
    xai_conn: XaiEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_put_file = LocalFileSystem.put_file

    def fail_the_second_image(self: LocalFileSystem, lpath: str, rpath: str, **kwargs: Any) -> None:
        if "-i01-" in rpath:
            Path(rpath).write_bytes(Path(lpath).read_bytes()[:100])
            raise OSError("connection to the disk lost")
        real_put_file(self, lpath, rpath, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "put_file", fail_the_second_image)
    monkeypatch.setattr(publishing, "PUBLISH_RETRY_SECONDS", 0.6)

    with pytest.raises(XaiStorageError, match=r"Upload of file://\S+/p00000-i01-[0-9a-f]{12}\.jpg failed") as raised:
        make_operator(f"file://{tmp_path}/", n=2, max_concurrency=1).execute(make_context())

    assert not isinstance(raised.value, XaiPermanentError)  # Airflow may retry it
    folder = task_folder(tmp_path)
    [first] = [name for name in stored_files(folder) if IMAGE_NAME.match(name)]
    assert first.startswith("p00000-i00-")  # the whole first image, nothing of the second
    assert not list(tmp_path.rglob("*.partial-*"))
    assert stored_files(folder / "_records") == []  # the request's record comes after all its images
    assert [name[:11] for name in os.listdir(spool_of(folder))] == ["p00000-i01-"]  # billed, kept for the next try

    monkeypatch.setattr(LocalFileSystem, "put_file", real_put_file)
    uris = make_operator(f"file://{tmp_path}/", n=2, max_concurrency=1).execute(make_context())

    assert [uri.rsplit("/", 1)[-1][:11] for uri in uris] == ["p00000-i00-", "p00000-i01-"]
    assert xai_conn.images_billed == 2  # the spooled image was published, not paid again
    assert len(image_requests(xai_conn)) == 1


# --------------------------------------------------------------------------- the trigger


def deferred_trigger(op: XaiGenerateImagesOperator, context: dict[str, Any]) -> XaiGenerateImagesTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.method_name == "execute_complete"
    trigger = deferred.value.trigger
    assert isinstance(trigger, XaiGenerateImagesTrigger)
    return trigger


def test_trigger_serializes_without_key_or_image_bytes(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    source_path = jpeg_file(tmp_path / "sources" / "photo.jpg")
    source = f"file://{source_path}"
    prompts = ["Add a hat", "Add a scarf"]
    op = make_operator(
        f"file://{tmp_path}/out/",
        prompt=prompts,
        n=2,
        source_images=[source],
        max_cost_usd=1.0,
        on_moderation="skip",
        deferrable=True,
    )

    trigger = deferred_trigger(op, make_context())
    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_xai_image.triggers.generate.XaiGenerateImagesTrigger"
    module_name, _, class_name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module_name), class_name)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)

    text = json.dumps(kwargs)
    assert xai_conn.api_key not in text
    assert "data:" not in text
    assert base64.b64encode(source_path.read_bytes()[:48]).decode() not in text
    assert all(prompt not in text for prompt in prompts)
    folder = task_folder(tmp_path / "out")
    assert kwargs == {
        "plan_uri": f"file://{folder}/plan.json",
        "plan_digest": hashlib.sha256((folder / "plan.json").read_bytes()).hexdigest(),
        "xai_conn_id": "xai_default",
    }
    # the plan, written once on the worker, holds what the trigger runs: the sources as read, not their URIs
    assert xai_conn.api_key not in (folder / "plan.json").read_text()
    plan = GenerationPlan.load(kwargs["plan_uri"], kwargs["plan_digest"])
    encoded = base64.b64encode(source_path.read_bytes()).decode()
    assert plan.requests.template.source_images == (f"data:image/jpeg;base64,{encoded}",)
    assert plan.requests.prompts == prompts
    assert plan.on_moderation == "skip"
    assert plan.max_cost_usd == 1.0
    assert plan.max_concurrency is None  # the default: the pace decides, bounded by the safety cap
    assert plan.price_usd_ticks == PRICE_TICKS
    assert plan.requests.fingerprints == list(fingerprints(op).values())
    assert {index: request.prompt for index, request in plan.requests.by_index.items()} == {
        0: "Add a hat",
        1: "Add a scarf",
    }
    assert all(request.n == 2 for request in plan.requests.by_index.values())
    assert len(text) < 512
    # nothing was generated before deferring (only the free key check and the price list were read)
    assert image_requests(xai_conn) == []
    assert [r.path for r in xai_conn.requests_log] == ["/v1/api-key", "/v1/image-generation-models"]


async def test_trigger_run_yields_one_small_success_event(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    prompts = [f"Thumbnail number {index}" for index in range(30)]
    op = make_operator(f"file://{tmp_path}/", prompt=prompts, n=2, max_concurrency=8, deferrable=True)
    context = make_context()
    trigger = deferred_trigger(op, context)

    events = [event async for event in trigger.run()]

    [event] = events
    assert event.payload["status"] == "success", event.payload
    assert event.payload["requests"] == 30
    assert len(json.dumps(event.payload)) < 64 * 1024
    assert xai_conn.api_key not in json.dumps(event.payload)
    folder = task_folder(tmp_path)
    images = [name for name in stored_files(folder) if IMAGE_NAME.match(name)]
    assert len(images) == 60
    assert not (folder / "manifest.json").exists()  # written on the worker, by execute_complete
    assert (folder / "plan.json").exists()
    assert xai_conn.images_billed == 60

    uris = op.execute_complete(context, event.payload)

    assert len(uris) == 60
    assert not (folder / "plan.json").exists()  # the plan (prompts, sources) goes once the manifest is written
    manifest = json.loads(read_uri(context["ti"].xcoms["manifest"]))
    check_manifest(manifest, read_uri, api_key=xai_conn.api_key, fingerprints=fingerprints(op))
    assert [image["prompt"] for image in manifest["images"]] == [prompt for prompt in prompts for _ in range(2)]
    assert xai_conn.images_billed == 60


async def test_trigger_reports_moderation_failure_as_error_event(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    op = make_operator(
        f"file://{tmp_path}/", prompt=["fine", f"bad {MODERATION_MARKER}"], on_moderation="fail", deferrable=True
    )
    context = make_context()
    trigger = deferred_trigger(op, context)

    [event] = [event async for event in trigger.run()]

    assert event.payload["status"] == "error"
    assert event.payload["error_type"] == "XaiContentFilteredError"
    assert "prompt index(es) [1]" in event.payload["error"]["message"]
    with pytest.raises(AirflowFailException) as raised:
        op.execute_complete(context, event.payload)
    assert "prompt index(es) [1]" in str(permanent_cause(raised, XaiContentFilteredError))


def test_rerun_after_a_complete_try_sends_no_request(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    op = make_operator(f"file://{tmp_path}/", prompt=["a", "b"])
    first = op.execute(make_context())
    requests_before = len(xai_conn.requests_log)

    again = make_operator(f"file://{tmp_path}/", prompt=["a", "b"], deferrable=True).execute(make_context())

    assert again == first  # not deferred: nothing left to generate
    assert len(xai_conn.requests_log) == requests_before
    assert xai_conn.images_billed == 2
    store = ImageStore(ObjectStoragePath(f"file://{task_folder(tmp_path)}"), None)  # type: ignore[arg-type]
    progress = store.load_records(fingerprints(op).get)
    assert [progress.recorded(index) for index in range(3)] == [True, True, False]
    assert [progress.done_images(index) for index in range(3)] == [1, 1, 0]
    assert all(store.ledger.is_current(record) for record in store.ledger.groups())  # nothing superseded
    store.close()


# --------------------------------------------------------------------------- records and recovery


def saved_records(folder: Path) -> list[list[dict[str, Any]]]:
    """The record objects under ``_records``, each a list of request records."""
    return [json.loads((folder / "_records" / name).read_text()) for name in stored_files(folder / "_records")]


def test_records_are_saved_a_few_requests_per_object(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    prompts = [f"Icon {index}" for index in range(40)]

    make_operator(f"file://{tmp_path}/", prompt=prompts, max_concurrency=8).execute(make_context())

    saved = saved_records(task_folder(tmp_path))
    assert 3 <= len(saved) < 40  # 16 requests per object at most, fewer when 2 s pass
    assert sorted(record["prompt_index"] for records in saved for record in records) == list(range(40))


def test_images_a_crash_left_without_records_are_recovered_not_paid_again(
    xai_conn: XaiEmulator, tmp_path: Path
) -> None:
    prompts = ["A kite", "A boat", "A bell"]
    first = make_operator(f"file://{tmp_path}/", prompt=prompts, n=2).execute(make_context())
    folder = task_folder(tmp_path)
    for name in [*stored_files(folder / "_records"), "../manifest.json"]:
        (folder / "_records" / name).unlink()  # as if the worker died before saving them

    context = make_context()
    again = make_operator(f"file://{tmp_path}/", prompt=prompts, n=2).execute(context)

    assert again == first
    assert xai_conn.images_billed == 6
    assert len(image_requests(xai_conn)) == 3
    manifest = json.loads(read_uri(context["ti"].xcoms["manifest"]))
    assert [image["uri"] for image in manifest["images"]] == first
    for image in manifest["images"]:
        stored = read_uri(image["uri"])
        assert image["sha256"] == hashlib.sha256(stored).hexdigest()
        assert image["bytes"] == len(stored)
        assert image["prompt"] == prompts[image["prompt_index"]]
        assert (image["mime_type"], image["revised_prompt"], image["model"]) == ("image/jpeg", None, "unknown")


def test_a_partly_stored_request_pays_only_for_its_missing_images(xai_conn: XaiEmulator, tmp_path: Path) -> None:
    op = make_operator(f"file://{tmp_path}/", prompt="A tall lighthouse", n=3)
    op.execute(make_context())
    folder = task_folder(tmp_path)
    for name in stored_files(folder / "_records"):
        (folder / "_records" / name).unlink()
    [third] = folder.glob("p00000-i02-*.jpg")
    third.unlink()  # the worker died between the 2nd and 3rd image
    (folder / "manifest.json").unlink()

    uris = make_operator(f"file://{tmp_path}/", prompt="A tall lighthouse", n=3).execute(make_context())

    assert xai_conn.images_billed == 4  # 3, then only the missing one
    assert image_requests(xai_conn)[-1].json["n"] == 1
    fingerprint = fingerprints(op)[0]
    assert [uri.rsplit("/", 1)[-1] for uri in uris] == [f"p00000-i0{index}-{fingerprint}.jpg" for index in range(3)]


def test_images_in_s3_carry_their_content_type(xai_conn: XaiEmulator, moto_s3: Any, s3_bucket: str) -> None:
    xai_conn.configure(image_format="png")

    [uri] = make_operator(f"s3://aws_moto@{s3_bucket}/typed/", prompt="A typed picture").execute(make_context())

    key = uri.split(f"{s3_bucket}/", 1)[1]
    assert IMAGE_NAME.match(key.rsplit("/", 1)[-1])
    assert key.endswith(".png")
    assert moto_s3.head(s3_bucket, key)["ContentType"] == "image/png"
    # the probe written before any request was removed again
    assert [k.rsplit("/", 1)[-1] for k in moto_s3.keys(s3_bucket, "typed/") if "/_records/" in k and "probe" in k] == []
