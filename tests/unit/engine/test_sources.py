"""``engine.sources.read_source_images``: edit sources read from real files and data URIs, checked first."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from support.images import GIF, JPEG, PNG, WEBP

from airflow_provider_xai_image.api.images import MAX_SOURCE_IMAGE_BYTES
from airflow_provider_xai_image.engine.sources import read_source_images
from airflow_provider_xai_image.exceptions import XaiSourceImageError

ROOTS_VARIABLE = "AIRFLOW__XAI_IMAGE__ALLOWED_LOCAL_SOURCE_ROOTS"


def data_uri(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


def written(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_each_kind_of_source_becomes_what_xai_takes(tmp_path: Path) -> None:
    url = "https://example.com/cat.png"
    jpeg = written(tmp_path / "a.jpg", JPEG)
    webp = written(tmp_path / "b.webp", WEBP)

    read = read_source_images([url, str(jpeg), f"file://{webp}", data_uri("image/png", PNG)])

    assert read == (url, data_uri("image/jpeg", JPEG), data_uri("image/webp", WEBP), data_uri("image/png", PNG))


def test_the_type_comes_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    png_named_jpg = written(tmp_path / "really-a-png.jpg", PNG)

    assert read_source_images([str(png_named_jpg)]) == (data_uri("image/png", PNG),)


def test_a_type_xai_does_not_take_is_refused_naming_the_source(tmp_path: Path) -> None:
    gif = written(tmp_path / "anim.gif", GIF)

    with pytest.raises(XaiSourceImageError) as raised:
        read_source_images([data_uri("image/png", PNG), str(gif)])

    assert str(raised.value) == (
        f"source_images[1] ({gif}) is image/gif; xAI takes only image/png, image/jpeg, image/webp"
    )


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.png"

    with pytest.raises(XaiSourceImageError, match=r"^source_images\[0\] \(.*nowhere\.png\) does not exist$"):
        read_source_images([str(missing)])


def test_a_data_uri_that_is_not_base64_is_named() -> None:
    with pytest.raises(XaiSourceImageError, match=r"^source_images\[0\] \(data:image/png;base64,\*\*\*\) is not valid"):
        read_source_images(["data:image/png;base64,***"])


def test_bytes_that_are_no_image_are_refused(tmp_path: Path) -> None:
    text = written(tmp_path / "notes.png", b"just some text, not a picture at all")

    with pytest.raises(XaiSourceImageError, match=r"source_images\[0\].*xAI takes PNG, JPEG or WebP of at most 10 MiB"):
        read_source_images([str(text)])


def test_a_source_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    big = written(tmp_path / "big.png", PNG + b"\0" * MAX_SOURCE_IMAGE_BYTES)

    with pytest.raises(XaiSourceImageError, match=r"source_images\[0\]"):
        read_source_images([str(big)])


def test_local_sources_are_read_only_inside_the_allowed_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed = tmp_path / "allowed"
    inside = written(allowed / "ok.jpg", JPEG)
    outside = written(tmp_path / "private" / "secret.jpg", JPEG)
    link = allowed / "link.jpg"
    os.symlink(outside, link)
    monkeypatch.setenv(ROOTS_VARIABLE, str(allowed))

    assert read_source_images([str(inside)]) == (data_uri("image/jpeg", JPEG),)
    for escaping in (outside, allowed / ".." / "private" / "secret.jpg", link):
        with pytest.raises(XaiSourceImageError, match=r"outside the folders local sources may be read from"):
            read_source_images([str(escaping)])


def test_data_uris_and_urls_are_not_local_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ROOTS_VARIABLE, str(tmp_path / "only-here"))

    sources = ["https://example.com/a.png", data_uri("image/png", PNG)]
    assert read_source_images(sources) == tuple(sources)
