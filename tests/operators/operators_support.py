"""Helpers shared by the XaiGenerateImagesOperator tests (imported as ``operators_support``; no fixtures here)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any, TypeVar

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from support.images import sha256
from support.task_context import make_task_context

from airflow_provider_xai_image.testing import XaiEmulator

E = TypeVar("E", bound=BaseException)

#: What every stored image is called: prompt index, image index and the request's fingerprint (a
#: digest of what was asked), never prompt text.
IMAGE_NAME = re.compile(r"^p(?P<prompt>\d{5})-i(?P<image>\d{2})-(?P<fingerprint>[0-9a-f]{12})\.(?P<ext>jpg|png)$")
#: What a records object under ``_records/`` is called (the storage probe leaves nothing there).
RECORDS_NAME = re.compile(r"^p\d{5}-[0-9a-f]{12}\.json$")
JPEG_MAGIC = b"\xff\xd8\xff"
#: The emulator's price of one grok-imagine-image-quality image ($0.05), the default model.
PRICE_TICKS = 500_000_000
#: The emulator's price of each source image of an edit ($0.002).
INPUT_IMAGE_TICKS = 20_000_000
#: Pixel size of the emulator's 1k images for each aspect ratio (long side 1024).
SIZES_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1024, 576),
    "4:3": (1024, 768),
    "3:2": (1024, 683),
    "2:1": (1024, 512),
    "1:2": (512, 1024),
}
IMAGE_FIELDS = {
    "uri",
    "prompt",
    "prompt_index",
    "image_index",
    "revised_prompt",
    "model",
    "mime_type",
    "bytes",
    "sha256",
    "cost_usd_ticks",
    "moderation",
    "error",
}
TOTALS_FIELDS = {
    "images",
    "filtered",
    "failed_requests",
    "cost_usd",
    "cost_usd_ticks",
    "possibly_billed_usd",
    "possibly_billed_usd_ticks",
    "elapsed_seconds",
    "requests",
}


def conn_json(emulator: XaiEmulator, **extra: Any) -> str:
    """An ``xai`` connection to ``emulator`` as JSON (``max_retries`` 1 unless given)."""
    return emulator.connection_uri(**{"max_retries": 1, "timeout": 20, **extra})


def conn_env(conn_id: str, emulator: XaiEmulator, **extra: Any) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{conn_id.upper()}": conn_json(emulator, **extra)}


def make_context(task_id: str = "generate", run_id: str = "manual__unit", map_index: int = -1) -> dict[str, Any]:
    return make_task_context(task_id, dag_id="unit_dag", run_id=run_id, map_index=map_index)


def image_requests(emulator: XaiEmulator) -> list[Any]:
    """The emulator's log entries for generate/edit calls."""
    return [record for record in emulator.requests_log if "/images/" in record.path]


def fingerprint_of(uri: str) -> str:
    """The request fingerprint in an image's name."""
    match = IMAGE_NAME.match(uri.rsplit("/", 1)[-1])
    assert match, uri
    return match["fingerprint"]


def permanent_cause(raised: pytest.ExceptionInfo[BaseException], error_type: type[E]) -> E:
    """The typed error a task failed with, without retries: ``AirflowFailException`` from ``error_type``."""
    assert isinstance(raised.value, AirflowFailException), repr(raised.value)
    cause = raised.value.__cause__
    assert isinstance(cause, error_type), repr(cause)
    assert str(cause) in str(raised.value)  # the task log shows the typed error's message
    return cause


def check_manifest(
    manifest: dict[str, Any], read: Any, *, api_key: str, fingerprints: dict[int, str] | None = None
) -> None:
    """Every field of every image slot, the totals and the parameters; ``read(uri) -> bytes``.

    Each stored image: a JPEG whose sha256 and size are those recorded, named after its prompt index,
    image index and request fingerprint (``fingerprints[prompt_index]`` when given; else one per prompt,
    different for different prompts); no revised prompt (the emulator sends none by default); the key
    appears nowhere.
    """
    assert set(manifest) >= {"task_instance", "images", "errors", "superseded", "totals", "parameters"}
    assert set(manifest["task_instance"]) == {"dag_id", "run_id", "task_id", "map_index"}
    assert api_key not in json.dumps(manifest)
    totals = manifest["totals"]
    assert set(totals) >= TOTALS_FIELDS
    stored = [image for image in manifest["images"] if image["uri"]]
    assert totals["images"] == len(stored)
    assert totals["filtered"] == sum(image["moderation"] == "filtered" for image in manifest["images"])
    assert totals["failed_requests"] == len(manifest["errors"])
    assert totals["cost_usd"] == totals["cost_usd_ticks"] / 10_000_000_000
    assert totals["possibly_billed_usd"] == totals["possibly_billed_usd_ticks"] / 10_000_000_000
    assert totals["elapsed_seconds"] >= 0
    slots = [(image["prompt_index"], image["image_index"]) for image in manifest["images"]]
    assert len(slots) == len(set(slots)), f"an image slot is listed twice: {slots}"
    uris = [image["uri"] for image in stored]
    assert len(uris) == len(set(uris)), f"an image URI is listed twice: {uris}"
    seen: dict[int, tuple[str, str]] = {}
    for image in manifest["images"]:
        assert set(image) >= IMAGE_FIELDS, sorted(IMAGE_FIELDS - set(image))
        assert isinstance(image["prompt"], str)
        assert image["prompt"]
        assert image["model"] == "grok-imagine-image-quality"
        assert image["revised_prompt"] is None
        assert image["error"] is None  # the manifest lists images stored or filtered, not failed slots
        if image["uri"] is None:
            assert image["moderation"] == "filtered"
            continue
        assert image["moderation"] == "passed"
        name = image["uri"].rsplit("/", 1)[-1]
        match = IMAGE_NAME.match(name)
        assert match, name
        assert (int(match["prompt"]), int(match["image"]), match["ext"]) == (
            image["prompt_index"],
            image["image_index"],
            "jpg",
        )
        if fingerprints is not None:
            assert match["fingerprint"] == fingerprints[image["prompt_index"]], name
        seen.setdefault(image["prompt_index"], (image["prompt"], match["fingerprint"]))
        assert seen[image["prompt_index"]] == (image["prompt"], match["fingerprint"]), "one request, one fingerprint"
        data = read(image["uri"])
        assert data[:3] == JPEG_MAGIC
        assert image["mime_type"] == "image/jpeg"
        assert image["bytes"] == len(data)
        assert image["sha256"] == sha256(data)
        assert image["cost_usd_ticks"] > 0
    by_prompt = {prompt: fingerprint for prompt, fingerprint in seen.values()}
    assert len(set(by_prompt.values())) == len(by_prompt), "different prompts share a fingerprint"


def write_dag(directory: Path, dag_id: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dag_id}.py"
    path.write_text(textwrap.dedent(source).lstrip())
    return path
