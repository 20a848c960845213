"""Every bad input fails before any request, with an error that names the parameter and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from faults_support import context
from PIL import Image

from airflow_provider_xai_image.exceptions import XaiRequestValidationError, XaiSourceImageError
from airflow_provider_xai_image.operators.batch import XaiBatchGenerateImagesOperator
from airflow_provider_xai_image.operators.generate import XaiGenerateImagesOperator
from airflow_provider_xai_image.testing import XaiEmulator


def gif_file(path: Path) -> str:
    path.write_bytes(
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
        b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )
    return f"file://{path}"


def big_jpeg(path: Path) -> str:
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * (10 * 1024 * 1024) + b"\xff\xd9")
    return f"file://{path}"


EXECUTE_TIME = [
    ({"prompt": None}, "prompt"),
    ({"prompt": {"a": "b"}}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ["fine", 3]}, "prompt.1"),
    ({"prompt": "   "}, "prompt.0"),
    ({"output_uri": ""}, "output_uri"),
    ({"output_uri": "http://example.com/images/"}, "output_uri"),
    ({"output_uri": "gopher://host/images/"}, "output_uri"),
    ({"source_images": "gopher://host/a.jpg"}, "source_images"),
    ({"source_images": ["s3://b/1.jpg", "s3://b/2.jpg", "s3://b/3.jpg", "s3://b/4.jpg"]}, "source_images"),
    ({"n": 0}, "n"),
    ({"n": "three"}, "n"),
    ({"quality": "high"}, "quality"),
    ({"aspect_ratio": "5:4"}, "aspect_ratio"),
    ({"resolution": "4k"}, "resolution"),
    ({"response_format": "png"}, "response_format"),
]


@pytest.mark.parametrize(("bad", "parameter"), EXECUTE_TIME, ids=[name for _, name in EXECUTE_TIME])
def test_a_bad_templated_parameter_is_named_before_any_request(
    emulator: XaiEmulator, output_uri: str, bad: dict[str, Any], parameter: str
) -> None:
    kwargs = {"prompt": "a paper boat", "output_uri": output_uri, **bad}
    with pytest.raises(AirflowFailException) as raised:
        XaiGenerateImagesOperator(task_id="generate", **kwargs).execute(context())
    assert isinstance(raised.value.__cause__, XaiRequestValidationError)
    assert f"{parameter}:" in str(raised.value)
    assert emulator.requests_log == []


CONSTRUCTION_TIME = [
    ({"max_cost_usd": "ten"}, "max_cost_usd"),
    ({"max_cost_usd": float("nan")}, "max_cost_usd"),
    ({"max_cost_usd": -1}, "max_cost_usd"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"on_moderation": "ignore"}, "on_moderation"),
]


@pytest.mark.parametrize(("bad", "parameter"), CONSTRUCTION_TIME, ids=[name for _, name in CONSTRUCTION_TIME])
def test_a_bad_plain_parameter_is_named_when_the_dag_is_parsed(bad: dict[str, Any], parameter: str) -> None:
    with pytest.raises(XaiRequestValidationError, match=f"{parameter}:"):
        XaiGenerateImagesOperator(task_id="generate", prompt="a", output_uri="file:///tmp/x", **bad)


@pytest.mark.parametrize("maker", [gif_file, big_jpeg], ids=["gif", "over-10-MiB"])
def test_a_source_image_xai_does_not_take_is_named_by_position_and_uri(
    emulator: XaiEmulator, output_uri: str, tmp_path: Path, maker: Any
) -> None:
    ok = tmp_path / "ok.jpg"
    ok.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\xff\xd9")
    bad = maker(tmp_path / "source")
    operator = XaiGenerateImagesOperator(
        task_id="generate", prompt="sketch it", output_uri=output_uri, source_images=[f"file://{ok}", bad]
    )
    with pytest.raises(AirflowFailException) as raised:
        operator.execute(context())
    assert isinstance(raised.value.__cause__, XaiSourceImageError)
    assert f"source_images[1] ({bad}" in str(raised.value)
    assert emulator.requests_log == []


@pytest.mark.parametrize("prompts", [[], None], ids=["empty", "None"])
def test_batch_prompts_are_checked_before_any_request(
    emulator: XaiEmulator, output_uri: str, prompts: list[str] | None
) -> None:
    operator = XaiBatchGenerateImagesOperator(task_id="submit", prompts=prompts, output_uri=output_uri)  # type: ignore[arg-type]
    with pytest.raises(AirflowFailException, match="prompts:"):
        operator.execute(context("submit"))
    assert emulator.requests_log == []


def jpeg_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 40, 40)).save(path, format="JPEG")
    return path


def test_local_sources_outside_the_allowed_folders_are_refused_before_any_request(
    emulator: XaiEmulator, output_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = tmp_path / "sources"
    inside = jpeg_file(allowed / "ok.jpg")
    private = jpeg_file(tmp_path / "private" / "secret.jpg")
    jpeg_file(tmp_path / "sources-evil" / "a.jpg")
    (allowed / "link.jpg").symlink_to(private)
    monkeypatch.setenv("AIRFLOW__XAI_IMAGE__ALLOWED_LOCAL_SOURCE_ROOTS", f" {allowed} , /nonexistent")
    outside = [
        f"file://{private}",
        f"file://{allowed}/../private/secret.jpg",
        f"file://{allowed}/link.jpg",
        f"file://{tmp_path}/sources-evil/a.jpg",
    ]
    for source in outside:
        operator = XaiGenerateImagesOperator(
            task_id="generate", prompt="sketch it", output_uri=output_uri, source_images=[f"file://{inside}", source]
        )
        with pytest.raises(AirflowFailException) as raised:
            operator.execute(context())
        assert isinstance(raised.value.__cause__, XaiSourceImageError)
        assert "source_images[1]" in str(raised.value)
        assert f"[xai_image] allowed_local_source_roots: {allowed}, /nonexistent" in str(raised.value)
    assert emulator.requests_log == []

    operator = XaiGenerateImagesOperator(
        task_id="generate", prompt="sketch it", output_uri=output_uri, source_images=f"file://{inside}"
    )
    assert len(operator.execute(context())) == 1  # inside the allowed folder: read and sent
