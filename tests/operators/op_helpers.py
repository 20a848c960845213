"""Helpers shared by the XaiGenerateImagesOperator tests (imported as ``op_helpers``; no fixtures here)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import textwrap
from pathlib import Path
from typing import Any

from PIL import Image
from task_context import make_task_context

from airflow_provider_xai_image.testing import XaiEmulator

#: What every stored image is called: prompt and image index only, never prompt text.
IMAGE_NAME = re.compile(r"^p\d{5}-i\d{2}\.(jpg|png)$")
JPEG_MAGIC = b"\xff\xd8\xff"
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
}
TOTALS_FIELDS = {"images", "filtered", "cost_usd", "cost_usd_ticks", "elapsed_seconds", "requests"}


def conn_json(emulator: XaiEmulator, **extra: Any) -> str:
    """An ``xai`` connection to ``emulator`` as JSON (``max_retries`` 1 unless given)."""
    extra.setdefault("max_retries", 1)
    extra.setdefault("timeout", 20)
    return json.dumps({"conn_type": "xai", "password": emulator.api_key, "host": emulator.base_url, "extra": extra})


def conn_env(conn_id: str, emulator: XaiEmulator, **extra: Any) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{conn_id.upper()}": conn_json(emulator, **extra)}


def make_context(task_id: str = "generate", run_id: str = "manual__unit", map_index: int = -1) -> dict[str, Any]:
    return make_task_context(task_id, dag_id="unit_dag", run_id=run_id, map_index=map_index)


def image_requests(emulator: XaiEmulator) -> list[Any]:
    """The emulator's log entries for generate/edit calls."""
    return [record for record in emulator.requests_log if "/images/" in record.path]


def jpeg_file(path: Path, size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = (10, 120, 200)) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def pixel_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_manifest(manifest: dict[str, Any], read: Any, *, api_key: str) -> None:
    """Every field of every image slot, the totals and the parameters; ``read(uri) -> bytes``.

    Each stored image: a JPEG whose sha256 and size are those recorded; the key appears nowhere.
    """
    assert set(manifest) >= {"images", "totals", "parameters"}
    assert api_key not in json.dumps(manifest)
    assert set(manifest["totals"]) >= TOTALS_FIELDS
    stored = [image for image in manifest["images"] if image["uri"]]
    assert manifest["totals"]["images"] == len(stored)
    assert manifest["totals"]["filtered"] == sum(image["moderation"] == "filtered" for image in manifest["images"])
    assert manifest["totals"]["cost_usd"] == manifest["totals"]["cost_usd_ticks"] / 10_000_000_000
    assert manifest["totals"]["elapsed_seconds"] >= 0
    slots = [(image["prompt_index"], image["image_index"]) for image in manifest["images"]]
    assert len(slots) == len(set(slots)), f"an image slot is listed twice: {slots}"
    uris = [image["uri"] for image in stored]
    assert len(uris) == len(set(uris)), f"an image URI is listed twice: {uris}"
    for image in manifest["images"]:
        assert set(image) >= IMAGE_FIELDS, sorted(IMAGE_FIELDS - set(image))
        assert isinstance(image["prompt"], str)
        assert image["prompt"]
        assert image["model"] == "grok-imagine-image-quality"
        if image["uri"] is None:
            assert image["moderation"] == "filtered"
            continue
        assert image["moderation"] == "passed"
        name = image["uri"].rsplit("/", 1)[-1]
        assert IMAGE_NAME.match(name), name
        assert name == f"p{image['prompt_index']:05d}-i{image['image_index']:02d}.jpg"
        data = read(image["uri"])
        assert data[:3] == JPEG_MAGIC
        assert image["mime_type"] == "image/jpeg"
        assert image["bytes"] == len(data)
        assert image["sha256"] == sha256(data)
        assert image["revised_prompt"] == f"A detailed rendering of: {image['prompt']}"
        assert image["cost_usd_ticks"] > 0


def write_dag(directory: Path, dag_id: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dag_id}.py"
    path.write_text(textwrap.dedent(source).lstrip())
    return path
